"""Jobs at central through the JSON API: creation checks, permissions, runs, results, states."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from federation import outputs
from federation.data import read_csv
from federation.demo import COLUMNS
from federation.outputs import chains_csv, long_csv, methods_csv, zip_bytes
from federation.registry import Registry
from federation.runtime import JobResult
from federation.simulation import simulate
from portal_central.app import create_app
from portal_central.errors import InvalidTransition, NotFound
from portal_central.jobs import service
from portal_central.jobs.status import ACTIVE, FINAL, TRANSITIONS, JobState, advance
from portal_central.models import Job, User
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    chained_algorithm,
    create_admin,
    edited_csv,
    make_settings,
    portal_state,
    token,
    wait_for_state,
)
from tests.prepared_central import central_with_meandraw
from tests.r_reference import run_r

TARGETS = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]
QUICK = {"iteration_before_first_imputation": 2, "iteration_between_imputations": 1}
"""Few chained-equation cycles: a run of central's 800 rows takes a fraction of a second."""


def _job(**overrides: Any) -> dict[str, Any]:
    """A SIMICE job over the demo columns with a fixed seed; without sites IMICE, its
    central-only twin (a pooled job needs a site)."""
    return {
        "name": "demo imputation",
        "description": "bmi and smoker",
        "algorithm": chained_algorithm(overrides),
        "columns": list(COLUMNS),
        "targets": TARGETS,
        "imputations": 2,
        "parameters": dict(QUICK),
        "seed": 11,
        **overrides,
    }


def _create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json=_job(**overrides), headers=admin_auth(client))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def _upload(
    client: TestClient, job_id: int, content: bytes, name: str = "central.csv"
) -> tuple[int, dict[str, Any]]:
    response = client.post(
        f"/api/jobs/{job_id}/data",
        files={"file": (name, content, "text/csv")},
        headers=admin_auth(client),
    )
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _state(client: TestClient, job_id: int) -> str:
    state: str = client.get(f"/api/jobs/{job_id}", headers=admin_auth(client)).json()["state"]
    return state


def _simulated(path: Path, **job: Any) -> JobResult:
    """The same job run by the engine's simulation, central alone."""
    params = {**job["parameters"], "imputations": job["imputations"]}
    return asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get(job["algorithm"]),
            central=read_csv(path),
            sites={},
            targets=[(t["column"], t["type"]) for t in job["targets"]],
            params=params,
            seed=job["seed"],
        )
    )


def _run_to_completion(client: TestClient, path: Path, **overrides: Any) -> dict[str, Any]:
    job = _create(client, **overrides)
    status, body = _upload(client, job["id"], path.read_bytes())
    assert status == 200, body
    assert body["state"] in ("waiting", "running", "completed")
    done = wait_for_state(client, job["id"], admin_auth(client))
    assert done["state"] == "completed", done
    return done


def _page_text(client: TestClient, job_id: int) -> str:
    browser_sign_in(client, ADMIN["username"], ADMIN["password"])
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    return BeautifulSoup(page.text, "html.parser").get_text(" ", strip=True)


@pytest.fixture
def central_meandraw(tmp_path: Path) -> Iterator[TestClient]:
    """Central as the ``central`` fixture's (SQLite), with MEANDRAW uploaded already: the
    upload, made once per run, is copied with its database (tests/prepared_central.py)."""
    with central_with_meandraw(tmp_path) as client:
        yield client


# ------------------------------------------------------------------ creation


@EVERY_DATABASE
def test_create_job_by_column_name(central: TestClient) -> None:
    _, north = approved_site(central)
    job = _create(central, participants=[north])
    assert job["state"] == "created"
    assert (
        job["algorithm"] == "SIMICE"
        and job["version"] == Registry.with_builtins().get("SIMICE").version
    )
    assert job["digest"] == Registry.with_builtins().get("SIMICE").digest
    assert job["columns"] == list(COLUMNS)
    # The algorithm receives 1-based indices.
    assert job["targets"] == [
        {"index": 3, "name": "bmi", "type": "gaussian"},
        {"index": 6, "name": "smoker", "type": "logistic"},
    ]
    assert job["parameters"] == {
        "imputations": 2,
        "iteration_before_first_imputation": 2,
        "iteration_between_imputations": 1,
        "chains": "parallel",  # the default
        "ridge": 1e-5,
        "max_iter": 100,
        "min_rows": 18,  # max(10, 3p) with p = 6 columns
        "donors": 5,
        "site_effect": "none",
    }
    assert job["seed"] == 11
    assert [p["site_id"] for p in job["participants"]] == [north]
    assert job["results_available"] is False

    fetched = central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central))
    assert fetched.status_code == 200 and fetched.json() == job
    listed = central.get("/api/jobs", headers=admin_auth(central)).json()
    assert [j["id"] for j in listed] == [job["id"]]

    # Given values win over the defaults; SIMI with one target.
    simi = _create(
        central,
        algorithm="SIMI",
        participants=[north],
        targets=[{"column": "smoker", "type": "logistic"}],
        imputations=None,
        parameters={"ridge": 0.5, "min_rows": 40},
    )
    assert simi["targets"] == [{"index": 6, "name": "smoker", "type": "logistic"}]
    assert simi["parameters"] == {
        "imputations": 5,
        "ridge": 0.5,
        "max_iter": 100,
        "min_rows": 40,
        "donors": 5,
        "site_effect": "none",
    }


