"""Central's answers to hostile or broken input and to a failing database: an unknown algorithm
file is a 404, huge and negative ids are a 422 naming the parameter, ``/health`` notices a
read-only database, non-finite parameters are refused by name, and a job whose state cannot be
written ends failed. The tests of ids, of /health and of a failing write run on SQLite and on
PostgreSQL (the databases answer them differently); the others on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from federation.cli import main
from federation.demo import COLUMNS
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    admin_auth,
    approved_site,
    browser_sign_in,
    htmx_headers,
    portal_state,
    wait_for_state,
)

HUGE_IDS = [2**63, 2**64 + 5, 2**31, -1, 0]
"""Past SQLite's and PostgreSQL's integers, past PostgreSQL's INTEGER, and not a row id."""


# ---------------------------------------------------------------- algorithm files


def test_an_unknown_algorithm_version_or_file_is_a_clear_404(central: TestClient) -> None:
    headers = admin_auth(central)
    simi = next(
        v for v in central.get("/api/algorithms", headers=headers).json() if v["name"] == "SIMI"
    )
    version = simi["version"]
    cases = {
        "/api/algorithms/NOPE/1.0.0/files/NOPECentral.py": "no algorithm named 'NOPE'",
        "/api/algorithms/SIMI/9.9.9/files/SIMIRemote.py": "SIMI has no version '9.9.9'",
        f"/api/algorithms/SIMI/{version}/files/other.py": f"SIMI {version} has no file 'other.py'",
    }

    for path, words in cases.items():
        response = central.get(path, headers=headers)

        assert response.status_code == 404, (path, response.text)
        assert words in response.json()["detail"], path
    fine = central.get(f"/api/algorithms/SIMI/{version}/files/SIMIRemote.py", headers=headers)
    assert fine.status_code == 200


# ---------------------------------------------------------------- ids


@EVERY_DATABASE
def test_huge_and_negative_ids_are_a_422_naming_the_parameter(central: TestClient) -> None:
    headers = admin_auth(central)
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    api = [
        ("GET", "/api/jobs/{}", "job_id"),
        ("POST", "/api/jobs/{}/cancel", "job_id"),
        ("POST", "/api/jobs/{}/retry", "job_id"),
        ("GET", "/api/jobs/{}/report", "job_id"),
        ("GET", "/api/jobs/{}/result", "job_id"),
        ("GET", "/api/jobs/{}/comparison", "job_id"),
        ("POST", "/api/users/{}/approve", "user_id"),
    ]
    pages = [
        ("GET", "/jobs/{}"),
        ("POST", "/jobs/{}/cancel"),
        ("GET", "/jobs/{}/result"),
        ("POST", "/admin/users/{}/approve"),
        ("POST", "/admin/users/{}/unlock"),
        ("POST", "/algorithms/SIMI/versions/{}/retire"),
    ]

    for number in HUGE_IDS:
        for method, path, field in api:
            response = central.request(method, path.format(number), headers=headers)
            assert response.status_code == 422, (path, number, response.text)
            assert response.json()["field"] == field
            assert field in response.json()["detail"]
        for method, path in pages:
            response = central.request(method, path.format(number), headers=htmx_headers(csrf))
            assert response.status_code == 422, (path, number, response.text)
    assert central.get("/api/jobs/2147483647", headers=headers).status_code == 404
    assert central.post("/api/users/2147483647/approve", headers=headers).status_code == 404


# ---------------------------------------------------------------- health


