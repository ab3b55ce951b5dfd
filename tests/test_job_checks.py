"""Checks before anyone waits (``portal_central.jobs.checks``): a job that central's own data
shows cannot run is refused by the wizard with a fix, and central's upload is refused on its
form (the job kept, waiting for a corrected file), through the pages and the JSON API alike."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from algorithms.methods import METHODS, Observed
from federation.demo import COLUMNS
from federation.outputs import dataset_csv
from portal_central.jobs.messages import CENTRAL_REFUSED, for_viewer
from portal_central.jobs.status import FINAL
from tests.central_fixtures import (
    ADMIN,
    admin_auth,
    approved_site,
    browser_sign_in,
    chained_algorithm,
    edited_csv,
    htmx_headers,
    polling_pauses,
    portal_state,
    wait_for_state,
)

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
BINARY = {"sex", "smoker"}
CHAINED = ["bmi", "smoker"]


# ------------------------------------------------------------------ each method's check


@pytest.mark.parametrize(
    ("cells", "refused"),
    [
        ([0, 1, 1, np.nan], {"categorical", "ordinal", "pmm"}),  # two levels: logistic
        ([0, 1, 2, np.nan], {"logistic", "pmm"}),  # pmm: 3 observed, fewer than 5 donors
        ([1.5, 2, 3, 4, 5, 6], {"logistic", "categorical", "ordinal", "poisson"}),
        ([-1, 2, 3, 4, 5, 6], {"logistic", "poisson"}),
        (list(range(60)), {"logistic", "categorical", "ordinal"}),  # too many levels
        ([3, 3, 3, 3, 3, 3, np.nan], {"logistic", "categorical", "ordinal"}),  # one level
        ([np.nan, np.nan], {"pmm"}),  # the sites may fit it, but pmm's donors are central's
    ],
)
def test_each_method_checks_a_columns_counts(cells: list[float], refused: set[str]) -> None:
    observed = Observed.of(np.array(cells, dtype=np.float64))
    problems = {
        name: method.check(observed, column="c", params={}) for name, method in METHODS.items()
    }
    assert {name for name, problem in problems.items() if problem} == refused
    assert all("'c'" in p for p in problems.values() if p)


def test_a_methods_check_agrees_with_its_cell_by_cell_rule() -> None:
    """``check`` on a column's counts refuses exactly when ``invalid`` finds a cell the method
    cannot take (for the methods without levels, whose cells need no job's list)."""
    rng = np.random.default_rng(3)
    columns = [
        rng.integers(0, 2, 30).astype(float),
        rng.integers(0, 9, 30).astype(float),
        rng.integers(-3, 9, 30).astype(float),
        rng.normal(size=30),
        np.abs(rng.normal(size=30)),
    ]
    for cells in columns:
        observed = Observed.of(cells)
        for method in METHODS.values():
            if method.levels:
                continue
            by_counts = method.check(observed, column="c", params={"donors": 1}) is None
            assert by_counts == (not method.invalid(cells).any()), (method.name, cells[:5])


# ------------------------------------------------------------------ the wizard


def _admin(central: TestClient) -> str:
    return browser_sign_in(central, ADMIN["username"], ADMIN["password"])


def _soup(text: str) -> BeautifulSoup:
    return BeautifulSoup(text, "html.parser")


def _columns_json(central: TestClient, csrf: str, path: Path) -> str:
    """What the wizard's columns step keeps of the file (its own header scan)."""
    response = central.post(
        "/jobs/new/columns",
        files={"header_file": (path.name, path.read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert response.status_code == 200, response.text
    found = _soup(response.text).select_one("input[name=columns_json]")
    assert isinstance(found, Tag)
    return str(found["value"])


def _form(
    central: TestClient, csrf: str, path: Path, algorithm: str, targets: list[str], **more: Any
) -> dict[str, Any]:
    parameters = central.get(
        f"/jobs/new/parameters?algorithm={algorithm}", headers=htmx_headers(csrf)
    ).text
    defaults = {
        str(f["name"]): str(f.get("value", ""))
        for f in _soup(parameters).select("input")
        if str(f.get("name", "")).startswith("param:") and f.get("type") != "checkbox"
    }
    names = json.loads(_columns_json(central, csrf, path))
    return {
        "csrf_token": csrf,
        "algorithm": algorithm,
        "columns_json": json.dumps(names),
        "target": targets,
        **{f"type:{c['name']}": "logistic" if c["name"] in BINARY else "gaussian" for c in names},
        **defaults,
        "param:imputations": "2",
        "name": "checked job",
        "seed": "1",
        **more,
    }


def _jobs(central: TestClient) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = central.get("/api/jobs", headers=admin_auth(central)).json()
    return listed


def _refused(central: TestClient, form: dict[str, Any]) -> BeautifulSoup:
    response = central.post("/jobs", data=form, follow_redirects=False)
    assert response.status_code == 422, response.text[:2000]
    return _soup(response.text)


def _fix_buttons(page: BeautifulSoup) -> list[str]:
    return [str(b["value"]) for b in page.select("button[name=fix]")]


@SQLITE
def test_the_wizard_offers_to_make_an_incomplete_column_a_target(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    """SIMICE on bmi alone: smoker, a non-target column, is incomplete in central's header."""
    _, north = approved_site(central, "north")
    csrf = _admin(central)
    form = _form(central, csrf, demo_files["central"], "SIMICE", ["bmi"], participants=[north])

    page = _refused(central, form)
    error = page.select_one("#e-targets")
    assert error is not None
    text = error.get_text(" ", strip=True)
    assert "'smoker'" in text and "72 row(s)" in text and "make it a target" in text
    assert _fix_buttons(page) == ["target:smoker"]
    assert _jobs(central) == []

    fixed = central.post("/jobs", data={**form, "fix": "target:smoker"}, follow_redirects=False)
    assert fixed.status_code == 200
    ticked = {str(b["value"]) for b in _soup(fixed.text).select("input[name=target][checked]")}
    assert ticked == {"bmi", "smoker"}
    assert _jobs(central) == []  # a fix changes the form; the user then creates the job

    created = central.post("/jobs", data={**form, "target": ["bmi", "smoker"]})
    assert created.status_code == 200 and _jobs(central)[0]["name"] == "checked job"


@SQLITE
def test_the_wizard_refuses_simi_rows_missing_the_target_and_a_predictor(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, north = approved_site(central, "north")
    csrf = _admin(central)
    form = _form(central, csrf, demo_files["central"], "SIMI", ["bmi"], participants=[north])

    page = _refused(central, form)
    text = page.get_text(" ", strip=True)
    assert "'bmi'" in text and "'smoker' in 11 row(s)" in text and "use SIMICE" in text
    assert _fix_buttons(page) == ["algorithm:SIMICE"]
    fixed = central.post("/jobs", data={**form, "fix": "algorithm:SIMICE"})
    chosen = _soup(fixed.text).select("input[name=algorithm][checked]")
    assert [str(r["value"]) for r in chosen] == ["SIMICE"]
    assert _jobs(central) == []


@SQLITE
def test_the_wizard_refuses_a_pooled_job_with_no_site_and_offers_imice(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    csrf = _admin(central)
    form = _form(central, csrf, demo_files["central"], "SIMICE", ["bmi", "smoker"])

    page = _refused(central, form)
    error = page.select_one("#e-participants")
    assert error is not None and "no site takes part" in error.get_text()
    assert "IMICE" in error.get_text()
    assert _fix_buttons(page) == ["algorithm:IMICE"]

    fixed = central.post("/jobs", data={**form, "fix": "algorithm:IMICE"})
    chosen = _soup(fixed.text).select("input[name=algorithm][checked]")
    assert [str(r["value"]) for r in chosen] == ["IMICE"]
    created = central.post("/jobs", data={**form, "algorithm": "IMICE"}, follow_redirects=False)
    assert created.status_code == 303, created.text[:2000]
    assert [j["algorithm"] for j in _jobs(central)] == ["IMICE"]


def test_the_api_refuses_a_pooled_job_with_no_site_as_the_wizard_does(
    central: TestClient,
) -> None:
    """The wizard's rule (``checks.sites_problem``): the field named, the central-only
    algorithm suggested; with a site, or as the central-only algorithm, the job is made."""
    headers = admin_auth(central)

    def create(algorithm: str, targets: list[str], **more: Any) -> Any:
        job = {
            "name": "pooled",
            "algorithm": algorithm,
            "columns": list(COLUMNS),
            "targets": [
                {"column": c, "type": "logistic" if c in BINARY else "gaussian"} for c in targets
            ],
            "seed": 1,
            **more,
        }
        return central.post("/api/jobs", json=job, headers=headers)

    for algorithm, targets, alone in [("SIMI", ["bmi"], "IMI"), ("CSLMICE", CHAINED, "IMICE")]:
        refused = create(algorithm, targets)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["field"] == "participants"
        assert "no site takes part ('participants' is empty)" in body["detail"]
        assert f"use {alone} (central's data alone)" in body["detail"]
        assert create(alone, targets).status_code == 201
    _, north = approved_site(central)
    assert create("SIMI", ["bmi"], participants=[north]).status_code == 201


def _odd_columns(tmp_path: Path) -> Path:
    """Columns that some methods cannot take: a negative measurement, counts, few codes."""
    rng = np.random.default_rng(5)
    rows = 40
    values = np.column_stack(
        [
            rng.normal(size=rows),  # x: negative, not whole
            rng.poisson(3, rows).astype(float),  # k: counts
            np.full(rows, 2.0),  # one: a single level
            rng.integers(1, 3, rows).astype(float),  # two: codes 1, 2
        ]
    )
    values[:3, :] = np.nan
    values[3:37, 1] = np.nan  # k: 3 observed, fewer than pmm's 5 donors
    path = tmp_path / "odd.csv"
    path.write_bytes(dataset_csv(("x", "k", "one", "two"), values))
    return path


@SQLITE
@pytest.mark.parametrize(
    ("column", "method", "words"),
    [
        ("x", "logistic", ["'x'", "not 0 or 1", "logistic"]),
        ("x", "poisson", ["'x'", "whole numbers >= 0"]),
        ("x", "categorical", ["'x'", "non-integer"]),
        ("one", "ordinal", ["'one'", "1 level(s)", "at least 3"]),
        ("two", "categorical", ["'two'", "2 level(s)", "logistic"]),
        ("k", "pmm", ["'k'", "only 3 are observed", "5 donors"]),
    ],
)
def test_the_wizard_refuses_a_method_that_does_not_fit_its_column(
    central: TestClient, tmp_path: Path, column: str, method: str, words: list[str]
) -> None:
    _, north = approved_site(central, "north")
    csrf = _admin(central)
    path = _odd_columns(tmp_path)
    others = [c for c in ("x", "k", "one", "two") if c != column]
    form = _form(
        central,
        csrf,
        path,
        "SIMICE",
        [column, *others],
        participants=[north],
        **{f"type:{column}": method},
    )

    page = _refused(central, form)
    error = page.select_one("#e-targets")
    assert error is not None
    text = error.get_text(" ", strip=True)
    assert all(w in text for w in words), text
    assert _jobs(central) == []


# ------------------------------------------------------------------ central's upload


def _api_job(central: TestClient, **body: Any) -> dict[str, Any]:
    response = central.post(
        "/api/jobs",
        json={
            "name": "api job",
            "algorithm": chained_algorithm(body),
            "columns": list(COLUMNS),
            "imputations": 2,
            "parameters": {"iteration_before_first_imputation": 1},
            "seed": 2,
            **body,
        },
        headers=admin_auth(central),
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


@SQLITE
def test_the_api_refuses_centrals_upload_that_cannot_run_and_keeps_the_job(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    """The API has no header when a job is created: the same checks run on central's upload,
    which is refused naming the column, the job left as it was; a corrected file runs."""
    job = _api_job(central, targets=[{"column": "bmi", "type": "gaussian"}])
    headers = admin_auth(central)

    def upload(path: Path) -> Any:
        return central.post(
            f"/api/jobs/{job['id']}/data",
            files={"file": ("central.csv", path.read_bytes(), "text/csv")},
            headers=headers,
        )

    refused = upload(demo_files["central"])
    assert refused.status_code == 422
    body = refused.json()
    assert body["field"] == "file"
    assert "central.csv" in body["detail"] and "'smoker'" in body["detail"]
    assert "make it a target" in body["detail"]
    assert central.get(f"/api/jobs/{job['id']}", headers=headers).json()["state"] == "created"
    assert portal_state(central).store.view(job["id"]).data is None

    source = demo_files["central"]
    fixed = edited_csv(source, source.with_name("smoker-complete.csv"), complete=["smoker"])
    assert upload(fixed).status_code == 200
    assert wait_for_state(central, job["id"], headers)["state"] == "completed"


@SQLITE
def test_the_api_refuses_a_method_that_does_not_fit_centrals_column_on_upload(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job = _api_job(
        central,
        targets=[{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}],
    )
    job_poisson = _api_job(
        central,
        targets=[{"column": "bmi", "type": "poisson"}, {"column": "smoker", "type": "logistic"}],
    )
    headers = admin_auth(central)
    content = demo_files["central"].read_bytes()

    good = central.post(
        f"/api/jobs/{job['id']}/data",
        files={"file": ("central.csv", content, "text/csv")},
        headers=headers,
    )
    assert good.status_code == 200, good.text
    refused = central.post(
        f"/api/jobs/{job_poisson['id']}/data",
        files={"file": ("central.csv", content, "text/csv")},
        headers=headers,
    )
    assert refused.status_code == 422
    assert "'bmi'" in refused.json()["detail"] and "poisson" in refused.json()["detail"]
    kept = central.get(f"/api/jobs/{job_poisson['id']}", headers=headers).json()
    assert kept["state"] == "created"


@SQLITE
def test_the_job_page_refuses_centrals_file_naming_the_column_and_keeps_the_form(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job = _api_job(central, targets=[{"column": "bmi", "type": "gaussian"}])
    csrf = _admin(central)
    response = central.post(
        f"/jobs/{job['id']}/data",
        files={"file": ("central.csv", demo_files["central"].read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert response.status_code == 422
    block = _soup(response.text)
    alert = block.select_one(".alert-error")
    assert alert is not None and "'smoker'" in alert.get_text()
    assert block.select_one(f"form[action='/jobs/{job['id']}/data'] input[type=file]")
    assert "created" in block.get_text()


@SQLITE
def test_centrals_data_refused_as_the_job_opens_leaves_it_waiting(central: TestClient) -> None:
    """A refusal of central's own half as the job opens (before any site is asked) that the
    upload's checks cannot foresee: IMI's (as SIMI's) pmm donors are central's complete rows,
    which a header's counts do not give. The job goes back to waiting, its file dropped, and a
    corrected file runs."""
    rows = 30
    rng = np.random.default_rng(2)
    values = np.column_stack([rng.normal(size=rows), rng.normal(size=rows)])
    values[:24, 1] = np.nan  # y: 6 observed ...
    values[24:27, 0] = np.nan  # ... only 3 of them with x: fewer than pmm's 5 donors
    columns = ("x", "y")
    response = central.post(
        "/api/jobs",
        json={
            "name": "donors",
            "algorithm": "IMI",
            "columns": list(columns),
            "targets": [{"column": "y", "type": "pmm"}],
            "imputations": 1,
            "seed": 4,
        },
        headers=admin_auth(central),
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    headers = admin_auth(central)

    def upload(content: bytes) -> int:
        status: int = central.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", content, "text/csv")},
            headers=headers,
        ).status_code
        return status

    assert upload(dataset_csv(columns, values)) == 200
    deadline = time.monotonic() + 10
    for pause in polling_pauses():  # running, then back to waiting with the reason
        waiting = central.get(f"/api/jobs/{job_id}", headers=headers).json()
        if "refused" in waiting["message"] or waiting["state"] in FINAL:
            break
        assert time.monotonic() < deadline, waiting
        time.sleep(pause)
    assert waiting["state"] == "waiting", waiting
    assert "'y'" in waiting["message"] and "pmm" in waiting["message"]
    assert "upload a corrected file" in waiting["message"]
    assert portal_state(central).store.view(job_id).data is None

    values[24:27, 0] = 0.5  # x complete: six donors
    assert upload(dataset_csv(columns, values)) == 200
    assert wait_for_state(central, job_id, headers)["state"] == "completed"


def test_a_site_reads_only_that_central_is_correcting_its_file() -> None:
    """Central's refused file is central's business: a site's view of the message says only
    that central is at it; central's admin reads it whole."""
    message = f"{CENTRAL_REFUSED}central.csv: target 'y' ... 3 observed; upload a corrected file"
    assert for_viewer(message, state="waiting", site_id=None) == message
    shown = for_viewer(message, state="waiting", site_id="north")
    assert "central.csv" not in shown and "'y'" not in shown and "central" in shown