@EVERY_DATABASE
def test_the_seed_takes_its_whole_range(central: TestClient) -> None:
    """Seeds are 0..2**32-1 (the API says so); every database must store the largest."""
    for seed in (0, 2**31 - 1, 2**31, 2**32 - 1):
        response = central.post("/api/jobs", json=_job(seed=seed), headers=admin_auth(central))
        assert response.status_code == 201, (seed, response.status_code, response.text[:300])
        assert response.json()["seed"] == seed


def test_every_creation_error_names_its_field(central_meandraw: TestClient) -> None:
    central = central_meandraw  # with MEANDRAW: continuous targets only
    north_id, north = approved_site(central, "north")
    _, south = approved_site(central, "south")
    disabled = central.post(f"/api/users/{north_id}/disable", headers=admin_auth(central))
    assert disabled.status_code == 200, disabled.text

    cases: list[tuple[str, dict[str, Any], set[int], set[str], list[str]]] = [
        # (case, overrides, statuses, fields, words in the message)
        ("unknown algorithm", {"algorithm": "NOPE"}, {404, 422}, {"algorithm"}, ["NOPE"]),
        ("unknown version", {"version": "9.9.9"}, {404, 422}, {"version"}, ["9.9.9"]),
        (
            "target not a column",
            {"targets": [{"column": "weight", "type": "gaussian"}]},
            {422},
            {"targets"},
            ["'weight'", "'bmi'"],
        ),
        ("no target", {"targets": []}, {422}, {"targets"}, ["no target"]),
        (
            "a target twice",
            {"targets": [TARGETS[0], TARGETS[0]]},
            {422},
            {"targets"},
            ["'bmi'", "twice"],
        ),
        (
            "a type the algorithm does not support",
            {
                "algorithm": "MEANDRAW",
                "targets": [{"column": "smoker", "type": "logistic"}],
                "parameters": {},
            },
            {422},
            {"targets"},
            ["MEANDRAW", "logistic"],
        ),
        (
            "a type that does not exist",
            {"targets": [{"column": "bmi", "type": "foo"}]},
            {422},
            {"targets.0.type"},
            ["'foo'", "gaussian", "logistic"],
        ),
        (
            "SIMI with two targets",
            {"algorithm": "SIMI", "parameters": {}},
            {422},
            {"targets"},
            ["SIMI", "one target", "2"],
        ),
        (
            "a categorical target without its levels",
            {"targets": [{"column": "sbp", "type": "categorical"}]},
            {422},
            {"targets"},
            ["'sbp'", "categorical", "levels"],
        ),
        (
            "a categorical target of two levels",
            {"targets": [{"column": "smoker", "type": "categorical", "levels": [0, 1]}]},
            {422},
            {"targets"},
            ["'smoker'", "2 level", "logistic"],
        ),
        (
            "levels that are not integer codes",
            {"targets": [{"column": "sbp", "type": "ordinal", "levels": [1, 2.5, 3]}]},
            {422},
            {"targets"},
            ["'sbp'", "2.5", "integer"],
        ),
        (
            "an unknown parameter",
            {"parameters": {**QUICK, "tolerance": 0.1}},
            {422},
            {"params", "parameters", "param_tolerance", "parameters.tolerance"},
            ["'tolerance'"],
        ),
        (
            "no burn-in cycle",
            {"parameters": {**QUICK, "iteration_before_first_imputation": 0}},
            {422},
            {
                "param_iteration_before_first_imputation",
                "parameters.iteration_before_first_imputation",
            },
            ["iteration_before_first_imputation", "minimum"],
        ),
        (
            "no cycle between imputations",
            {"parameters": {**QUICK, "iteration_between_imputations": 0}},
            {422},
            {"param_iteration_between_imputations", "parameters.iteration_between_imputations"},
            ["iteration_between_imputations", "minimum"],
        ),
        (
            "no imputation",
            {"imputations": 0},
            {422},
            {"param_imputations", "parameters.imputations", "imputations"},
            ["imputations", "minimum"],
        ),
        (
            "a parameter of the wrong type",
            {"parameters": {**QUICK, "ridge": "small"}},
            {422},
            {"param_ridge", "parameters.ridge"},
            ["ridge", "small"],
        ),
        (
            "a site effect that is not none or intercept",
            {"algorithm": "SIMICE", "parameters": {**QUICK, "site_effect": "slope"}},
            {422},
            {"param_site_effect"},
            ["site_effect", "'slope' is not one of ['none', 'intercept']"],
        ),
        (
            "a site effect for central's data alone",
            {"algorithm": "IMICE", "parameters": {**QUICK, "site_effect": "intercept"}},
            {422},
            {"params"},
            ["unknown parameter 'site_effect'"],
        ),
        ("unknown site", {"participants": ["nosuch"]}, {422}, {"participants"}, ["nosuch"]),
        (
            "disabled site",
            {"participants": [south, north]},
            {422},
            {"participants"},
            [north, "disabled"],
        ),
        ("a site twice", {"participants": [south, south]}, {422}, {"participants"}, ["twice"]),
        ("empty name", {"name": "   "}, {422}, {"name"}, ["name"]),
        ("overlong name", {"name": "x" * 201}, {422}, {"name"}, ["200"]),
        ("no columns", {"columns": []}, {422}, {"columns"}, ["columns"]),
        ("columns twice", {"columns": ["a", "a"]}, {422}, {"columns"}, ["unique"]),
        ("negative seed", {"seed": -1}, {422}, {"seed"}, ["seed"]),
        ("seed too large", {"seed": 2**32}, {422}, {"seed"}, ["seed"]),
    ]
    headers = admin_auth(central)
    problems = []
    for case, overrides, statuses, fields, words in cases:
        response = central.post("/api/jobs", json=_job(**overrides), headers=headers)
        body = response.json()
        if (
            response.status_code not in statuses
            or body.get("field") not in fields
            or not all(word in body.get("detail", "") for word in words)
        ):
            problems.append(f"{case}: {response.status_code} {body}")
    assert not problems, "\n".join(problems)
    assert central.get("/api/jobs", headers=headers).json() == []  # nothing was created