@contextmanager
def _read_only(engine: Engine) -> Iterator[None]:
    """Every new connection of ``engine`` read-only, as a database mounted read-only or a
    replica after a fail-over would be; the pool is emptied so that it takes effect now."""

    def read_only(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()
        connection.commit()  # a SET in a transaction rolled back would be undone

    event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()


@EVERY_DATABASE
def test_health_is_unhealthy_when_the_database_is_read_only(central: TestClient) -> None:
    engine = portal_state(central).database.engine
    assert central.get("/health").json()["status"] == "ok"

    with _read_only(engine):
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 1
        response = central.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert "read" in body["database"].lower() and "only" in body["database"].lower()
    healthy = central.get("/health")
    assert healthy.status_code == 200
    assert healthy.json()["status"] == "ok", "the check's write was rolled back, nothing stuck"


# ---------------------------------------------------------------- parameters


def _job_json(ridge: str) -> str:
    """A job's JSON with ``ridge`` written as given (NaN and Infinity are not valid JSON, but
    Python's parser, and so FastAPI's, accepts them)."""
    body = {
        "name": "ridge",
        "algorithm": "IMICE",
        "columns": list(COLUMNS),
        "targets": [{"column": "bmi", "type": "gaussian"}],
        "imputations": 2,
        "parameters": {"ridge": "RIDGE"},
        "seed": 3,
    }
    return json.dumps(body).replace('"RIDGE"', ridge)


@pytest.mark.parametrize("ridge", ["NaN", "Infinity", "1e308", "1e400", "1e10"])
def test_non_finite_or_absurd_parameters_are_refused_by_name(
    central: TestClient, ridge: str
) -> None:
    headers = {**admin_auth(central), "Content-Type": "application/json"}

    response = central.post("/api/jobs", content=_job_json(ridge), headers=headers)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "param_ridge"
    assert "parameter 'ridge'" in response.json()["detail"]
    assert central.get("/api/jobs", headers=headers).json() == []
    fine = central.post("/api/jobs", content=_job_json("0.01"), headers=headers)
    assert fine.status_code == 201, fine.text


# ---------------------------------------------------------------- a failed state write


@contextmanager
def _refusing_completed(engine: Engine) -> Iterator[None]:
    """A database that refuses to record any job as completed (a trigger), as a full disk or
    a lost connection would at that moment; every other write goes through."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_completed BEFORE UPDATE OF state ON jobs "
                    "WHEN NEW.state = 'completed' "
                    "BEGIN SELECT RAISE(ABORT, 'no space left on the device'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_completed() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.state = 'completed' THEN "
                    "RAISE EXCEPTION 'no space left on the device'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_completed BEFORE UPDATE ON jobs "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_completed()"
                )
            )
    yield


@EVERY_DATABASE
def test_a_job_whose_state_cannot_be_written_ends_failed(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    headers = admin_auth(central)
    approved_site(central, "north")  # not taking part: the job runs on central's rows alone
    body = json.loads(_job_json("0.001"))
    body["parameters"] = {
        "iteration_before_first_imputation": 2,
        "iteration_between_imputations": 1,
    }
    body["targets"] = [
        {"column": "bmi", "type": "gaussian"},
        {"column": "smoker", "type": "logistic"},
    ]
    created = central.post("/api/jobs", json=body, headers=headers)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    with _refusing_completed(portal_state(central).database.engine):
        upload = central.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", demo_files["central"].read_bytes(), "text/csv")},
            headers=headers,
        )
        assert upload.status_code == 200, upload.text
        done = wait_for_state(central, job_id, headers)

    assert done["state"] == "failed", done
    assert "could not record the state 'completed'" in done["message"]
    assert "no space left on the device" in done["message"]
    assert done["finished_at"] is not None
    assert done["results_available"] is False
    run = portal_state(central).store.view(job_id)
    assert run.data is None and run.result is None, "central holds nothing for a failed job"


@pytest.mark.parametrize("ridge", ["NaN", "Infinity", "1e308"])
def test_fip_simulate_refuses_a_non_finite_parameter_by_name(
    ridge: str,
    demo_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"

    code = main(
        [
            *("simulate", "--algorithm", "SIMI", "--central", str(demo_files["central"])),
            *("--site", str(demo_files["north"]), "--target", "bmi:gaussian"),
            *("--param", f"ridge={ridge}", "--out", str(out)),
        ]
    )

    assert code == 1
    assert "parameter 'ridge'" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir()), "nothing was written"


@pytest.mark.parametrize(
    ("path", "body", "answers"),
    [
        ("/sign-in", {"data": {"username": "admin", "password": "x"}}, "text/html"),
        ("/register", {"data": {"username": "evil"}}, "text/html"),
        ("/api/register", {"json": {"username": "evil"}}, "application/json"),
    ],
)
def test_a_post_another_web_site_made_the_browser_send_is_refused_unread(
    central: TestClient, path: str, body: dict[str, Any], answers: str
) -> None:
    """Sign-in and registration carry no session yet: only the Origin shows that a page of
    another site sent them. The refusal comes before the route reads the body."""
    refused = central.post(path, headers={"Origin": "https://evil.example"}, **body)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith(answers)
    assert "sent from another web site; refused" in refused.text
    assert refused.headers["X-Frame-Options"]  # the security headers wrap the refusal too
    with_origin = central.post(
        "/sign-in",
        data={"username": ADMIN["username"], "password": ADMIN["password"]},
        headers={"Origin": "http://testserver"},
    )
    assert with_origin.status_code in (200, 303)
