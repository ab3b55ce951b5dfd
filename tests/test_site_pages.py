"""The site portal's pages and JSON API in process, signed out (no central anywhere).

The worker starts signed out and stays so: nothing here reaches a network beyond a refused
connection to 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from tests.site_fixtures import site_client, site_settings

UNREACHABLE = "https://127.0.0.1:1"
PAGES = ["/settings", "/jobs", "/ledger", "/approvals"]
HTMX = "/static/vendor/htmx-2.0.11.min.js"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[TestClient]:
    with site_client(site_settings(tmp_path / "site")) as client:
        yield client


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _field_error(html: str, field: str) -> str:
    """The message shown next to a form field (empty when none)."""
    soup = _soup(html)
    box = soup.select_one(f"#e-{field}")
    if box is None:
        return ""
    field_input = soup.select_one(f"#f-{field}")
    assert field_input is not None and field_input.get("aria-invalid") == "true"
    return box.get_text(strip=True)


def _status(site: TestClient) -> dict[str, object]:
    response = site.get("/api/status")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _configure(site: TestClient, central_url: str = UNREACHABLE, site_id: str = "north1") -> None:
    response = site.post("/api/settings", json={"central_url": central_url, "site_id": site_id})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- settings


def test_home_sends_a_signed_out_site_to_settings(site: TestClient) -> None:
    response = site.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/settings"


def test_the_settings_page_shows_the_signed_out_badge(site: TestClient) -> None:
    response = site.get("/settings")
    assert response.status_code == 200
    badges = _soup(response.text).select("#connection")
    assert badges, "the connection badge is on the page"
    for badge in badges:
        assert "connection-signed-out" in (badge.get("class") or [])
        assert "signed out" in badge.get_text()
    assert _status(site)["status"] == "signed out"
    assert _status(site)["signed_in"] is False


def test_the_settings_page_shows_its_help_as_text_and_the_policy_in_the_page(
    site: TestClient,
) -> None:
    soup = _soup(site.get("/settings").text)

    title = soup.select_one("title")
    assert title is not None and title.get_text().startswith("Settings ·"), "a short title"
    assert soup.select_one("main form[action='/settings/policy']"), "the policy form is shown"
    hint = soup.select_one("#h-ca_file")
    assert hint is not None
    assert "`" not in hint.get_text(), "no raw backticks"
    assert [c.get_text() for c in hint.select("code")] == ["ca.pem", "fip central dev-cert"]


@pytest.mark.parametrize(
    ("form", "field", "words"),
    [
        ({"central_url": "central.example.org", "site_id": "north1"}, "central_url", "https://"),
        ({"central_url": "ftp://central.example.org", "site_id": "north1"}, "central_url", "https"),
        ({"central_url": UNREACHABLE, "site_id": "no"}, "site_id", "4 to 16"),
        ({"central_url": UNREACHABLE, "site_id": "North_1!"}, "site_id", "lower-case"),
        (
            {"central_url": UNREACHABLE, "site_id": "north1", "ca_file": "/nonexistent/ca.pem"},
            "ca_file",
            "/nonexistent/ca.pem",
        ),
    ],
    ids=["url without scheme", "url not https", "short site_id", "bad site_id", "missing CA"],
)
def test_bad_settings_are_shown_next_to_their_field(
    site: TestClient, form: dict[str, str], field: str, words: str
) -> None:
    response = site.post("/settings", data=form)
    assert response.status_code == 422
    assert words in _field_error(response.text, field), response.text
    # Nothing was saved.
    status = _status(site)
    assert status["central_url"] == "" and status["site_id"] == ""


def test_good_settings_are_saved_and_say_to_sign_in(site: TestClient, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    response = site.post(
        "/settings",
        data={"central_url": f"{UNREACHABLE}/", "site_id": " North1 ", "ca_file": str(ca_file)},
    )
    assert response.status_code == 200, response.text
    assert "Now sign in" in response.text
    soup = _soup(response.text)
    assert soup.select("#f-central_url")[0].get("value") == UNREACHABLE
    assert soup.select("#f-site_id")[0].get("value") == "north1"
    assert soup.select("#f-password"), "the sign-in form is offered"
    status = _status(site)
    assert status["central_url"] == UNREACHABLE
    assert status["site_id"] == "north1"
    assert status["signed_in"] is False and status["status"] == "signed out"


_RULES = {
    "preset": "custom",
    "min_rows": "25",
    "max_params_per_row": "0.2",
    "min_level_count": "5",
    "min_sites": "3",
    "max_newton_rounds": "30",
    "allowed_columns": "",
    "denied_columns": "postcode, name",
}


def test_the_policy_is_shown_set_by_hand_and_kept(site: TestClient, tmp_path: Path) -> None:
    shown = _soup(site.get("/settings").text)
    assert shown.select_one("#f-min_rows") is not None
    assert shown.select_one("#f-min_rows").get("value") == "10"  # type: ignore[union-attr]

    saved = site.post("/settings/policy", data=_RULES)

    assert saved.status_code == 200, saved.text
    assert "Policy saved" in saved.text
    policy = site.get("/api/policy").json()
    assert policy["min_rows"] == 25 and policy["max_params_per_row"] == 0.2
    assert policy["denied_columns"] == ["postcode", "name"] and policy["preset"] == "custom"
    # The site's jobs use it from now on.
    state = site.app.state.site  # type: ignore[attr-defined]
    assert state.jobs.policy.min_sites == 3


def test_a_preset_replaces_every_rule(site: TestClient) -> None:
    saved = site.post("/settings/policy", data={**_RULES, "preset": "datashield"})

    assert saved.status_code == 200, saved.text
    policy = site.get("/api/policy").json()
    assert (policy["preset"], policy["min_rows"], policy["min_level_count"]) == ("datashield", 3, 3)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("min_rows", "ten", "min_rows must be a whole number"),
        ("max_params_per_row", "2", "max_params_per_row must be a number in (0, 1]"),
        ("max_params_per_row", "a third", "max_params_per_row must be a number in (0, 1]"),
        ("max_newton_rounds", "0", "max_newton_rounds must be 1 or more"),
    ],
)
def test_a_bad_rule_is_named_and_nothing_is_lost(
    site: TestClient, field: str, value: str, words: str
) -> None:
    refused = site.post("/settings/policy", data={**_RULES, field: value})

    assert refused.status_code == 422
    assert words in _field_error(refused.text, field), refused.text
    kept = _soup(refused.text).select_one("#f-denied_columns")
    assert kept is not None and kept.get("value") == "postcode, name"  # what was typed stays
    assert site.get("/api/policy").json()["min_rows"] == 10  # nothing was saved


def test_the_policy_through_the_json_api(site: TestClient) -> None:
    preset = site.put("/api/policy", json={"preset": "nvflare"})
    rules = site.put("/api/policy", json={"rules": {"min_rows": 50, "denied_columns": ["id"]}})
    bad = site.put("/api/policy", json={"rules": {"min_rows": -1}})
    unknown = site.put("/api/policy", json={"preset": "lenient"})

    assert preset.status_code == 200 and preset.json()["min_level_count"] == 10
    assert rules.status_code == 200 and rules.json()["denied_columns"] == ["id"]
    assert bad.status_code == 422 and "min_rows" in bad.json()["detail"]
    assert (
        unknown.status_code == 422 and "not one of default, datashield" in unknown.json()["detail"]
    )
    assert site.get("/api/policy").json()["min_rows"] == 50


def test_settings_through_the_json_api(site: TestClient) -> None:
    response = site.post(
        "/api/settings", json={"central_url": "https://central.example.org", "site_id": "south2"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["site_id"] == "south2"
    status = _status(site)
    assert status["central_url"] == "https://central.example.org"
    assert status["site_id"] == "south2"
    assert status["signed_in"] is False

    refused = site.post("/api/settings", json={"central_url": "nope", "site_id": "south2"})
    assert refused.status_code == 422
    assert "https://" in refused.json()["detail"]
    assert _status(site)["central_url"] == "https://central.example.org"


# ---------------------------------------------------------------- sign-in


def test_sign_in_to_an_unreachable_central_says_so(site: TestClient) -> None:
    _configure(site)
    response = site.post("/api/sign-in", json={"username": "north", "password": "Site-pass-1!"})
    assert response.status_code >= 400 and response.status_code != 500, response.text
    detail = response.json()["detail"]
    assert "cannot be reached" in detail and UNREACHABLE in detail
    assert _status(site)["signed_in"] is False

    page = site.post("/sign-in", data={"username": "north", "password": "Site-pass-1!"})
    assert page.status_code != 500
    assert page.status_code >= 400
    alerts = " ".join(a.get_text() for a in _soup(page.text).select(".alert-error"))
    assert "cannot be reached" in alerts
    assert "Site-pass-1!" not in page.text, "the password is never echoed"
    assert _soup(page.text).select("#f-username")[0].get("value") == "north"


def test_sign_in_before_settings_says_what_is_missing(site: TestClient) -> None:
    response = site.post("/api/sign-in", json={"username": "north", "password": "x"})
    assert response.status_code == 400
    assert "Settings" in response.json()["detail"]


# ---------------------------------------------------------------- cross-site requests


@pytest.mark.parametrize(
    ("path", "form", "body"),
    [
        ("/settings", {"central_url": "https://evil.example", "site_id": "evil1"}, None),
        ("/sign-in", {"username": "a", "password": "b"}, None),
        ("/sign-out", {}, None),
        ("/api/settings", None, {"central_url": "https://evil.example", "site_id": "evil1"}),
        ("/approvals/abc/withdraw", {}, None),
    ],
)
def test_a_cross_site_post_is_refused(
    site: TestClient, path: str, form: dict[str, str] | None, body: dict[str, str] | None
) -> None:
    _configure(site)
    evil = {"Origin": "http://evil.example"}
    response = site.post(path, headers=evil, data=form, json=body)
    assert response.status_code == 403
    assert "cross-site" in response.json()["detail"]
    assert _status(site)["central_url"] == UNREACHABLE


def test_a_same_origin_post_is_accepted(site: TestClient) -> None:
    response = site.post(
        "/settings",
        data={"central_url": UNREACHABLE, "site_id": "north1"},
        headers={"Origin": "http://127.0.0.1:8001"},
    )
    assert response.status_code == 200, response.text
    assert _status(site)["site_id"] == "north1"


# ---------------------------------------------------------------- the other pages


def test_the_jobs_page_while_signed_out_says_why_it_is_empty(site: TestClient) -> None:
    response = site.get("/jobs")
    assert response.status_code == 200
    alerts = " ".join(a.get_text() for a in _soup(response.text).select(".alert-error"))
    assert "Settings" in alerts

    _configure(site)
    response = site.get("/jobs")
    assert response.status_code == 200
    alerts = " ".join(a.get_text() for a in _soup(response.text).select(".alert-error"))
    assert "not signed in" in alerts

    api = site.get("/api/jobs")
    assert api.status_code != 500 and api.status_code >= 400
    assert "not signed in" in api.json()["detail"]


def test_the_ledger_and_approvals_pages_show_their_empty_states(site: TestClient) -> None:
    ledger = site.get("/ledger")
    assert ledger.status_code == 200
    assert "Nothing has been sent yet" in _soup(ledger.text).select(".empty")[0].get_text()
    assert site.get("/api/ledger").json() == []

    approvals = site.get("/approvals")
    assert approvals.status_code == 200
    assert "No approvals" in _soup(approvals.text).select(".empty")[0].get_text()


def test_pages_use_the_vendored_htmx_and_no_external_host(site: TestClient) -> None:
    assert site.get(HTMX).status_code == 200
    css = site.get("/static/style.css")
    assert css.status_code == 200
    assert "http:" not in css.text and "https:" not in css.text and "@import" not in css.text
    for page in PAGES:
        response = site.get(page)
        assert response.status_code == 200, page
        soup = _soup(response.text)
        scripts = [tag.get("src") for tag in soup.find_all("script") if tag.get("src")]
        assert HTMX in scripts, page
        for tag in soup.find_all(True):
            for attribute in ("src", "href", "action", "sse-connect", "hx-get", "hx-post"):
                value = tag.get(attribute)
                if not isinstance(value, str):
                    continue
                parts = urlsplit(value)
                assert not parts.scheme and not parts.netloc, (page, attribute, value)
                assert value.startswith(("/", "#")), (page, attribute, value)