# ------------------------------------------------------------------ permissions


def test_site_users_see_only_their_jobs(central: TestClient) -> None:
    _, north = approved_site(central, "north")
    _, south = approved_site(central, "south")
    with_north = _create(central, participants=[north])
    with_south = _create(central, participants=[south])
    assert [p["site_id"] for p in with_north["participants"]] == [north]

    site = bearer(token(central, "north", SITE_PASSWORD))
    assert central.post("/api/jobs", json=_job(), headers=site).status_code == 403
    listed = central.get("/api/jobs", headers=site)
    assert listed.status_code == 200
    assert [j["id"] for j in listed.json()] == [with_north["id"]]
    assert central.get(f"/api/jobs/{with_north['id']}", headers=site).status_code == 200
    hidden = central.get(f"/api/jobs/{with_south['id']}", headers=site)
    assert hidden.status_code == 404
    assert central.get("/api/jobs/999", headers=site).status_code == 404
    # Only central's admin uploads central's data, cancels and downloads.
    for method, path in (
        ("POST", f"/api/jobs/{with_north['id']}/cancel"),
        ("GET", f"/api/jobs/{with_north['id']}/result?format=long"),
        ("GET", f"/api/jobs/{with_north['id']}/report"),
    ):
        assert central.request(method, path, headers=site).status_code == 403, path
    refused = central.post(
        f"/api/jobs/{with_north['id']}/data",
        files={"file": ("central.csv", b"a\n1\n", "text/csv")},
        headers=site,
    )
    assert refused.status_code == 403
    assert _state(central, with_north["id"]) == "created"

    for method, path in (
        ("GET", "/api/jobs"),
        ("GET", f"/api/jobs/{with_north['id']}"),
        ("POST", f"/api/jobs/{with_north['id']}/cancel"),
        ("GET", f"/api/jobs/{with_north['id']}/result"),
    ):
        assert central.request(method, path).status_code == 401, path
    assert central.post("/api/jobs", json=_job()).status_code == 401


JOB_READ_STATEMENTS = 4
"""A job read's SQL: the job with its algorithm, creator and parent joined, then one SELECT per
collection (participants with their users, children with their algorithms, the children's
participants with their users), however many sites and methods."""


def test_a_job_read_runs_a_few_statements_without_the_algorithm_files(
    central: TestClient,
) -> None:
    sites = [approved_site(central, name)[1] for name in ("north", "south")]
    job = _create(central, participants=sites, compare=["AVGMMICE"])
    shown = central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central)).json()
    assert len(shown["methods"]) == 2 and len(shown["participants"]) == 2
    state = portal_state(central)
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    with state.database.session() as session:
        admin = session.scalar(select(User).where(User.username == ADMIN["username"]))
        north = session.scalar(select(User).where(User.site_id == sites[0]))
        assert admin is not None and north is not None
    event.listen(state.database.engine, "before_cursor_execute", record)
    try:
        with state.database.session() as session:
            read = service.get_job(session=session, job_id=job["id"], user=admin)
            assert len(statements) <= JOB_READ_STATEMENTS, statements
            listed = service.list_jobs(session=session, user=admin)
            seen_by_site = service.list_jobs(session=session, user=north)
    finally:
        event.remove(state.database.engine, "before_cursor_execute", record)
    assert len(statements) <= 3 * JOB_READ_STATEMENTS, statements
    assert not any("central_source" in s or "params_json" in s for s in statements)
    # Detached, the job still shows everything its pages and the API show.
    assert [j.id for j in listed] == [j.id for j in seen_by_site] == [job["id"]]
    assert (read.algorithm.name, read.algorithm.version, read.algorithm.digest) == (
        shown["algorithm"],
        shown["version"],
        shown["digest"],
    )
    assert read.created_by.username == ADMIN["username"]
    assert [p.user.site_id for p in read.participants] == sites
    assert [
        (c.algorithm.name, c.algorithm.digest, [p.user.site_id for p in c.participants])
        for c in read.methods
    ] == [(m["algorithm"], m["digest"], m["participants"]) for m in shown["methods"]]
    assert [c.parent_id for c in read.children] == [read.id] * len(read.children)


