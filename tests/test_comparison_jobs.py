"""Comparison jobs: one parent job per comparison, one child job per method, run one after the
other on central's data (and the sites' data given once to the parent); partial and retry.

Central alone through the TestClient (both databases), then a real federation: central and two
site portals as processes over TLS, one of them reaching central through a relay that can refuse
connections as a network outage would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from federation.compare import comparison_report
from federation.data import read_csv
from federation.demo import COLUMNS
from federation.outputs import long_csv, zip_bytes
from federation.registry import Algorithm, Registry, load_algorithm
from federation.runtime import JobResult
from federation.simulation import simulate
from portal_central.app import create_app
from portal_central.jobs.status import FINAL
from portal_central.settings import CentralSettings
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    create_admin,
    edited_csv,
    htmx_headers,
    meandraw_files,
    polling_pauses,
    portal_state,
    token,
    upload_parts,
)
from tests.federation_env import Federation, connect_site
from tests.prepared_central import central_with_meandraw
from tests.processes import TcpProxy, wait_for

CHAINED = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]
QUICK = {"iteration_before_first_imputation": 2, "iteration_between_imputations": 1}
"""Few chained-equation cycles: each method runs central's 800 rows in a fraction of a second."""
SBP = [{"column": "sbp", "type": "gaussian"}]
"""A one-target job every one-target method can run on the demo data (sbp is complete)."""
BMI = [{"column": "bmi", "type": "gaussian"}]
"""A one-target job SIMI refuses on demo central: rows missing bmi often miss smoker too."""
BINARY = {"sex", "smoker"}


def _comparison(**overrides: Any) -> dict[str, Any]:
    """CSLMICE compared with AVGMMICE and IMICE (SIMICE, the reference, is added), central only."""
    return {
        "name": "methods side by side",
        "description": "bmi and smoker four ways",
        "algorithm": "CSLMICE",
        "compare": ["AVGMMICE", "IMICE"],
        "columns": list(COLUMNS),
        "targets": CHAINED,
        "imputations": 2,
        "parameters": dict(QUICK),
        "seed": 11,
        **overrides,
    }


