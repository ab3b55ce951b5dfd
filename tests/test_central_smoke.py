"""The central portal starts on each database and the first flows work."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.central_fixtures import (
    EVERY_DATABASE,
    SITE_PASSWORD,
    approved_site,
    bearer,
    token,
)

pytestmark = EVERY_DATABASE


def test_health_and_approval_flow(central: TestClient) -> None:
    assert central.get("/health").json() == {"status": "ok", "database": "ok", "sites_online": 0}
    _, site_id = approved_site(central)
    access = token(central, "north", SITE_PASSWORD)
    me = central.get("/api/me", headers=bearer(access)).json()
    assert me["site_id"] == site_id