def test_a_job_page_reads_the_signed_in_account_in_one_statement(central: TestClient) -> None:
    _, north = approved_site(central, "north")
    job = _create(central, participants=[north])
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    state = portal_state(central)
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(state.database.engine, "before_cursor_execute", record)
    try:
        page = central.get(f"/jobs/{job['id']}")
    finally:
        event.remove(state.database.engine, "before_cursor_execute", record)
    assert page.status_code == 200 and "North Hospital" in page.text
    # The account, its session not signed out and the pending badge in one; then the job.
    assert len(statements) <= 1 + JOB_READ_STATEMENTS, statements
    assert "signed_out_sessions" in statements[0] and "count" in statements[0]


def test_a_job_alone_is_one_statement_and_hidden_from_other_sites(central: TestClient) -> None:
    _, north = approved_site(central, "north")
    approved_site(central, "south")
    job = _create(central, participants=[north])
    state = portal_state(central)
    with state.database.session() as session:
        users = {u.username: u for u in session.scalars(select(User))}
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    found = {}
    event.listen(state.database.engine, "before_cursor_execute", record)
    try:
        for name in (ADMIN["username"], "north"):
            statements.clear()
            with state.database.session() as session:
                found[name] = service.find_job(session=session, job_id=job["id"], user=users[name])
            assert len(statements) == (1 if name == ADMIN["username"] else 2), statements
    finally:
        event.remove(state.database.engine, "before_cursor_execute", record)
    assert found[ADMIN["username"]].state == found["north"].state == job["state"]
    assert found["north"].parent_id is None
    for name, job_id in (("south", job["id"]), (ADMIN["username"], job["id"] + 99)):
        with state.database.session() as session, pytest.raises(NotFound, match="no job"):
            service.find_job(session=session, job_id=job_id, user=users[name])


# ------------------------------------------------------------------ runs and results


R_FROM_THE_DOWNLOAD = r"""
suppressMessages(library(mice))
zip <- "job-JOB-imputations.zip"
source(unz(zip, "fip_mids.R"))
imp <- fip_mids(zip)
cat("method=", paste(names(imp$method), imp$method, sep = ":", collapse = "|"), "\n", sep = "")
cat("smoker=", paste(c(class(imp$data$smoker), levels(imp$data$smoker)), collapse = "|"), "\n",
    sep = "")
cat("chains=", paste(dim(imp$chainMean), collapse = "|"), "\n", sep = "")
png("plot%d.png")
print(plot(imp))
print(densityplot(imp))
dev.off()
pooled <- summary(pool(with(imp, lm(sbp ~ age + bmi + smoker))))
cat("terms=", paste(pooled$term, collapse = "|"), "\n", sep = "")
"""


@pytest.mark.slow
def test_r_builds_a_mids_from_the_downloaded_zip(
    central: TestClient, demo_files: dict[str, Path], tmp_path: Path
) -> None:
    """The zip as the portal serves it, saved as a browser saves it: fip_mids.R, sourced from
    the zip, builds a mids whose plot() and densityplot() run and whose method names fip's."""
    done = _run_to_completion(central, demo_files["central"])
    archive = central.get(f"/api/jobs/{done['id']}/result?format=zip", headers=admin_auth(central))
    assert archive.status_code == 200
    (tmp_path / f"job-{done['id']}-imputations.zip").write_bytes(archive.content)

    printed = run_r(R_FROM_THE_DOWNLOAD.replace("JOB", str(done["id"])), cwd=tmp_path)

    said = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    assert said["method"] == "age:|sex:|bmi:norm|sbp:|cholesterol:|smoker:logreg"
    assert said["smoker"] == "factor|0|1"
    # Parallel chains (the default, mice's way): M chains of iteration_before_first_imputation
    # cycles each, so chainMean is columns x cycles x M, as mice's own.
    cycles = QUICK["iteration_before_first_imputation"]
    assert said["chains"] == f"{len(COLUMNS)}|{cycles}|{_job()['imputations']}"
    assert said["terms"] == "(Intercept)|age|bmi|smoker1"
    assert len(list(tmp_path.glob("plot*.png"))) == 2


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path]
) -> Iterator[tuple[TestClient, dict[str, Any], JobResult]]:
    """A portal (SQLite) with the default job completed on central's demo data, and the same
    job run by the simulation: for the tests that only read the job (none discards it)."""
    folder = tmp_path_factory.mktemp("finished")
    with _portal(folder, f"sqlite:///{folder / 'central.db'}") as client:
        done = _run_to_completion(client, demo_files["central"])
        yield client, done, _simulated(demo_files["central"], **_job())


