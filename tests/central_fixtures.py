"""Fixtures for the central portal: a database of each kind, settings, a client, accounts."""

from __future__ import annotations

import atexit
import csv
import functools
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from portal_central.algorithms_store import sync_builtins
from portal_central.app import create_app
from portal_central.db import Database, upgrade
from portal_central.jobs.status import FINAL
from portal_central.settings import CentralSettings
from portal_central.state import CentralState

POSTGRES = os.environ.get("FIP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A PostgreSQL server where the tests may create and drop databases (scripts/test starts one)."""

ADMIN = {"username": "admin", "email": "admin@central.example", "password": "Central-key-2026"}
SITE_PASSWORD = "Site-pass-2026!"


EVERY_DATABASE = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
"""On a test (or as a module's ``pytestmark``) whose outcome depends on the database: it runs on
SQLite and on PostgreSQL (that run is in the ``postgres`` tier, see tests/conftest.py)."""


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or, for a test marked ``EVERY_DATABASE``
    in its ``postgresql`` run, a new PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    name = f"fip_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    server = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@functools.cache
def _migrated_sqlite() -> Path:
    """A SQLite database that the migrations brought to head and central's first start gave
    the built-in algorithms, made once per test run (a first start on an empty database is
    tested by tests/test_migrations.py, the PostgreSQL runs and every started ``fip central``)."""
    folder = Path(tempfile.mkdtemp(prefix="fip-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "central.db"
    upgrade(f"sqlite:///{path}")  # make_engine's engine is disposed: no -wal file is left
    database = Database(f"sqlite:///{path}")
    with database.session() as session:
        sync_builtins(session=session)
    database.dispose()
    return path


def _sqlite_at_head(database_url: str) -> None:
    """Where central would create a new SQLite database and migrate it to head, put a copy of
    one made so once: the same file, without running the migrations again for every test
    (their DDL costs about half a second). A database that exists is left as it is, and the
    migrations themselves are tested from an empty database (tests/test_migrations.py)."""
    if not database_url.startswith("sqlite:///"):
        return
    path = Path(database_url.removeprefix("sqlite:///"))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_sqlite(), path)


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> CentralSettings:
    """Settings for a test: cheap password hashing, no SMTP unless given, and request rate
    limits far above what one test sends from its one address (tests of the limits and of the
    sign-in waits set their own). A new SQLite database starts as a copy of one at head."""
    _sqlite_at_head(database_url)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "token_requests_per_minute": 10_000,
        "register_requests_per_hour": 10_000,
        **overrides,
    }
    return CentralSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def central_settings(tmp_path: Path, database_url: str) -> CentralSettings:
    return make_settings(tmp_path / "central", database_url)


@pytest.fixture
def central(central_settings: CentralSettings) -> Iterator[TestClient]:
    """The central portal in process (TestClient), its database upgraded, with one admin."""
    with TestClient(create_app(central_settings)) as client:
        create_admin(client)
        yield client


def create_admin(client: TestClient) -> None:
    from portal_central.accounts import service

    state = client.app.state.fip  # type: ignore[attr-defined]
    with state.database.session() as session:
        service.create_admin(session=session, passwords=state.passwords, **ADMIN)


def token(client: TestClient, username: str, password: str) -> str:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    access: str = response.json()["access_token"]
    return access


def bearer(access: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access}"}


def admin_headers(client: TestClient) -> dict[str, str]:
    return bearer(token(client, ADMIN["username"], ADMIN["password"]))


def register_site(client: TestClient, username: str = "north", **fields: str) -> int:
    body = {
        "username": username,
        "email": f"{username}@hospital.example",
        "institution": f"{username.capitalize()} Hospital",
        "password": SITE_PASSWORD,
        **fields,
    }
    response = client.post("/api/register", json=body)
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id


def chained_algorithm(job: dict[str, Any]) -> str:
    """SIMICE for a job with sites or a comparison; for one on central's data alone IMICE, its
    central-only twin: a pooled job with no site is refused (``checks.sites_problem``)."""
    return "SIMICE" if job.get("participants") or job.get("compare") else "IMICE"


def approved_site(client: TestClient, username: str = "north") -> tuple[int, str]:
    """Register and approve a site user; returns (user id, site_id)."""
    user_id = register_site(client, username)
    response = client.post(f"/api/users/{user_id}/approve", headers=admin_headers(client))
    assert response.status_code == 200, response.text
    site_id: str = response.json()["site_id"]
    return user_id, site_id


def browser_sign_in(client: TestClient, username: str, password: str) -> str:
    """Sign in through the form; returns the page's CSRF token for later forms."""
    response = client.post(
        "/sign-in", data={"username": username, "password": password}, follow_redirects=True
    )
    assert response.status_code == 200, response.text
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', response.text)
    assert found, "a signed-in page carries the CSRF token"
    return found.group(1)


# ---------------------------------------------------------------- algorithms, jobs and pages

MEANDRAW_DIR = Path(__file__).resolve().parents[1] / "docs" / "examples" / "MEANDRAW"
"""The third-party example package (a valid upload)."""


def portal_state(client: TestClient) -> CentralState:
    """The running portal's state (registry, runs, database) behind a TestClient."""
    state: CentralState = client.app.state.fip  # type: ignore[attr-defined]
    return state


def meandraw_files(version: str | None = None) -> dict[str, bytes]:
    """MEANDRAW's three files by name; ``version`` rewrites the version in params.json."""
    files = {
        name: (MEANDRAW_DIR / name).read_bytes()
        for name in ("MEANDRAWCentral.py", "MEANDRAWRemote.py", "params.json")
    }
    if version is not None:
        meta = json.loads(files["params.json"])
        meta["version"] = version
        files["params.json"] = json.dumps(meta, indent=2).encode()
    return files


def upload_parts(files: dict[str, bytes]) -> dict[str, tuple[str, bytes]]:
    """The multipart fields of an upload: ``files`` in the order central, remote, params."""
    return dict(zip(("central", "remote", "params"), files.items(), strict=True))


def upload_algorithm(client: TestClient, files: dict[str, bytes]) -> dict[str, Any]:
    """Upload an algorithm through the JSON API as the admin; it must be accepted."""
    response = client.post("/api/algorithms", files=upload_parts(files), headers=admin_auth(client))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_state(
    client: TestClient, job_id: int, headers: dict[str, str], *, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll GET /api/jobs/{id} until the job is in a final state (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    for pause in polling_pauses():
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if job["state"] in FINAL or time.monotonic() > deadline:
            return job
        time.sleep(pause)
    raise AssertionError("unreachable")


def polling_pauses(first: float = 0.005, longest: float = 0.1) -> Iterator[float]:
    """The pauses between a test's polls of a job running in its TestClient: short at first,
    then longer, so that polling (a request the job's own event loop serves) does not take
    the time the job needs."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 1.5, longest)


def htmx_headers(csrf: str) -> dict[str, str]:
    """What htmx sends with a request from a signed-in page."""
    return {"HX-Request": "true", "X-CSRF-Token": csrf}


_ADMIN_AUTH: weakref.WeakKeyDictionary[TestClient, dict[str, str]] = weakref.WeakKeyDictionary()


def admin_auth(client: TestClient) -> dict[str, str]:
    """``admin_headers``, signed in once per client (tokens last 15 minutes)."""
    if client not in _ADMIN_AUTH:
        _ADMIN_AUTH[client] = admin_headers(client)
    return _ADMIN_AUTH[client]


def edited_csv(
    source: Path,
    out: Path,
    *,
    complete: Sequence[str] = (),
    same_as: Mapping[str, str] | None = None,
) -> Path:
    """A copy of a CSV with the missing cells of ``complete`` columns set to 0, and each column
    of ``same_as`` made a copy of another (collinear: a fit with ridge 0 is singular)."""
    rows = list(csv.reader(source.read_text().splitlines()))
    header = rows[0]
    for row in rows[1:]:
        for name in complete:
            if row[header.index(name)] in ("", "NA"):
                row[header.index(name)] = "0"
        for name, other in (same_as or {}).items():
            row[header.index(name)] = row[header.index(other)]
    with out.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return out
