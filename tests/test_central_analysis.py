"""The pooled analysis at central: named when a job is created or after it completed, fitted on
central's M datasets in memory, shown on the job's page and kept with the report; through the
API with real jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from federation.analysis import COLUMNS, analyse
from federation.long_format import read_long
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    token,
    wait_for_state,
)
from tests.test_central_jobs import _create, _job, _upload

LINEAR = {"model": "sbp ~ age + bmi + factor(sex) + smoker", "family": "linear"}
LOGISTIC = {"model": "smoker ~ age + bmi", "family": "logistic"}


def _completed(client: TestClient, path: Path, **overrides: Any) -> int:
    job = _create(client, **overrides)
    status, body = _upload(client, job["id"], path.read_bytes())
    assert status == 200, body
    assert wait_for_state(client, job["id"], admin_auth(client))["state"] == "completed"
    job_id: int = job["id"]
    return job_id


def _pooled_from_download(client: TestClient, job_id: int, model: dict[str, str]) -> list[Any]:
    """What fip pool gives on the job's long CSV, downloaded."""
    long = client.get(f"/api/jobs/{job_id}/result?format=long", headers=admin_auth(client))
    assert long.status_code == 200
    datasets = read_long(long.content)
    return analyse(datasets, model["model"], model["family"]).table


def test_an_analysis_named_at_creation_is_pooled_when_the_job_completes(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job_id = _completed(central, demo_files["central"], analysis=LINEAR)
    headers = admin_auth(central)
    got = central.get(f"/api/jobs/{job_id}/analysis", headers=headers)
    assert got.status_code == 200, got.text
    pooled = got.json()
    assert pooled["model"] == LINEAR["model"] and pooled["m"] == 2
    assert pooled["columns"] == list(COLUMNS)
    assert [row["term"] for row in pooled["pooled"]] == [
        "(Intercept)", "age", "bmi", "factor(sex)1", "smoker",
    ]  # fmt: skip
    assert pooled["pooled"] == _pooled_from_download(central, job_id, LINEAR)
    report = central.get(f"/api/jobs/{job_id}/report", headers=headers).json()
    assert report["analysis"] == pooled


def test_an_analysis_after_completion_through_the_api_and_the_page(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job_id = _completed(central, demo_files["central"])
    headers = admin_auth(central)
    assert central.get(f"/api/jobs/{job_id}/analysis", headers=headers).status_code == 404
    response = central.post(f"/api/jobs/{job_id}/analysis", json=LOGISTIC, headers=headers)
    assert response.status_code == 200, response.text
    pooled = response.json()
    assert pooled["family"] == "logistic"
    assert pooled["pooled"] == _pooled_from_download(central, job_id, LOGISTIC)
    assert central.get(f"/api/jobs/{job_id}/analysis", headers=headers).json() == pooled

    # The page shows the table and a form; the form fits another model.
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job_id}").text, "html.parser")
    section = page.find(id=f"job-{job_id}-analysis")
    assert section is not None
    text = section.get_text(" ", strip=True)
    assert "smoker ~ age + bmi" in text and "Meng 1994" in text and "von Hippel" in text
    assert [th.get_text() for th in section.select("tbody th")] == ["(Intercept)", "age", "bmi"]
    posted = central.post(
        f"/jobs/{job_id}/analysis",
        data={"csrf_token": csrf, "model": LINEAR["model"], "family": "linear"},
        follow_redirects=True,
    )
    assert posted.status_code == 200
    shown = BeautifulSoup(posted.text, "html.parser").find(id=f"job-{job_id}-analysis")
    assert shown is not None and "factor(sex)1" in shown.get_text()
    wrong = central.post(
        f"/jobs/{job_id}/analysis",
        data={"csrf_token": csrf, "model": "sbp ~ weight", "family": "linear"},
    )
    assert wrong.status_code == 422
    alert = BeautifulSoup(wrong.text, "html.parser").get_text(" ", strip=True)
    assert "no column named 'weight'" in alert


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "sbp ~ weight"}, "no column named 'weight'"),
        ({"model": "sbp ~ age:bmi"}, "interactions"),
        ({"model": "sbp ~ age", "family": "logistic"}, "must be 0 or 1"),
        ({"model": "smoker ~ age + sex + sex2", "family": "logistic"}, "no column named 'sex2'"),
    ],
)
def test_analysis_errors_name_the_column(
    central: TestClient, demo_files: dict[str, Path], body: dict[str, str], words: str
) -> None:
    job_id = _completed(central, demo_files["central"])
    response = central.post(f"/api/jobs/{job_id}/analysis", json=body, headers=admin_auth(central))
    assert response.status_code == 422
    assert words in response.text


def test_creation_refuses_a_model_the_columns_cannot_answer(central: TestClient) -> None:
    headers = admin_auth(central)
    before = len(central.get("/api/jobs", headers=headers).json())
    response = central.post(
        "/api/jobs", json=_job(analysis={"model": "sbp ~ weight"}), headers=headers
    )
    assert response.status_code == 422 and "no column named 'weight'" in response.text
    assert len(central.get("/api/jobs", headers=headers).json()) == before


def test_no_analysis_before_completion_nor_by_a_site(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    headers = admin_auth(central)
    job = _create(central)
    early = central.post(f"/api/jobs/{job['id']}/analysis", json=LINEAR, headers=headers)
    assert early.status_code == 409 and "no imputed datasets to analyse yet" in early.text
    approved_site(central, "north")
    site = bearer(token(central, "north", SITE_PASSWORD))
    assert (
        central.post(f"/api/jobs/{job['id']}/analysis", json=LINEAR, headers=site).status_code
        == 403
    )


def test_a_comparison_sends_the_analysis_to_its_methods(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job = _create(central, compare=["IMICE"], analysis=LINEAR)
    status, body = _upload(central, job["id"], demo_files["central"].read_bytes())
    assert status == 200, body
    done = wait_for_state(central, job["id"], admin_auth(central))
    assert done["state"] == "completed", done
    headers = admin_auth(central)
    for method in done["methods"]:
        pooled = central.get(f"/api/jobs/{method['id']}/analysis", headers=headers).json()
        assert pooled["model"] == LINEAR["model"], method
    here = central.post(f"/api/jobs/{job['id']}/analysis", json=LINEAR, headers=headers)
    assert here.status_code == 409 and "is a comparison" in here.text