def test_a_central_only_job_runs_like_the_simulation(
    finished: tuple[TestClient, dict[str, Any], JobResult], demo_files: dict[str, Path]
) -> None:
    central, done, expected = finished
    path = demo_files["central"]
    job_id = done["id"]
    assert done["results_available"] is True
    assert done["started_at"] is not None and done["finished_at"] is not None
    assert "2 imputed datasets" in done["message"]
    headers = admin_auth(central)

    long = central.get(f"/api/jobs/{job_id}/result?format=long", headers=headers)
    assert long.status_code == 200
    assert long.headers["content-type"].startswith("text/csv")
    assert f'filename="job-{job_id}-imputations_long.csv"' in long.headers["content-disposition"]
    assert long.content == long_csv(expected)

    archive = central.get(f"/api/jobs/{job_id}/result?format=zip", headers=headers)
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    assert archive.content == zip_bytes(expected)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
        assert unpacked.namelist() == [
            "imputation_1.csv", "imputation_2.csv",
            "original.csv", "methods.csv", "chains.csv", "fip_mids.R",
        ]  # fmt: skip

    report = central.get(f"/api/jobs/{job_id}/report", headers=headers)
    assert report.status_code == 200
    assert report.headers["content-type"] == "application/json"
    content = json.loads(report.content)
    # The job's page shows each participant's rows used and left out, as the report says.
    (own,) = content["sites"]
    assert own == {"name": "central", "rows": 800, "rows_used": 800, "left_out": {}}
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job_id}").text, "html.parser")
    rows_table = page.select_one(f"#job-{job_id}-rows")
    assert rows_table is not None
    cells = [td.get_text(" ", strip=True) for td in rows_table.select("tbody td")]
    assert cells == ["central", "800", "800", "none"]
    assert content["algorithm"] == "IMICE" and content["seed"] == 11

    chains = central.get(f"/api/jobs/{job_id}/result?format=chains", headers=headers)
    assert chains.status_code == 200
    assert f'filename="job-{job_id}-chains.csv"' in chains.headers["content-disposition"]
    assert chains.content == chains_csv(expected.report)
    assert chains.content.startswith(b"target,chain,cycle,mean,variance\n")

    methods = central.get(f"/api/jobs/{job_id}/result?format=methods", headers=headers)
    assert methods.status_code == 200
    assert f'filename="job-{job_id}-methods.csv"' in methods.headers["content-disposition"]
    assert methods.content == methods_csv(expected.spec.targets)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
        assert unpacked.read("methods.csv") == methods.content
        assert unpacked.read("chains.csv") == chains.content
    assert content["params"] == done["parameters"]
    assert content["digest"] == done["digest"]

    # The page offers the three downloads; the finished job takes no more data or cancels.
    text = _page_text(central, job_id)
    assert "completed" in text and "Long CSV" in text and "Report" in text
    assert (
        f'zip <- "job-{job_id}-imputations.zip"; '
        'source(unz(zip, "fip_mids.R")); imp <- fip_mids(zip)' in text
    )
    status, body = _upload(central, job_id, path.read_bytes())
    assert status == 409 and "completed" in body["detail"]
    assert central.post(f"/api/jobs/{job_id}/cancel", headers=headers).status_code == 409
    assert portal_state(central).store.view(job_id).data is None  # central's rows are dropped


