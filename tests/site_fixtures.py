"""The site portal in tests: cheap argon2, a local password, a client signed in with it.

Every test that drives a site portal signs in through here (in process with TestClient, or a
`fip site` process through ``tests.federation_env``), so that there is one way to do it.
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine

from portal_site.app import create_app
from portal_site.settings import SiteSettings
from portal_site.store import upgrade

LOCAL_PASSWORD = "Local-site-2026!"
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 64}
CHEAP_ARGON2_ENV = {"FIP_SITE_ARGON2_TIME_COST": "1", "FIP_SITE_ARGON2_MEMORY_KIB": "64"}
"""As central's tests do: the cheapest argon2, so that signing in costs nothing."""


@functools.cache
def _site_db_at_head() -> Path:
    """An empty site database that the migrations brought to head, made once per test run."""
    folder = Path(tempfile.mkdtemp(prefix="fip-site-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "site.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        upgrade(connection)
    engine.dispose()
    return path


def site_settings(
    data_dir: Path, *, password: str | None = LOCAL_PASSWORD, **values: Any
) -> SiteSettings:
    """Settings of an in-process site portal; ``password`` None: its first run asks for one.

    Where the portal would create its database and migrate it, a copy of one made so once is
    put first (as central's tests do, ``tests.central_fixtures.make_settings``): the same
    file, without the migrations' DDL for every test (about 20 ms of CPU). The migrations
    themselves run from an empty database in tests/test_site_migrations.py and in every
    started ``fip site``."""
    database = data_dir / "site.db"
    if not database.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the portal makes it
        shutil.copyfile(_site_db_at_head(), database)
    return SiteSettings(
        data_dir=data_dir,
        local_password=None if password is None else SecretStr(password),
        argon2_time_cost=CHEAP_ARGON2["argon2_time_cost"],
        argon2_memory_kib=CHEAP_ARGON2["argon2_memory_kib"],
        **values,
    )


def origin(settings: SiteSettings) -> str:
    """The address the portal answers at (it refuses any other Host)."""
    return f"http://127.0.0.1:{settings.port}"


@contextmanager
def site_client(settings: SiteSettings, *, signed_in: bool = True) -> Iterator[TestClient]:
    """A TestClient of the site portal; ``signed_in`` with a local bearer token."""
    with TestClient(create_app(settings), base_url=origin(settings)) as client:
        if signed_in:
            client.headers["Authorization"] = f"Bearer {local_token(client)}"
        yield client


def local_token(client: TestClient | httpx.Client, password: str = LOCAL_PASSWORD) -> str:
    """A bearer token for the site's JSON API (and pages), from its local password."""
    response = client.post("/api/local/token", json={"password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def browser_sign_in(client: TestClient, password: str = LOCAL_PASSWORD) -> str:
    """Sign in through the form as a browser does (a session cookie); the page's CSRF token."""
    response = client.post("/local/sign-in", data={"password": password, "next": "/settings"})
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "a signed-in page carries the CSRF token"
    return found.group(1)
