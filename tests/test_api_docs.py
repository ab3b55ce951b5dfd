"""The API documentation at /docs works offline: Swagger UI is served from this portal."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.site_fixtures import site_client, site_settings


def _check(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
        r"url: '([^']+)'", page.text
    )
    assert sources, "the page loads its scripts and styles"
    for source in sources:
        assert source.startswith("/"), f"/docs loads {source} from another host"
        assert client.get(source).status_code == 200, source
    paths = client.get("/openapi.json").json()["paths"]
    assert paths
    pages = [p for p in paths if not p.startswith("/api/") and p not in ("/health", "/metrics")]
    assert pages == [], "/docs lists the JSON API only, not the HTML pages and forms"


def test_central_docs_are_served_locally(central: TestClient) -> None:
    _check(central)


def test_site_docs_are_served_locally(tmp_path: Path) -> None:
    with site_client(site_settings(tmp_path), signed_in=False) as site:
        _check(site)