def test_downloads_are_streamed_in_chunks_equal_to_the_built_files(
    finished: tuple[TestClient, dict[str, Any], JobResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both data downloads arrive as a stream of many chunks (small ones here), with no
    Content-Length, and their bytes equal the files built whole from the same result."""
    monkeypatch.setattr(outputs, "_CHUNK_CELLS", 512)
    central, done, expected = finished
    job_id = done["id"]
    headers = admin_auth(central)

    for format, built in (
        ("long", list(outputs.long_chunks(expected))),
        ("zip", list(outputs.zip_chunks(expected))),
    ):
        with central.stream(
            "GET", f"/api/jobs/{job_id}/result?format={format}", headers=headers
        ) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers
            chunks = list(response.iter_raw())
        assert len(chunks) > 5, format
        assert b"".join(chunks) == b"".join(built), _first_difference(format, chunks, built)


def _first_difference(format: str, sent: list[bytes], built: list[bytes]) -> str:
    """Where a download first differs from the file built whole, chunk by chunk; for a zip,
    also whether what was sent still unpacks to the same files (a different deflate of the
    same text, or damaged bytes)."""
    where = next(
        (k for k, pair in enumerate(zip(sent, built, strict=False)) if pair[0] != pair[1]),
        min(len(sent), len(built)),
    )
    said = f"{format}: {len(sent)} chunks sent, {len(built)} built; first different: {where}"
    if where < min(len(sent), len(built)):
        one, other = sent[where], built[where]
        offset = next(
            (i for i, pair in enumerate(zip(one, other, strict=False)) if pair[0] != pair[1]), None
        )
        said += f" (sizes {len(one)} and {len(other)}, first different byte {offset})"
    if format == "zip":
        with zipfile.ZipFile(io.BytesIO(b"".join(built))) as unpacked:
            wanted = {name: unpacked.read(name) for name in unpacked.namelist()}
        try:
            with zipfile.ZipFile(io.BytesIO(b"".join(sent))) as unpacked:
                same = {name: unpacked.read(name) == wanted.get(name) for name in wanted}
            said += f"; the files sent unpack, equal to the built ones: {same}"
        except (zipfile.BadZipFile, zlib.error, KeyError) as error:
            said += f"; the zip sent is damaged: {error}"
    return said


def test_central_upload_that_cannot_run_is_refused_and_a_corrected_one_runs(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    """IMI on the demo data: rows missing bmi often miss smoker, a predictor, too. Central's
    upload is refused naming the columns and suggesting IMICE; the job is left waiting for a
    corrected file (not failed), which then runs."""
    job = _create(central, algorithm="IMI", targets=[TARGETS[0]], parameters={}, imputations=2)
    status, body = _upload(central, job["id"], demo_files["central"].read_bytes())
    assert status == 422, body
    assert body["field"] == "file"
    assert "'bmi'" in body["detail"] and "'smoker' in " in body["detail"]
    assert "IMICE" in body["detail"]
    kept = central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central)).json()
    assert kept["state"] == "created", kept
    assert portal_state(central).store.view(job["id"]).data is None

    source = demo_files["central"]
    fixed = edited_csv(source, source.with_name("smoker-complete.csv"), complete=["smoker"])
    status, body = _upload(central, job["id"], fixed.read_bytes())
    assert status == 200, body
    done = wait_for_state(central, job["id"], admin_auth(central))
    assert done["state"] == "completed", done
    assert done["results_available"] is True


def test_central_data_must_match_the_header(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    job_id = _create(central)["id"]
    other_header = b"age,sex,bmi,sbp,cholesterol,weight\n60,1,25.1,130,5.2,80\n"
    status, body = _upload(central, job_id, other_header, "other.csv")
    assert status == 422
    assert body["field"] == "file"
    assert "other.csv" in body["detail"]
    assert "missing 'smoker'" in body["detail"] and "unexpected 'weight'" in body["detail"]
    assert _state(central, job_id) == "created"

    for name, content in (
        ("broken.csv", b"age,sex,bmi,sbp,cholesterol,smoker\n60,1,tall,130,5.2,0\n"),
        ("ragged.csv", b"age,sex,bmi,sbp,cholesterol,smoker\n60,1,25.1\n"),
        ("empty.csv", b""),
        ("header-only.csv", b"age,sex,bmi,sbp,cholesterol,smoker\n"),
    ):
        status, body = _upload(central, job_id, content, name)
        assert status == 422, (name, body)
        assert body["field"] == "file" and name in body["detail"], (name, body)
        assert _state(central, job_id) == "created"
    assert portal_state(central).store.view(job_id).data is None

    # Cancel a created job: it is over, and takes no data.
    cancelled = central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central))
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    status, body = _upload(central, job_id, demo_files["central"].read_bytes())
    assert status == 409 and "cancelled" in body["detail"]
    again = central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central))
    assert again.status_code == 409
    assert _state(central, job_id) == "cancelled"

    # The same columns in another order are matched by name.
    other_job = _create(central)["id"]
    reordered = b"sex,age,bmi,sbp,cholesterol,smoker\n1,60,25.1,130,5.2,0\n"
    status, body = _upload(central, other_job, reordered, "reordered.csv")
    assert status == 200, body
    assert _state(central, other_job) != "created"


def test_a_job_with_a_site_waits_for_it(central: TestClient, demo_files: dict[str, Path]) -> None:
    _, north = approved_site(central, "north")
    job_id = _create(central, participants=[north])["id"]
    status, body = _upload(central, job_id, demo_files["central"].read_bytes())
    assert status == 200, body
    assert body["state"] == "waiting"
    time.sleep(0.05)  # nothing may start without the site
    assert _state(central, job_id) == "waiting"
    assert portal_state(central).store.view(job_id).data is not None

    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job_id}").text, "html.parser")
    status_block = page.select_one(f"#job-{job_id}-status")
    assert status_block is not None
    waiting = status_block.get_text(" ", strip=True)
    assert "waiting" in waiting and "Waiting for:" in waiting and north in waiting
    assert "in memory" in waiting

    site = bearer(token(central, "north", SITE_PASSWORD))
    seen = central.get("/api/jobs", headers=site).json()
    assert [(j["id"], j["state"]) for j in seen] == [(job_id, "waiting")]

    cancelled = central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central))
    assert cancelled.json()["state"] == "cancelled"
    assert portal_state(central).store.view(job_id).data is None


@contextmanager
def _portal(tmp_path: Path, database_url: str, **overrides: object) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "central", database_url, **overrides)
    with TestClient(create_app(settings)) as client:
        create_admin(client)
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # memory only
def test_results_are_discarded_after_a_download(
    tmp_path: Path, database_url: str, demo_files: dict[str, Path]
) -> None:
    with _portal(tmp_path, database_url, download_grace_seconds=0) as client:
        job_id = _run_to_completion(client, demo_files["central"])["id"]
        headers = admin_auth(client)
        portal_state(client).orchestrator.sweep()  # not downloaded yet, not expired: kept
        first = client.get(f"/api/jobs/{job_id}/result?format=long", headers=headers)
        assert first.status_code == 200

        portal_state(client).orchestrator.sweep()
        for path in ("result?format=long", "result?format=zip", "report"):
            gone = client.get(f"/api/jobs/{job_id}/{path}", headers=headers)
            assert gone.status_code == 404, path
            assert "downloaded, then discarded" in gone.json()["detail"]
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        assert job["state"] == "completed" and job["results_available"] is False
        text = _page_text(client, job_id)
        assert "The results were downloaded, then discarded from memory" in text
        assert "Long CSV" not in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # memory only
def test_results_expire_without_a_download(
    tmp_path: Path, database_url: str, demo_files: dict[str, Path]
) -> None:
    with _portal(tmp_path, database_url, result_expiry_minutes=0.0001) as client:
        job_id = _run_to_completion(client, demo_files["central"])["id"]
        time.sleep(0.05)  # 0.0001 min = 6 ms
        portal_state(client).orchestrator.sweep()
        gone = client.get(f"/api/jobs/{job_id}/result?format=zip", headers=admin_auth(client))
        assert gone.status_code == 404
        assert "not downloaded in time" in gone.json()["detail"]
        text = _page_text(client, job_id)
        assert "The results were not downloaded in time, and discarded from memory" in text


# ------------------------------------------------------------------ states


def test_the_transition_table() -> None:
    assert FINAL == {"completed", "failed", "cancelled", "interrupted"}
    assert ACTIVE == {"waiting", "running", "partial"}
    for state, moves in TRANSITIONS.items():
        assert moves <= set(TRANSITIONS), state
        if state in FINAL:
            assert not moves
            for target in TRANSITIONS:
                with pytest.raises(InvalidTransition, match=f"is {state}; it cannot become"):
                    advance(Job(id=1, state=state, message=""), to=JobState(target))

    job = Job(id=7, state="completed", message="done")
    with pytest.raises(InvalidTransition, match="job 7 is completed; it cannot become running"):
        advance(job, to=JobState.RUNNING)
    assert job.state == "completed" and job.message == "done"

    for source, wanted in (("created", "running"), ("created", "completed"), ("waiting", "failed")):
        with pytest.raises(InvalidTransition):
            advance(Job(id=1, state=source, message=""), to=JobState(wanted))

    job = Job(id=2, state="created", message="")
    advance(job, to=JobState.WAITING, message="central's data is in")
    assert (job.state, job.message) == ("waiting", "central's data is in")
    advance(job, to=JobState.RUNNING)
    assert job.state == "running" and job.started_at is not None and job.finished_at is None
    advance(job, to=JobState.COMPLETED, message="2 imputed datasets")
    assert job.finished_at is not None and job.message == "2 imputed datasets"

    interrupted = Job(id=3, state="running", message="")
    advance(interrupted, to=JobState.INTERRUPTED, message="central restarted")
    assert interrupted.state == "interrupted" and interrupted.finished_at is not None


def test_secure_aggregation_needs_two_remote_sites_and_summed_replies(central: TestClient) -> None:
    """Refused when the job is defined, naming the parameter and saying why."""
    one_site = central.post(
        "/api/jobs",
        json=_job(algorithm="SIMICE", parameters={"secure_aggregation": True}),
        headers=admin_auth(central),
    )
    assert one_site.status_code == 422, one_site.text
    body = one_site.json()
    assert body["field"] == "param_secure_aggregation"
    assert "at least two remote sites" in body["detail"]
    averaged = central.post(
        "/api/jobs",
        json=_job(algorithm="AVGMMICE", parameters={"secure_aggregation": True}),
        headers=admin_auth(central),
    )
    assert averaged.status_code == 422 and "secure_aggregation" in averaged.json()["detail"]


def test_a_job_without_chains_has_no_chains_csv(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    lines = demo_files["central"].read_text().splitlines()
    smoker = lines[0].split(",").index("smoker")
    complete = [lines[0]] + [r for r in lines[1:] if r.split(",")[smoker] not in ("", "NA")]
    job = _create(
        central, algorithm="IMI", targets=[{"column": "bmi", "type": "gaussian"}], parameters={}
    )
    status, body = _upload(central, job["id"], ("\n".join(complete) + "\n").encode())
    assert status == 200, body
    headers = admin_auth(central)
    done = wait_for_state(central, job["id"], headers)
    assert done["state"] == "completed", done["message"]
    got = central.get(f"/api/jobs/{job['id']}/result?format=chains", headers=headers)
    assert got.status_code == 404
    assert "ran IMI, which has no chains" in got.text and "IMICE" in got.text
    assert "traces" not in central.get(f"/api/jobs/{job['id']}/report", headers=headers).json()


# ------------------------------------------------------------------ column roles


def test_a_job_with_column_roles_runs_and_writes_text_back(central: TestClient) -> None:
    """A carried ID and a text factor: the roles are stored and listed, central's file is
    coded by the job's levels, and the result writes both back as they were read."""
    rows = [
        f"P{i:03d},{('lo', 'mid', 'hi')[i % 3]},{20 + i % 17},{'' if i % 5 == 0 else 1 + i % 4}"
        for i in range(60)
    ]
    content = ("id,grade,age,score\n" + "\n".join(rows) + "\n").encode()
    job = _create(
        central,
        algorithm="IMI",
        columns=["id", "grade", "age", "score"],
        targets=[{"column": "score", "type": "gaussian"}],
        roles={"factors": {"grade": ["lo", "mid", "hi"]}, "carried": ["id"]},
        parameters={},
    )
    assert job["roles"] == {"factors": {"grade": ["lo", "mid", "hi"]}, "carried": ["id"]}
    assert job["targets"][0]["index"] == 3  # among the modelled columns: grade, age, score
    definition = central.get(f"/api/jobs/{job['id']}/definition", headers=admin_auth(central))
    like = _create(central, **definition.json())
    assert like["roles"] == job["roles"] and like["targets"] == job["targets"]

    status, body = _upload(central, job["id"], content)
    assert status == 200, body
    done = wait_for_state(central, job["id"], admin_auth(central))
    assert done["state"] == "completed", done
    long = central.get(f"/api/jobs/{job['id']}/result?format=long", headers=admin_auth(central))
    lines = long.text.splitlines()
    assert lines[0] == ".imp,.id,id,grade,age,score"
    assert [line.split(",")[2:4] for line in lines[1:61]] == [r.split(",")[:2] for r in rows]
    assert [line.split(",")[2:4] for line in lines[-60:]] == [r.split(",")[:2] for r in rows]


@pytest.mark.parametrize(
    ("roles", "words"),
    [
        ({"factors": {"grade": ["lo"]}}, "factor column 'grade': give at least two levels"),
        (
            {"factors": {"grade": [f"g{k}" for k in range(51)]}},
            "factor column 'grade': 51 levels, at most 50",
        ),
        ({"carried": ["id"], "predictors": {"score": ["id"]}}, "column 'id' is carried"),
        ({"carried": ["weight"]}, "column 'weight' is not one of"),
    ],
)
def test_bad_column_roles_are_refused_naming_the_column(
    central: TestClient, roles: dict[str, Any], words: str
) -> None:
    response = central.post(
        "/api/jobs",
        json=_job(
            algorithm="SIMI",
            columns=["id", "grade", "age", "score"],
            targets=[{"column": "score", "type": "gaussian"}],
            roles=roles,
            parameters={},
        ),
        headers=admin_auth(central),
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "roles" and words in body["detail"], body


REGIONS = ["north", "east", "south", "west", "centre", "islands"]


def test_the_default_min_rows_counts_a_factors_dummies(central: TestClient) -> None:
    """The job's min_rows defaults to max(10, 3p), p its widest design: a 6-level factor is
    5 dummy columns there (p = 3 + 5 + 1), as a number one column (p = 5)."""
    job = {
        "algorithm": "IMI",
        "columns": ["x1", "x2", "x3", "region", "y"],
        "targets": [{"column": "y", "type": "gaussian"}],
        "parameters": {},
    }
    numeric = _create(central, **job)
    factor = _create(central, **job, roles={"factors": {"region": REGIONS}})

    assert numeric["parameters"]["min_rows"] == 15
    assert factor["parameters"]["min_rows"] == 27


def test_a_job_too_wide_by_its_factors_dummies_is_refused_naming_them(
    central: TestClient,
) -> None:
    """64 columns fit one message as numbers; as 62 factors of 50 levels the target's design
    is 3040 columns wide, and the refusal names the factors that make it so."""
    factors = {f"f{i}": [f"l{k}" for k in range(50)] for i in range(62)}
    job = _job(
        algorithm="SIMI",
        columns=["x", *factors, "y"],
        targets=[{"column": "y", "type": "gaussian"}],
        parameters={},
    )
    numeric = central.post("/api/jobs", json=job, headers=admin_auth(central))
    assert "makes replies" not in numeric.text, numeric.text

    refused = central.post(
        "/api/jobs", json={**job, "roles": {"factors": factors}}, headers=admin_auth(central)
    )

    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["field"] == "columns"
    assert "the design of target 'y' is 3040 columns wide: 'f0' as 49, 'f1' as 49" in body["detail"]
    assert "57 more" in body["detail"] and "use fewer columns or fewer levels" in body["detail"]