def _create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json=_comparison(**overrides), headers=admin_auth(client))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def _get(client: TestClient, job_id: int) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}", headers=admin_auth(client))
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _upload(client: TestClient, job_id: int, path: Path) -> tuple[int, dict[str, Any]]:
    response = client.post(
        f"/api/jobs/{job_id}/data",
        files={"file": (path.name, path.read_bytes(), "text/csv")},
        headers=admin_auth(client),
    )
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _wait(
    client: TestClient, job_id: int, states: Collection[str], *, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll the job until its state is one of ``states`` (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    for pause in polling_pauses():
        job = _get(client, job_id)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['state']}: {job}"
        time.sleep(pause)
    raise AssertionError("unreachable")


def _simulated(
    algorithm: Algorithm,
    job: dict[str, Any],
    central: Path,
    sites: dict[str, Path] | None = None,
) -> JobResult:
    """The same method run by the engine's simulation, with the job's targets, params, seed."""
    return asyncio.run(
        simulate(
            algorithm=algorithm,
            central=read_csv(central),
            sites={name: read_csv(path) for name, path in (sites or {}).items()},
            targets=[(t["name"], t["type"]) for t in job["targets"]],
            params=job["parameters"],
            seed=job["seed"],
        )
    )


def _meandraw() -> Algorithm:
    return load_algorithm("MEANDRAW", meandraw_files())


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _one(soup: BeautifulSoup | Tag, selector: str) -> Tag:
    found = soup.select_one(selector)
    assert found is not None, f"nothing matches {selector!r}"
    return found


def _rows(table: Tag) -> list[list[str]]:
    """A table's body rows as the text of their cells (header cells included)."""
    return [
        [cell.get_text(" ", strip=True) for cell in row.select("th, td")]
        for row in table.select("tbody tr")
    ]


def _page(client: TestClient, job_id: int) -> BeautifulSoup:
    response = client.get(f"/jobs/{job_id}", headers=admin_auth(client))
    assert response.status_code == 200, response.text[:2000]
    return _soup(response.text)


@pytest.fixture
def central_meandraw(tmp_path: Path) -> Iterator[TestClient]:
    """Central as the ``central`` fixture's (SQLite), with MEANDRAW uploaded already: the
    upload, made once per run, is copied with its database (tests/prepared_central.py)."""
    with central_with_meandraw(tmp_path) as client:
        yield client


# ------------------------------------------------------------------ creation


@EVERY_DATABASE
def test_a_comparison_is_a_parent_with_one_child_per_method(central: TestClient) -> None:
    """The reference first, then the chosen method, then the others in the order given; every
    child carries the parent's columns, targets, parameters, seed and sites, except that the
    central-only method (IMI) lists no site. Sites and the job list see only the parent."""
    _, north = approved_site(central, "north")
    parent = _create(
        central,
        name="one-target comparison",
        algorithm="IMI",
        compare=["CSLMI", "SIMI", "AVGMMI", "CSLMI"],
        targets=SBP,
        parameters={"ridge": 0.01},
        participants=[north],
        seed=2**32 - 1,
    )
    registry = Registry.with_builtins()
    assert parent["algorithm"] == "SIMI" and parent["digest"] == registry.get("SIMI").digest
    assert parent["state"] == "created" and parent["parent"] is None
    assert [p["site_id"] for p in parent["participants"]] == [north]
    methods = parent["methods"]
    assert [m["algorithm"] for m in methods] == ["SIMI", "IMI", "CSLMI", "AVGMMI"]
    assert [m["digest"] for m in methods] == [registry.get(m["algorithm"]).digest for m in methods]
    assert [m["participants"] for m in methods] == [[north], [], [north], [north]]
    assert all(m["state"] == "created" for m in methods)
    assert [m["version"] for m in methods] == [
        registry.get(m["algorithm"]).version for m in methods
    ]

    for method in methods:
        child = _get(central, method["id"])
        assert child["parent"] == parent["id"] and child["methods"] == []
        assert child["name"] == f"one-target comparison · {method['algorithm']}"
        assert child["description"] == parent["description"]
        assert child["algorithm"] == method["algorithm"]
        for key in ("columns", "targets", "seed"):
            assert child[key] == parent[key], (method["algorithm"], key)
        taken = registry.get(method["algorithm"]).schema["properties"]
        assert child["parameters"] == {
            k: v for k, v in parent["parameters"].items() if k in taken
        }  # IMI takes no site_effect
        sites = [p["site_id"] for p in child["participants"]]
        assert sites == method["participants"]
    assert parent["parameters"] == {
        "imputations": 2,
        "ridge": 0.01,
        "max_iter": 100,
        "min_rows": 18,
        "donors": 5,
        "site_effect": "none",
    }

    listed = central.get("/api/jobs", headers=admin_auth(central)).json()
    assert [j["id"] for j in listed] == [parent["id"]]
    assert [m["id"] for m in listed[0]["methods"]] == [m["id"] for m in methods]

    # The site sees the comparison and the children it takes part in, not IMI's.
    site = bearer(token(central, "north", SITE_PASSWORD))
    seen = central.get("/api/jobs", headers=site).json()
    assert [j["id"] for j in seen] == [parent["id"]]
    for method in methods:
        status = central.get(f"/api/jobs/{method['id']}", headers=site).status_code
        assert status == (404 if method["algorithm"] == "IMI" else 200), method
    # Only central's admin retries or reads the comparison.
    assert central.post(f"/api/jobs/{methods[0]['id']}/retry", headers=site).status_code == 403
    assert central.get(f"/api/jobs/{parent['id']}/comparison", headers=site).status_code == 403

    # Naming only the reference, or nothing new, is no comparison.
    again = central.post(
        "/api/jobs",
        json=_comparison(algorithm="SIMI", compare=["SIMI"], targets=SBP, parameters={}),
        headers=admin_auth(central),
    )
    assert again.status_code == 422, again.text
    assert again.json()["field"] == "compare" and "at least one method" in again.json()["detail"]


def test_comparison_creation_errors_name_their_field(central_meandraw: TestClient) -> None:
    central = central_meandraw  # with MEANDRAW: one continuous target; no ridge parameter
    cases: list[tuple[str, dict[str, Any], str, list[str]]] = [
        # (case, overrides, field, words in the message)
        (
            "single and chained methods",
            {"algorithm": "SIMI", "compare": ["SIMICE"], "targets": SBP},
            "compare",
            ["one kind", "SIMI", "SIMICE", "chained"],
        ),
        (
            "chained and single methods",
            {"compare": ["AVGMMICE", "IMI"]},
            "compare",
            ["one kind", "IMI", "CSLMICE", "AVGMMICE"],
        ),
        ("an unknown method", {"compare": ["AVGMMICE", "NOPE"]}, "compare", ["NOPE"]),
        (
            "secure aggregation beside methods that need per-site replies",
            {"parameters": {**QUICK, "secure_aggregation": True}},
            "param_secure_aggregation",
            ["CSLMICE, AVGMMICE", "in the clear"],
        ),
        (
            "a parameter no method takes",
            {
                "algorithm": "SIMI",
                "compare": ["MEANDRAW"],
                "targets": SBP,
                "parameters": {"ridge": 0.5, "nonsense": 1},
            },
            "params",
            ["no method", "'nonsense'"],
        ),
        (
            "a parameter out of one method's range",
            {"parameters": {**QUICK, "ridge": -1}},
            "param_ridge",
            ["SIMICE:", "ridge", "minimum"],
        ),
        (
            "a target type one method does not support",
            {
                "algorithm": "SIMI",
                "compare": ["MEANDRAW"],
                "targets": [{"column": "smoker", "type": "logistic"}],
                "parameters": {},
            },
            "targets",
            ["MEANDRAW", "logistic"],
        ),
        ("no target", {"targets": []}, "targets", ["no target"]),
    ]
    headers = admin_auth(central)
    problems = []
    for case, overrides, field, words in cases:
        response = central.post("/api/jobs", json=_comparison(**overrides), headers=headers)
        body = response.json()
        if (
            response.status_code != 422
            or body.get("field") != field
            or not all(word in body.get("detail", "") for word in words)
        ):
            problems.append(f"{case}: {response.status_code} {body}")
    assert not problems, "\n".join(problems)
    assert central.get("/api/jobs", headers=headers).json() == []  # nothing was created


# ------------------------------------------------------------------ a run at central


def test_a_comparison_runs_every_method_on_centrals_data(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    path = demo_files["central"]
    parent = _create(central)
    parent_id = parent["id"]
    names = ["SIMICE", "CSLMICE", "AVGMMICE", "IMICE"]
    assert [m["algorithm"] for m in parent["methods"]] == names
    child_ids = [m["id"] for m in parent["methods"]]

    # Central's data goes to the comparison, never to one of its methods.
    status, body = _upload(central, child_ids[1], path)
    assert status == 409, body
    assert f"comparison {parent_id}" in body["detail"]
    assert _get(central, child_ids[1])["state"] == "created"

    status, body = _upload(central, parent_id, path)
    assert status == 200, body
    done = _wait(central, parent_id, FINAL)
    assert done["state"] == "completed", done
    assert done["message"] == "4 methods compared"
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert done["results_available"] is False  # the methods hold the results
    assert [m["id"] for m in done["methods"]] == child_ids
    assert portal_state(central).store.view(parent_id).data is None  # central's rows are dropped

    registry = Registry.with_builtins()
    headers = admin_auth(central)
    expected: dict[str, JobResult] = {}
    for child_id, name in zip(child_ids, names, strict=True):
        child = _get(central, child_id)
        assert child["state"] == "completed", child
        assert child["message"].startswith("2 imputed datasets; 0 round trips")
        assert child["results_available"] is True
        expected[name] = _simulated(registry.get(name), child, path)
        long = central.get(f"/api/jobs/{child_id}/result?format=long", headers=headers)
        assert long.status_code == 200
        assert (
            f'filename="job-{child_id}-imputations_long.csv"' in long.headers["content-disposition"]
        )
        assert long.content == long_csv(expected[name]), name
        archive = central.get(f"/api/jobs/{child_id}/result?format=zip", headers=headers)
        assert archive.content == zip_bytes(expected[name]), name
        report = central.get(f"/api/jobs/{child_id}/report", headers=headers).json()
        assert report["algorithm"] == name and report["seed"] == 11
        assert report["digest"] == registry.get(name).digest
    # Central alone, IMICE is SIMICE exactly.
    assert long_csv(expected["IMICE"]) == long_csv(expected["SIMICE"])

    response = central.get(f"/api/jobs/{parent_id}/comparison", headers=headers)
    assert response.status_code == 200, response.text
    comparison = response.json()
    assert comparison["reference"] == "SIMICE"
    costs = comparison["methods"]
    assert [m["algorithm"] for m in costs] == names
    for cost in costs:
        assert cost["status"] == "completed"
        assert cost["version"] == Registry.with_builtins().get(cost["algorithm"]).version
        assert cost["round_trips"] == 0 and cost["sites"] == ["central"]
        assert cost["bytes_sent"] == 0 and cost["bytes_received"] == 0
        assert 0 <= cost["seconds"] < 30
    # Per target, each method's coefficients: those of the simulation, measured from SIMICE's.
    simulated = comparison_report(
        [{"algorithm": n, "status": "completed", "report": expected[n].report} for n in names],
        reference="SIMICE",
    )
    assert comparison["targets"] == simulated["targets"]
    assert [t["name"] for t in comparison["targets"]] == ["bmi", "smoker"]
    for target in comparison["targets"]:
        fits = target["methods"]
        assert list(fits) == names
        predictors = [c for c in COLUMNS if c != target["name"]] + ["(intercept)"]
        for name in names:
            assert list(fits[name]["coefficients"]) == predictors
            assert fits[name]["n"] > 0
        assert fits["SIMICE"]["distance"] == {"relative": 0.0, "max_abs": 0.0}
        assert fits["IMICE"]["distance"] == {"relative": 0.0, "max_abs": 0.0}
        assert all(0 <= fits[n]["distance"]["relative"] < 0.01 for n in names)

    download = central.get(f"/jobs/{parent_id}/comparison", headers=headers)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json"
    disposition = download.headers["content-disposition"]
    assert f'attachment; filename="job-{parent_id}-comparison.json"' == disposition
    assert json.loads(download.content) == comparison
    for path_ in (f"/api/jobs/{child_ids[0]}/comparison", f"/jobs/{child_ids[0]}/comparison"):
        refused = central.get(path_, headers=headers)
        assert refused.status_code == 404 and "not a comparison" in refused.text, path_

    # The comparison's page: its methods (linked to their jobs), then the fits per target.
    page = _page(central, parent_id)
    status_block = _one(page, f"#job-{parent_id}-status")
    tables = status_block.select("table.list")
    methods_table, bmi_table, smoker_table = tables[0], tables[1], tables[2]
    rows = _rows(methods_table)
    assert [r[0] for r in rows] == names
    assert all(r[1] == "completed" and r[2] == "0" for r in rows)
    links = [a["href"] for a in methods_table.select("a")]
    assert links == [f"/jobs/{c}" for c in child_ids]
    assert not status_block.select("form[action$='/retry']")  # nothing to retry
    assert not status_block.select(f"form[action='/jobs/{parent_id}/cancel']")  # it is over
    headings = [h.get_text(" ", strip=True) for h in status_block.select("h3")]
    assert "Fits of 'bmi' (continuous)" in headings and "Fits of 'smoker' (binary)" in headings
    for table, target in ((bmi_table, "bmi"), (smoker_table, "smoker")):
        header = [th.get_text(strip=True) for th in table.select("thead th")]
        assert header == ["Coefficient", *names]
        body_rows = _rows(table)
        assert [r[0] for r in body_rows] == [
            *(c for c in COLUMNS if c != target),
            "(intercept)",
            "rows",
            "distance from SIMICE",
        ]
        assert body_rows[-1][1] == "0" and body_rows[-1][4] == "0"  # SIMICE and IMICE
    assert _one(status_block, f"a[href='/jobs/{parent_id}/comparison']")
    facts = _one(page, "dl.facts").get_text(" ", strip=True)
    version = Registry.with_builtins().get("SIMICE").version
    assert f"SIMICE {version} (reference: pooled, exact)" in facts and facts.count("reference") == 1
    log = _one(page, f"#job-{parent_id}-log").get_text(" ", strip=True)
    for name in names:  # each method's events are shown on the comparison's page
        assert f"{name}: started" in log and f"{name}: completed" in log

    # A method's page: a job of its own, inside the comparison.
    child_page = _page(central, child_ids[1])
    crumbs = _one(child_page, "p.muted")
    assert [a["href"] for a in crumbs.select("a")] == ["/jobs", f"/jobs/{parent_id}"]
    child_status = _one(child_page, f"#job-{child_ids[1]}-status")
    assert "One method of the comparison" in child_status.get_text(" ", strip=True)
    assert _one(child_status, f"a[href='/jobs/{parent_id}']")
    assert not child_status.select("input[type=file]")  # no upload of its own
    assert not child_status.select("table.numbers")
    assert (
        _one(child_page, "dl.facts")
        .get_text(" ", strip=True)
        .count(f"CSLMICE {Registry.with_builtins().get('CSLMICE').version}")
        == 1
    )

    status, body = _upload(central, parent_id, path)
    assert status == 409 and "completed" in body["detail"]
    retry = central.post(f"/api/jobs/{child_ids[0]}/retry", headers=headers)
    assert retry.status_code == 409 and "completed" in retry.json()["detail"]


# ------------------------------------------------------------------ partial and retry


def test_a_failed_method_leaves_the_comparison_partial_and_is_retried(
    central_meandraw: TestClient, demo_files: dict[str, Path]
) -> None:
    """SIMI with ridge 0 fails on demo central with two equal predictors (a singular fit that
    no check can see before it); MEANDRAW, an uploaded method, imputes bmi. The comparison is
    partial and keeps central's data for a retry; a retry is a new child job (the failed one
    stays failed); cancel releases the data."""
    central = central_meandraw  # MEANDRAW is there already
    path = _collinear(demo_files)
    parent = _create(
        central,
        algorithm="SIMI",
        compare=["MEANDRAW"],
        targets=BMI,
        parameters={"ridge": 0},
        seed=5,
    )
    parent_id = parent["id"]
    simi_id, meandraw_id = (m["id"] for m in parent["methods"])
    assert [m["algorithm"] for m in parent["methods"]] == ["SIMI", "MEANDRAW"]
    assert _get(central, meandraw_id)["parameters"] == {"imputations": 2, "min_rows": 18}

    status, body = _upload(central, parent_id, path)
    assert status == 200, body
    partial = _wait(central, parent_id, {"partial", *FINAL})
    assert partial["state"] == "partial", partial
    assert partial["message"] == "SIMI did not complete; retry, or cancel to release the data"
    assert partial["finished_at"] is None
    simi, meandraw = partial["methods"]
    assert simi["state"] == "failed" and "singular" in simi["message"], simi
    assert meandraw["state"] == "completed", meandraw
    assert portal_state(central).store.view(parent_id).data is not None  # kept for a retry

    # The completed method's results are there to download, the simulation's.
    expected = _simulated(_meandraw(), _get(central, meandraw_id), path)
    headers = admin_auth(central)
    long = central.get(f"/api/jobs/{meandraw_id}/result?format=long", headers=headers)
    assert long.status_code == 200 and long.content == long_csv(expected)
    comparison = central.get(f"/api/jobs/{parent_id}/comparison", headers=headers).json()
    assert [(m["algorithm"], m["status"]) for m in comparison["methods"]] == [
        ("SIMI", "failed"),
        ("MEANDRAW", "completed"),
    ]
    assert comparison["methods"][0]["message"] == simi["message"]
    assert "round_trips" not in comparison["methods"][0]
    (bmi,) = comparison["targets"]
    assert list(bmi["methods"]) == ["MEANDRAW"]
    assert "distance" not in bmi["methods"]["MEANDRAW"]  # no reference fit to measure from

    # The page offers a retry of the failed method only, and cancelling the comparison.
    page = _page(central, parent_id)
    status_block = _one(page, f"#job-{parent_id}-status")
    assert partial["message"] in _one(status_block, "p.alert-error").get_text(strip=True)
    retries = status_block.select("form[action$='/retry']")
    assert [form["action"] for form in retries] == [f"/jobs/{simi_id}/retry"]
    assert _one(retries[0], "button").get_text(strip=True) == "Retry SIMI"
    cancel = _one(status_block, f"form[action='/jobs/{parent_id}/cancel'] button")
    assert cancel.get_text(strip=True) == "Cancel comparison"
    assert "data in memory" in status_block.get_text(" ", strip=True)

    # Central's data cannot change now; only a failed method is retried, and only a comparison's.
    status, body = _upload(central, parent_id, path)
    assert status == 409 and "partial" in body["detail"]
    refusals = {
        meandraw_id: "only a failed or cancelled method is retried",
        parent_id: "not part of a comparison",
    }
    for job_id, words in refusals.items():
        response = central.post(f"/api/jobs/{job_id}/retry", headers=headers)
        assert response.status_code == 409 and words in response.json()["detail"], job_id
    assert central.post("/api/jobs/99999/retry", headers=headers).status_code == 404

    # Retry through the API: a new SIMI child, on the data central kept.
    response = central.post(f"/api/jobs/{simi_id}/retry", headers=headers)
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["id"] == parent_id and retried["state"] in ("waiting", "running", "partial")
    attempt_id = retried["methods"][0]["id"]
    assert attempt_id > simi_id and retried["methods"][1]["id"] == meandraw_id
    again = _wait(central, parent_id, {"partial", *FINAL})
    assert again["state"] == "partial", again
    assert [(m["id"], m["state"]) for m in again["methods"]] == [
        (attempt_id, "failed"),
        (meandraw_id, "completed"),
    ]
    attempt = _get(central, attempt_id)
    assert attempt["parent"] == parent_id and attempt["seed"] == 5
    assert attempt["parameters"] == _get(central, simi_id)["parameters"]
    assert _get(central, simi_id)["state"] == "failed"  # the first attempt stays as a record
    old = central.post(f"/api/jobs/{simi_id}/retry", headers=headers)
    assert old.status_code == 409 and "retried already" in old.json()["detail"]
    assert [j["id"] for j in central.get("/api/jobs", headers=headers).json()] == [parent_id]

    # Retry through the page (HTMX): the comparison's status block comes back.
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    response = central.post(f"/jobs/{attempt_id}/retry", headers=htmx_headers(csrf))
    assert response.status_code == 200, response.text[:2000]
    assert _soup(response.text).select_one(f"#job-{parent_id}-status") is not None
    third = _wait(central, parent_id, {"partial", *FINAL})
    assert third["state"] == "partial"
    assert third["methods"][0]["id"] > attempt_id
    assert len(_get(central, parent_id)["methods"]) == 2

    # Cancel the partial comparison: the data is released; the methods keep their states.
    cancelled = central.post(f"/api/jobs/{parent_id}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["message"] == "cancelled at central"
    assert [m["state"] for m in cancelled.json()["methods"]] == ["failed", "completed"]
    assert portal_state(central).store.view(parent_id).data is None
    late = central.post(f"/api/jobs/{third['methods'][0]['id']}/retry", headers=headers)
    assert late.status_code == 409 and "cancelled" in late.json()["detail"]


def test_a_partial_comparisons_data_expires_and_the_comparison_says_so(
    central_meandraw: TestClient, demo_files: dict[str, Path]
) -> None:
    """Central's rows kept for a retry do not stay forever: once nothing used them for the
    results' expiry time they go, and the comparison is cancelled with the reason."""
    central = central_meandraw  # MEANDRAW is there already
    parent = _create(
        central,
        algorithm="SIMI",
        compare=["MEANDRAW"],
        targets=BMI,
        parameters={"ridge": 0},
        seed=5,
    )
    status, body = _upload(central, parent["id"], _collinear(demo_files))
    assert status == 200, body
    assert _wait(central, parent["id"], {"partial", *FINAL})["state"] == "partial"
    state = portal_state(central)
    assert state.store.view(parent["id"]).data is not None

    state.orchestrator.sweep(now=time.monotonic() + state.store.result_seconds - 5)
    assert _get(central, parent["id"])["state"] == "partial"  # not yet
    state.orchestrator.sweep(now=time.monotonic() + state.store.result_seconds + 5)
    done = _get(central, parent["id"])
    assert done["state"] == "cancelled", done
    assert done["message"] == (
        "central's data was discarded from memory 60 min after the last method ran; "
        "run the comparison again to retry"
    )
    assert state.store.view(parent["id"]).data is None
    text = _page(central, parent["id"]).get_text(" ", strip=True)
    assert "data in memory" not in text and "Run again" in text


def test_comparison_tables_outlive_a_restart_of_central(
    central_settings: CentralSettings, demo_files: dict[str, Path]
) -> None:
    """The methods' reports (fits and costs, no data) are stored: the comparison's table is
    the same after central restarts, and the page says the imputed data is gone."""
    with TestClient(create_app(central_settings)) as first:
        create_admin(first)
        parent = _create(first, algorithm="SIMI", compare=["IMI"], targets=SBP, parameters={})
        status, body = _upload(first, parent["id"], demo_files["central"])
        assert status == 200, body
        assert _wait(first, parent["id"], FINAL)["state"] == "completed"
        before = first.get(f"/api/jobs/{parent['id']}/comparison", headers=admin_auth(first))
        assert before.status_code == 200
        assert [m["status"] for m in before.json()["methods"]] == ["completed", "completed"]
    with TestClient(create_app(central_settings)) as second:
        headers = admin_auth(second)
        after = second.get(f"/api/jobs/{parent['id']}/comparison", headers=headers)
        assert after.json() == before.json()
        page = _page(second, parent["id"])
        text = page.get_text(" ", strip=True)
        assert "No method's imputed data is in memory any more" in text
        assert "Fits of 'sbp'" in text
        child = parent["methods"][0]["id"]
        child_text = _page(second, child).get_text(" ", strip=True)
        assert "The results were not kept: central restarted" in child_text
        assert "Long CSV" not in child_text


def test_cancelling_a_waiting_comparison_cancels_every_method(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, north = approved_site(central, "north")
    parent = _create(central, participants=[north])
    status, body = _upload(central, parent["id"], demo_files["central"])
    assert status == 200 and body["state"] == "waiting", body  # north is not ready
    assert all(m["state"] == "created" for m in body["methods"])

    response = central.post(f"/api/jobs/{parent['id']}/cancel", headers=admin_auth(central))
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["state"] == "cancelled"
    assert done["message"] == "cancelled at central before it started"
    for method in done["methods"]:
        assert method["state"] == "cancelled"
        assert method["message"] == "cancelled at central before it ran"
    assert portal_state(central).store.view(parent["id"]).data is None


# ------------------------------------------------------------------ the wizard


def _summary(path: Path) -> list[dict[str, Any]]:
    """What the wizard's columns step keeps of a CSV: per column its name and counts."""
    table = read_csv(path)
    missing = np.isnan(table.values).sum(axis=0)
    return [
        {"name": name, "rows": table.rows, "missing": int(count), "binary": name in BINARY}
        for name, count in zip(table.columns, missing, strict=True)
    ]


def _compare_boxes(html: str) -> list[Tag]:
    return _soup(html).select("fieldset.compare input[type=checkbox][name=compare]")


def test_the_wizard_offers_methods_of_the_same_kind(central_meandraw: TestClient) -> None:
    central = central_meandraw  # with MEANDRAW, a third-party one-target method
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    offered = {}
    for algorithm in ("SIMI", "IMI", "SIMICE", "CSLMICE", "MEANDRAW"):
        response = central.get(
            f"/jobs/new/parameters?algorithm={algorithm}", headers=htmx_headers(csrf)
        )
        assert response.status_code == 200
        boxes = _compare_boxes(response.text)
        assert not any(box.has_attr("checked") for box in boxes)
        offered[algorithm] = [str(box["value"]) for box in boxes]
        hint = _one(_soup(response.text), "fieldset.compare .hint").get_text(" ", strip=True)
        assert f"Run {algorithm} and the methods ticked here" in hint
        reference = "SIMICE" if algorithm.endswith("ICE") else "SIMI"
        assert f"({reference}, added when not ticked)" in hint
    assert offered == {
        "SIMI": ["AVGMMI", "CSLMI", "IMI", "MEANDRAW"],
        "IMI": ["AVGMMI", "CSLMI", "MEANDRAW", "SIMI"],
        "SIMICE": ["AVGMMICE", "CSLMICE", "IMICE"],
        "CSLMICE": ["AVGMMICE", "IMICE", "SIMICE"],
        "MEANDRAW": ["AVGMMI", "CSLMI", "IMI", "SIMI"],
    }
    # Before an algorithm is chosen there is nothing to compare.
    assert not _soup(central.get("/jobs/new").text).select("fieldset.compare")


def _collinear(demo_files: dict[str, Path]) -> Path:
    """Demo central with smoker complete (SIMI's checks pass) and cholesterol a copy of sbp."""
    source = demo_files["central"]
    out = source.with_name("collinear-central.csv")
    return edited_csv(source, out, complete=["smoker"], same_as={"cholesterol": "sbp"})


def _wizard_form(central: TestClient, csrf: str, path: Path, algorithm: str) -> dict[str, Any]:
    """What the browser sends for a one-target job on sbp, its parameter fields as offered."""
    fragment = central.get(
        f"/jobs/new/parameters?algorithm={algorithm}", headers=htmx_headers(csrf)
    ).text
    defaults = {
        str(field["name"]): str(field.get("value", ""))
        for field in _soup(fragment).select("input")
        if str(field.get("name", "")).startswith("param:")
        and (field.get("type") != "checkbox" or field.has_attr("checked"))  # as a browser sends
    }
    return {
        "csrf_token": csrf,
        "algorithm": algorithm,
        "columns_json": json.dumps(_summary(path)),
        "target": ["sbp"],
        **{f"type:{c}": "logistic" if c in BINARY else "gaussian" for c in COLUMNS},
        **defaults,
        "param:imputations": "3",
        "name": "Wizard comparison",
        "description": "made in the wizard",
        "seed": "42",
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_a_comparison_through_the_wizard(central: TestClient, demo_files: dict[str, Path]) -> None:
    _, north = approved_site(central, "north")  # the wizard refuses a pooled job with no site
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    form = {
        **_wizard_form(central, csrf, demo_files["central"], "CSLMI"),
        "compare": ["IMI", "AVGMMI"],
        "participants": [north],
    }

    # An unknown method is refused next to the checkboxes; what was ticked stays ticked.
    refused = central.post(
        "/jobs", data={**form, "compare": ["IMI", "NOPE"]}, follow_redirects=False
    )
    assert refused.status_code == 422, refused.text[:2000]
    page = _soup(refused.text)
    assert "NOPE" in _one(page, "fieldset.compare #e-compare").get_text(strip=True)
    ticked = [str(box["value"]) for box in _compare_boxes(refused.text) if box.has_attr("checked")]
    assert ticked == ["IMI"]
    assert central.get("/api/jobs", headers=admin_auth(central)).json() == []

    response = central.post("/jobs", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text[:2000]
    parent_id = int(response.headers["location"].removeprefix("/jobs/"))
    parent = _get(central, parent_id)
    assert parent["parent"] is None and parent["algorithm"] == "SIMI"
    assert parent["name"] == "Wizard comparison" and parent["seed"] == 42
    assert [m["algorithm"] for m in parent["methods"]] == ["SIMI", "CSLMI", "IMI", "AVGMMI"]
    assert parent["parameters"] == {
        "imputations": 3,
        "ridge": 1e-5,
        "max_iter": 100,
        "min_rows": 18,
        "donors": 5,
        "site_effect": "none",
    }
    for method in parent["methods"]:
        child = _get(central, method["id"])
        taken = Registry.with_builtins().get(method["algorithm"]).schema["properties"]
        assert child["parameters"] == {k: v for k, v in parent["parameters"].items() if k in taken}
        assert child["seed"] == 42
        assert child["targets"] == [{"index": 4, "name": "sbp", "type": "gaussian"}]


# ------------------------------------------------------------------ edges found while building it


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_the_comparison_page_opens_before_it_runs(central: TestClient) -> None:
    """The wizard sends the admin to the new comparison's page, to upload central's data."""
    parent = _create(central, algorithm="SIMI", compare=["IMI"], targets=SBP, parameters={})
    response = central.get(f"/jobs/{parent['id']}", headers=admin_auth(central))
    assert response.status_code == 200
    status_block = _one(_soup(response.text), f"#job-{parent['id']}-status")
    assert _one(status_block, f"form[action='/jobs/{parent['id']}/data'] input[type=file]")
    rows = _rows(status_block.select("table.list")[0])
    assert [(r[0], r[1]) for r in rows] == [("SIMI", "created"), ("IMI", "created")]


def test_a_comparison_with_an_intercept_only_method_is_reported(
    central_meandraw: TestClient, demo_files: dict[str, Path]
) -> None:
    central = central_meandraw  # MEANDRAW is there already
    parent = _create(
        central, algorithm="SIMI", compare=["MEANDRAW"], targets=SBP, parameters={}, seed=3
    )
    status, body = _upload(central, parent["id"], demo_files["central"])
    assert status == 200, body
    assert _wait(central, parent["id"], {"partial", *FINAL})["state"] == "completed"
    response = central.get(f"/api/jobs/{parent['id']}/comparison", headers=admin_auth(central))
    assert response.status_code == 200
    assert central.get(f"/jobs/{parent['id']}", headers=admin_auth(central)).status_code == 200


def test_cancelling_a_partial_comparison_through_a_method_says_so(
    central_meandraw: TestClient, demo_files: dict[str, Path]
) -> None:
    central = central_meandraw  # MEANDRAW is there already
    parent = _create(
        central,
        algorithm="SIMI",
        compare=["MEANDRAW"],
        targets=BMI,
        parameters={"ridge": 0},
        seed=5,
    )
    _upload(central, parent["id"], _collinear(demo_files))
    assert _wait(central, parent["id"], {"partial", *FINAL})["state"] == "partial"
    simi_id = parent["methods"][0]["id"]
    response = central.post(f"/api/jobs/{simi_id}/cancel", headers=admin_auth(central))
    assert response.status_code == 200
    assert _get(central, parent["id"])["message"] == "cancelled at central"


def test_the_wizard_creates_every_comparison_it_offers(
    central_meandraw: TestClient, demo_files: dict[str, Path]
) -> None:
    central = central_meandraw  # MEANDRAW is there already
    _, north = approved_site(central, "north")  # the wizard refuses a pooled job with no site
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    form = {
        **_wizard_form(central, csrf, demo_files["central"], "SIMI"),
        "compare": ["MEANDRAW"],
        "participants": [north],
    }
    response = central.post("/jobs", data=form, follow_redirects=False)
    errors = [p.get_text(strip=True) for p in _soup(response.text).select(".error")]
    assert response.status_code == 303, errors


# ------------------------------------------------------------------ a real federation


class _Gate(TcpProxy):
    """A relay to central that can also refuse new connections, as a network outage would."""

    def __init__(self, target_port: int) -> None:
        self.refusing = False
        super().__init__(target_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        await super()._accept(reader, writer)

    def outage(self) -> None:
        self.refusing = True
        self.cut()


@pytest.fixture(scope="module")
def gate(network: Federation) -> Iterator[_Gate]:
    """The first site reaches central through a relay the tests can shut."""
    port = int(network.central_url.rsplit(":", 1)[1])
    relay = _Gate(port)
    connect_site(network, network.sites[0], central_url=f"https://127.0.0.1:{relay.port}")
    yield relay
    relay.refusing = False
    relay.close()
    connect_site(network, network.sites[0])  # straight to central again, for the next module


SITE_DATA = ("north", "south")


def _fed_job(fed: Federation, job_id: int) -> dict[str, Any]:
    with fed.admin() as admin:
        response = admin.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job


def _fed_comparison(fed: Federation, **overrides: Any) -> dict[str, Any]:
    body = _comparison(**{"participants": [s.site_id for s in fed.sites], **overrides})
    with fed.admin() as admin:
        response = admin.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job


def _start_everywhere(fed: Federation, job_id: int, files: dict[str, Path]) -> str:
    """Each site uploads its CSV to the comparison and clicks Start once; then central uploads.
    Returns the state central answers with."""
    for site, data in zip(fed.sites, SITE_DATA, strict=True):
        with site.api() as api:
            uploaded = api.post(
                f"/api/jobs/{job_id}/data",
                files={"file": (f"{data}.csv", files[data].read_bytes())},
            )
            assert uploaded.status_code == 200, uploaded.text
            started = api.post(f"/api/jobs/{job_id}/start")
            assert started.status_code == 200, started.text
            assert started.json()["started"] is True
    with fed.admin() as admin:
        response = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", files["central"].read_bytes())},
        )
        assert response.status_code == 200, response.text
        state: str = response.json()["state"]
        return state


def _until(
    fed: Federation, job_id: int, ok: Callable[[dict[str, Any]], bool], seconds: float, what: str
) -> dict[str, Any]:
    wait_for(lambda: ok(_fed_job(fed, job_id)), seconds=seconds, every=0.05, what=what)
    return _fed_job(fed, job_id)


def _site_sims(fed: Federation, files: dict[str, Path]) -> dict[str, Path]:
    return {s.site_id: files[d] for s, d in zip(fed.sites, SITE_DATA, strict=True)}


def _meandraw_at_central(fed: Federation) -> None:
    """MEANDRAW uploaded to central (once: a second upload of the same version is refused)."""
    with fed.admin() as admin:
        uploaded = admin.post("/api/algorithms", files=upload_parts(meandraw_files()))
        assert uploaded.status_code in (201, 409), uploaded.text


def _site_job(site_api: httpx.Client, job_id: int) -> dict[str, Any]:
    response = site_api.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def test_a_comparison_across_sites_runs_every_method_after_one_start(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    parent = _fed_comparison(fed, name="federated comparison", seed=7)
    parent_id = parent["id"]
    names = ["SIMICE", "CSLMICE", "AVGMMICE", "IMICE"]
    assert [m["algorithm"] for m in parent["methods"]] == names
    child_ids = {m["algorithm"]: m["id"] for m in parent["methods"]}
    sites = [s.site_id for s in fed.sites]

    # A site sees the comparison only, lists its methods, and trusts them all (built in).
    with fed.sites[0].api() as api:
        listed = api.get("/api/jobs").json()
        assert str(parent_id) in [j["id"] for j in listed]
        assert not {str(c) for c in child_ids.values()} & {j["id"] for j in listed}
        seen = _site_job(api, parent_id)
        assert seen["code_trusted"] is True and seen["state"] == "created"
        page = _soup(api.get(f"/jobs/{parent_id}").text).get_text(" ", strip=True)
        assert "This job compares methods" in page
        trusted = re.findall(r"(\w+) (\S+) is built into this portal: trusted\.", page)
        # the methods that run on this site's data, not IMICE, each at the version central set
        assert trusted == [(m["algorithm"], m["version"]) for m in parent["methods"][:3]]

    assert _start_everywhere(fed, parent_id, demo_files) in ("running", "completed")
    done = _until(fed, parent_id, lambda j: j["state"] in FINAL, 60, "the comparison to end")
    assert done["state"] == "completed", done
    assert done["message"] == "4 methods compared"
    assert [m["state"] for m in done["methods"]] == ["completed"] * 4

    registry = Registry.with_builtins()
    with fed.admin() as admin:
        comparison = admin.get(f"/api/jobs/{parent_id}/comparison").json()
        for name, child_id in child_ids.items():
            child = _fed_job(fed, child_id)
            expected = _simulated(
                registry.get(name),
                child,
                demo_files["central"],
                None if name == "IMICE" else _site_sims(fed, demo_files),
            )
            long = admin.get(f"/api/jobs/{child_id}/result", params={"format": "long"})
            assert long.status_code == 200, long.text
            assert long.content == long_csv(expected), name
    costs = {m["algorithm"]: m for m in comparison["methods"]}
    assert list(costs) == names
    assert costs["IMICE"]["sites"] == ["central"] and costs["IMICE"]["round_trips"] == 0
    for name in names[:3]:
        assert costs[name]["sites"] == ["central", *sites]
        assert costs[name]["round_trips"] > 0 and costs[name]["bytes_received"] > 0
    # One-shot methods cost fewer round trips than the exact Newton of SIMICE.
    assert costs["AVGMMICE"]["round_trips"] < costs["SIMICE"]["round_trips"]
    assert costs["CSLMICE"]["round_trips"] < costs["SIMICE"]["round_trips"]
    for target in comparison["targets"]:
        assert list(target["methods"]) == names
        assert target["methods"]["SIMICE"]["distance"]["relative"] == 0.0
        # Whether the sites are alike: from the reference's per-site replies (sums, or H and g
        # of its Newton fit); CSLMICE compares central's means with the pool.
        test = target["equal_coefficients"]
        assert test["from"] == "SIMICE"
        assert test["sites"] == ["central", *sites] and 0.0 <= test["p_value"] <= 1.0
        shift = target["methods"]["CSLMICE"]["covariate_means"]
        assert [p["name"] for p in shift["predictors"]] == [
            c for c in target["methods"]["SIMICE"]["coefficients"] if c != "(intercept)"
        ]
    with fed.admin() as admin:
        page = _soup(admin.get(f"/jobs/{parent_id}").text).get_text(" ", strip=True)
        method_page = _soup(admin.get(f"/jobs/{child_ids['AVGMMICE']}").text)
    assert page.count("Equal coefficients across sites (multivariate Wald test") == 2
    assert "central's covariates vs the pool" in page
    checks = method_page.select_one(f"#job-{child_ids['AVGMMICE']}-site-checks")
    assert checks is not None and "Are the sites alike?" in checks.get_text(" ", strip=True)
    assert len(checks.select("table.site-check")) == 2  # bmi and smoker, per-site estimates

    # Every site answered each method's requests under that method's job id, on its one upload.
    for site in fed.sites:
        with site.api() as api:
            ledger = api.get("/api/ledger").json()
            after = _site_job(api, parent_id)
        controls = {"ready", "unready", "cancel", "policy"}
        ids = {entry["job_id"] for entry in ledger if entry["kind"] not in controls}
        assert {"ready", "policy"} <= {e["kind"] for e in ledger}  # listed too
        for name in names[:3]:
            kinds = {e["kind"] for e in ledger if e["job_id"] == str(child_ids[name])}
            assert "fip.open" in kinds, (site.name, name, kinds)
        assert str(child_ids["IMICE"]) not in ids and str(parent_id) not in ids
        assert after["state"] == "completed" and after["data_loaded"] is False


def test_a_method_cut_off_from_a_site_is_retried_once_it_is_back(
    network: Federation, gate: _Gate, demo_files: dict[str, Path]
) -> None:
    """North's connection goes down during SIMICE and stays down past the grace period: SIMICE
    fails, IMICE (central alone) completes, the comparison is partial and everyone keeps their
    data. Once north is back, a retry runs SIMICE again as a new job and the comparison
    completes; the failed attempt stays failed."""
    fed = network
    north, south = fed.sites
    parameters = {"iteration_before_first_imputation": 12, "iteration_between_imputations": 1}
    parent = _fed_comparison(
        fed,
        name="cut off",
        algorithm="IMICE",
        compare=["SIMICE"],
        imputations=1,
        parameters=parameters,
        seed=9,
    )
    parent_id = parent["id"]
    first_id, imice_id = (m["id"] for m in parent["methods"])
    assert [m["algorithm"] for m in parent["methods"]] == ["SIMICE", "IMICE"]

    try:
        assert _start_everywhere(fed, parent_id, demo_files) == "running"
        gate.outage()
        # the outage came mid-method
        _until(fed, first_id, lambda j: j["state"] == "running", 10, "the first method's start")
        partial = _until(
            fed, parent_id, lambda j: j["state"] not in ("waiting", "running"), 30, "partial"
        )
    finally:
        gate.refusing = False
    assert partial["state"] == "partial", partial
    assert partial["message"] == "SIMICE did not complete; retry, or cancel to release the data"
    failed = _fed_job(fed, first_id)
    assert failed["state"] == "failed"
    assert f"site '{north.site_id}'" in failed["message"]
    assert "did not reconnect" in failed["message"]
    assert _fed_job(fed, imice_id)["state"] == "completed"

    with fed.admin() as admin:
        page = _soup(admin.get(f"/jobs/{parent_id}").text)
    status_block = _one(page, f"#job-{parent_id}-status").get_text(" ", strip=True)
    assert "data in memory" in status_block and "Retry SIMICE" in status_block
    with south.api() as api:
        kept = _site_job(api, parent_id)
        assert kept["state"] == "partial" and kept["data_loaded"] and kept["started"]
        assert "holds its data in memory" in api.get(f"/jobs/{parent_id}").text

    with north.api() as api:
        wait_for(
            lambda: api.get("/api/status").json()["status"] == "connected",
            seconds=15,
            what="north to reconnect",
        )
    with fed.admin() as admin:
        response = admin.post(f"/api/jobs/{first_id}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["id"] == parent_id and retried["state"] in ("waiting", "running")
    attempt_id = retried["methods"][0]["id"]
    assert attempt_id not in (first_id, imice_id)
    assert [m["algorithm"] for m in retried["methods"]] == ["SIMICE", "IMICE"]

    done = _until(fed, parent_id, lambda j: j["state"] in FINAL | {"partial"}, 30, "the retry")
    assert done["state"] == "completed", done
    assert done["message"] == "2 methods compared"
    assert [(m["id"], m["state"]) for m in done["methods"]] == [
        (attempt_id, "completed"),
        (imice_id, "completed"),
    ]
    assert _fed_job(fed, first_id)["state"] == "failed"

    attempt = _fed_job(fed, attempt_id)
    expected = _simulated(
        Registry.with_builtins().get("SIMICE"),
        attempt,
        demo_files["central"],
        _site_sims(fed, demo_files),
    )
    with fed.admin() as admin:
        long = admin.get(f"/api/jobs/{attempt_id}/result", params={"format": "long"})
        comparison = admin.get(f"/api/jobs/{parent_id}/comparison").json()
    assert long.status_code == 200 and long.content == long_csv(expected)
    assert [(m["algorithm"], m["status"]) for m in comparison["methods"]] == [
        ("SIMICE", "completed"),
        ("IMICE", "completed"),
    ]
    for site in fed.sites:
        with site.api() as api:
            ledger = api.get("/api/ledger").json()
            after = _site_job(api, parent_id)
        answered = {e["job_id"] for e in ledger if "fip.open" in e["kind"].split("+")}
        assert str(attempt_id) in answered, (site.name, answered)
        assert after["state"] == "completed" and after["data_loaded"] is False


def _cancelled_at_south(
    fed: Federation, files: dict[str, Path], name: str
) -> tuple[dict[str, Any], list[int]]:
    """A comparison of SIMICE, AVGMMICE and IMICE cancelled at south while SIMICE runs: the
    comparison once it ended, and its methods' ids."""
    south = fed.sites[1]
    parent = _fed_comparison(
        fed,
        name=name,
        algorithm="AVGMMICE",
        compare=["IMICE"],
        imputations=1,
        parameters={"iteration_before_first_imputation": 400},
        seed=1,
    )
    parent_id = parent["id"]
    ids = [m["id"] for m in parent["methods"]]
    assert [m["algorithm"] for m in parent["methods"]] == ["SIMICE", "AVGMMICE", "IMICE"]
    assert _start_everywhere(fed, parent_id, files) == "running"
    _until(fed, ids[0], lambda j: j["state"] == "running", 10, "the first method's start")

    with south.api() as api:
        response = api.post(f"/api/jobs/{parent_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["data_loaded"] is False
    done = _until(fed, parent_id, lambda j: j["state"] in FINAL, 10, "the cancellation")
    return done, ids


def test_cancel_at_a_site_cancels_the_running_method_and_the_comparison(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    north = fed.sites[0]
    done, ids = _cancelled_at_south(fed, demo_files, "cancelled at a site")
    parent_id = done["id"]
    assert done["state"] == "cancelled", done
    reason = done["message"]
    assert reason.startswith("cancelled at ")
    assert [(m["id"], m["state"], m["message"]) for m in done["methods"]] == [
        (ids[0], "cancelled", reason),  # the running method
        (ids[1], "cancelled", f"{reason} before it ran"),
        (ids[2], "cancelled", f"{reason} before it ran"),
    ]
    with north.api() as api:
        wait_for(
            lambda: _site_job(api, parent_id)["state"] == "cancelled",
            seconds=5,
            what="north to see the cancellation",
        )
        assert _site_job(api, parent_id)["data_loaded"] is False
    with fed.admin() as admin:
        retry = admin.post(f"/api/jobs/{ids[0]}/retry")
    assert retry.status_code == 409 and "cancelled" in retry.json()["detail"]


def test_a_comparison_cancelled_at_a_site_says_which(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    done, _ = _cancelled_at_south(network, demo_files, "cancelled at a site, reason")
    assert done["message"] == f"cancelled at site {network.sites[1].site_id}"


def test_a_site_approves_an_uploaded_method_of_a_comparison(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    """A comparison with a third-party method: Start is refused until the site approves its
    remote half (the page's Approve covers every method of the comparison)."""
    fed = network
    north = fed.sites[0]
    _meandraw_at_central(fed)
    parent = _fed_comparison(
        fed,
        name="third party",
        algorithm="SIMI",
        compare=["MEANDRAW"],
        targets=SBP,
        parameters={},
        participants=[north.site_id],
    )
    digest = _meandraw().digest
    assert parent["methods"][1]["digest"] == digest
    with north.api() as api:
        assert _site_job(api, parent["id"])["code_trusted"] is False
        uploaded = api.post(
            f"/api/jobs/{parent['id']}/data",
            files={"file": ("north.csv", demo_files["north"].read_bytes())},
        )
        assert uploaded.status_code == 200, uploaded.text
        refused = api.post(f"/api/jobs/{parent['id']}/start")
        assert refused.status_code == 409
        assert "approve the remote half of MEANDRAW 1.0.0" in refused.json()["detail"]
        approved = api.post(f"/jobs/{parent['id']}/approve", follow_redirects=False)
        assert approved.status_code == 303, approved.text[:2000]
        assert _site_job(api, parent["id"])["code_trusted"] is True
    with fed.admin() as admin:
        assert admin.post(f"/api/jobs/{parent['id']}/cancel").json()["state"] == "cancelled"


def test_a_site_approves_a_comparisons_method_through_the_api(network: Federation) -> None:
    fed = network
    north = fed.sites[0]
    _meandraw_at_central(fed)
    parent = _fed_comparison(
        fed,
        name="third party, API",
        algorithm="SIMI",
        compare=["MEANDRAW"],
        targets=SBP,
        parameters={},
        participants=[north.site_id],
    )
    try:
        with north.api() as api:
            _site_job(api, parent["id"])
            response = api.post(f"/api/algorithms/{_meandraw().digest}/approve")
            assert response.status_code == 200, response.text
    finally:
        with fed.admin() as admin:
            admin.post(f"/api/jobs/{parent['id']}/cancel")
