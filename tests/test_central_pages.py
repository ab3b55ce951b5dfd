"""The central portal's HTML pages: forms, sign-in cookie, admin pages, HTMX fragments, CSRF.

The pages do not depend on the kind of database (the accounts tests run on both), so these run
on SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from portal_central.app import create_app
from portal_central.deps import SESSION_COOKIE
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_headers,
    approved_site,
    browser_sign_in,
    create_admin,
    htmx_headers,
    make_settings,
    register_site,
)

HTMX = "/static/vendor/htmx-2.0.11.min.js"
CENTRAL_URL = "http://127.0.0.1:8443"


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[TestClient]:
    """The central portal on SQLite, with one admin; nobody signed in."""
    settings = make_settings(tmp_path / "central", f"sqlite:///{tmp_path / 'central.db'}")
    with TestClient(create_app(settings)) as client:
        create_admin(client)
        yield client


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _one(soup: BeautifulSoup | Tag, selector: str) -> Tag:
    found = soup.select(selector)
    assert len(found) == 1, f"{selector}: {len(found)} matches"
    return found[0]


def _value(soup: BeautifulSoup, name: str) -> str:
    value = _one(soup, f"input[name={name}]").get("value", "")
    assert isinstance(value, str)
    return value


def _text(tag: Tag) -> str:
    return " ".join(tag.get_text(" ").split())


def _status(portal: TestClient, user_id: int) -> tuple[str, str | None]:
    users = portal.get("/api/users", headers=admin_headers(portal)).json()
    user = next(u for u in users if u["id"] == user_id)
    return user["status"], user["site_id"]


def _set_cookie(response: httpx2.Response) -> SimpleCookie:
    headers = response.headers.get_list("set-cookie")
    found = [v for v in headers if v.startswith(f"{SESSION_COOKIE}=")]
    assert len(found) == 1, headers
    cookie = SimpleCookie()
    cookie.load(found[0])
    return cookie


# ---------------------------------------------------------------- registration and sign-in


def test_register_form_keeps_the_values_and_shows_the_error_inline(portal: TestClient) -> None:
    typed = {
        "username": "north",
        "email": "not-an-email",
        "institution": "North Hospital",
        "password": SITE_PASSWORD,
    }

    response = portal.post("/register", data=typed)

    assert response.status_code == 422
    soup = _soup(response.text)
    assert _value(soup, "username") == "north"
    assert _value(soup, "email") == "not-an-email"
    assert _value(soup, "institution") == "North Hospital"
    assert _value(soup, "password") == ""
    assert SITE_PASSWORD not in response.text, "the password is never sent back"
    assert "email address" in _text(_one(soup, "#e-email"))
    assert soup.select("p.error") == [_one(soup, "#e-email")], "only the email field is wrong"
    email = _one(soup, "input[name=email]")
    assert email.get("aria-invalid") == "true", email
    assert email.get("aria-describedby") == "e-email", email


REGISTER_ERRORS: list[tuple[dict[str, str], str, str, int]] = [
    # (changes to a valid registration, the field, words of its message, status code)
    ({"password": "short"}, "password", "at least 10 characters", 422),
    ({"password": "North-pass-2026"}, "password", "username", 422),
    ({"username": "No Spaces"}, "username", "3 to 32 characters", 422),
    ({"institution": ""}, "institution", "institution", 422),
    ({"username": "admin"}, "username", "taken", 409),
]


def test_each_register_error_shows_at_its_field(portal: TestClient) -> None:
    for changes, field, words, status in REGISTER_ERRORS:
        typed = {
            "username": "north",
            "email": "north@hospital.example",
            "institution": "North Hospital",
            "password": SITE_PASSWORD,
            **changes,
        }

        response = portal.post("/register", data=typed)

        assert response.status_code == status, changes
        soup = _soup(response.text)
        assert words in _text(_one(soup, f"#e-{field}")), changes
        assert len(soup.select("p.error")) == 1, changes
        for name in ("username", "email", "institution"):
            assert _value(soup, name) == typed[name], changes
    pending = portal.get("/api/users?status=pending", headers=admin_headers(portal)).json()
    assert pending == [], "nothing was created"


def test_register_fields_are_required_and_described(portal: TestClient) -> None:
    soup = _soup(portal.get("/register").text)

    for name in ("username", "email", "institution", "password"):
        field = _one(soup, f"input[name={name}]")
        assert field.has_attr("required"), field
        known = {"id", "name", "type", "value", "autocomplete", "required", "aria-describedby"}
        assert set(field.attrs) <= known, field
    assert _one(soup, "input[name=username]").get("aria-describedby") == "h-username"


def test_a_registration_says_it_waits_for_approval(portal: TestClient) -> None:
    response = portal.post(
        "/register",
        data={
            "username": "north",
            "email": "north@hospital.example",
            "institution": "North Hospital",
            "password": SITE_PASSWORD,
        },
    )

    assert response.status_code == 201
    main = _one(_soup(response.text), "main")
    assert "waiting for approval" in _text(main)
    assert "north@hospital.example" in _text(main)
    assert "You cannot sign in until then" in _text(main)


def test_a_refused_sign_in_shows_why_and_keeps_the_username(
    portal: TestClient,
) -> None:
    response = portal.post("/sign-in", data={"username": "admin", "password": "Wrong-pass-99"})

    assert response.status_code == 401
    soup = _soup(response.text)
    assert _text(_one(soup, "[role=alert]")) == "wrong username or password"
    assert _value(soup, "username") == "admin"
    assert _value(soup, "password") == ""
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    register_site(portal, "north")
    pending = portal.post("/sign-in", data={"username": "north", "password": SITE_PASSWORD})
    assert pending.status_code == 403
    assert "waiting for an admin's approval" in _text(_one(_soup(pending.text), "[role=alert]"))


def test_sign_in_sets_an_http_only_same_site_cookie_and_stays_on_this_site(
    portal: TestClient,
) -> None:
    response = portal.post(
        "/sign-in",
        data={**{k: ADMIN[k] for k in ("username", "password")}, "next": "/admin/outbox"},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/admin/outbox"
    morsel = _set_cookie(response)[SESSION_COOKIE]
    assert morsel.value
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert not morsel["secure"], "no Secure flag without TLS"
    assert morsel["path"] == "/"
    home = portal.get("/", follow_redirects=False)
    assert home.status_code == 303
    assert home.headers["location"] == "/jobs", "everyone lands on Jobs"
    for target in ("//evil.example/", "https://evil.example/"):
        elsewhere = portal.post(
            "/sign-in",
            data={"username": ADMIN["username"], "password": ADMIN["password"], "next": target},
            follow_redirects=False,
        )
        assert elsewhere.headers["location"] == "/", f"no redirect to another site: {target}"


def test_anonymous_users_are_sent_to_sign_in(portal: TestClient) -> None:
    home = portal.get("/", follow_redirects=False)
    admin = portal.get("/admin/users", follow_redirects=False)
    account = portal.get("/account", follow_redirects=False)

    assert home.status_code == 303
    assert home.headers["location"] == "/sign-in"
    assert admin.status_code == 303
    assert admin.headers["location"] == "/sign-in?next=/admin/users"
    assert account.status_code == 303
    assert account.headers["location"].startswith("/sign-in")


def test_sign_out_clears_the_cookie(portal: TestClient) -> None:
    csrf = browser_sign_in(portal, ADMIN["username"], ADMIN["password"])
    assert portal.get("/admin/users", follow_redirects=False).status_code == 200
    forged = portal.post("/sign-out", data={"csrf_token": "0" * 64}, follow_redirects=False)
    assert forged.status_code == 403, "signing out is a form like any other: CSRF-checked"
    assert SESSION_COOKIE in portal.cookies

    response = portal.post("/sign-out", data={"csrf_token": csrf}, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in"
    morsel = _set_cookie(response)[SESSION_COOKIE]
    assert morsel.value in ("", '""')
    assert morsel["max-age"] == "0"
    assert SESSION_COOKIE not in portal.cookies
    after = portal.get("/admin/users", follow_redirects=False)
    assert after.status_code == 303
    assert after.headers["location"].startswith("/sign-in")


# ---------------------------------------------------------------- admin pages


def test_the_users_page_lists_a_pending_user_with_approve_and_reject(portal: TestClient) -> None:
    user_id = register_site(portal, "north")
    browser_sign_in(portal, ADMIN["username"], ADMIN["password"])

    response = portal.get("/admin/users")

    assert response.status_code == 200
    soup = _soup(response.text)
    row = _one(soup, f"tr#user-{user_id}")
    assert "north" in _text(row) and "North Hospital" in _text(row)
    assert "pending" in _text(_one(row, ".status"))
    buttons = {_text(b): b for b in row.select("td.actions > button")}
    assert set(buttons) == {"Approve", "Reject"}
    assert buttons["Approve"]["hx-post"] == f"/admin/users/{user_id}/approve?tab=pending"
    assert buttons["Reject"]["hx-post"] == f"/admin/users/{user_id}/reject?tab=pending"
    more = {_text(b) for b in row.select("details.more button")}
    assert more == {"Send password reset link", "Change email", "Delete account"}
    assert buttons["Approve"]["hx-target"] == f"#user-{user_id}"
    assert buttons["Reject"].get("hx-confirm"), "rejecting asks first"
    assert "1" in _text(_one(soup, "nav.tabs a[aria-current=page]"))
    assert "admin" not in [_text(r.select("td")[0]) for r in soup.select("tbody tr")]


def test_an_htmx_approval_answers_with_the_updated_row(portal: TestClient) -> None:
    user_id = register_site(portal, "north")
    csrf = browser_sign_in(portal, ADMIN["username"], ADMIN["password"])

    response = portal.post(f"/admin/users/{user_id}/approve", headers=htmx_headers(csrf))

    assert response.status_code == 200, response.text
    assert "<html" not in response.text and "<body" not in response.text
    soup = _soup(response.text)
    tags = [child for child in soup.children if isinstance(child, Tag)]
    rows = [t for t in tags if not t.get("hx-swap-oob")]
    assert [t.name for t in rows] == ["tr"], "a single table row, not a page"
    assert {t["id"] for t in tags if t.get("hx-swap-oob")} >= {"count-pending", "pending-badge"}
    row = rows[0]
    assert row["id"] == f"user-{user_id}"
    status, site_id = _status(portal, user_id)
    assert status == "approved"
    assert site_id is not None
    assert _text(_one(row, "code")) == site_id
    assert _text(_one(row, ".status")) == "approved"
    assert site_id in _text(_one(row, "[role=status]")), "the notice repeats the site_id"
    assert [_text(b) for b in row.select("td.actions > button")] == ["Disable"]


def test_a_plain_form_approval_redirects_to_the_list(portal: TestClient) -> None:
    user_id = register_site(portal, "north")
    csrf = browser_sign_in(portal, ADMIN["username"], ADMIN["password"])

    response = portal.post(
        f"/admin/users/{user_id}/approve", data={"csrf_token": csrf}, follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/admin/users?status=approved"
    assert _status(portal, user_id)[0] == "approved"


def test_a_post_without_the_right_csrf_token_is_refused(portal: TestClient) -> None:
    user_id = register_site(portal, "north")
    csrf = browser_sign_in(portal, ADMIN["username"], ADMIN["password"])
    url = f"/admin/users/{user_id}/approve"

    for token in (None, "0" * 64, csrf[:-1]):
        headers = {"HX-Request": "true"} | ({"X-CSRF-Token": token} if token else {})
        htmx = portal.post(url, headers=headers)
        form = portal.post(url, data={"csrf_token": token} if token else {}, follow_redirects=False)

        assert htmx.status_code == 403, token
        alert = _text(_one(_soup(htmx.text), "[role=alert]"))
        assert "did not come from this portal" in alert, token
        assert htmx.headers["HX-Retarget"] == "#main"
        assert form.status_code == 403, token
        assert "did not come from this portal" in form.text, token
    assert _status(portal, user_id) == ("pending", None)


def test_a_site_user_cannot_reach_admin_pages_and_sees_its_site(portal: TestClient) -> None:
    user_id, site_id = approved_site(portal, "north")
    csrf = browser_sign_in(portal, "north", SITE_PASSWORD)

    users = portal.get("/admin/users", follow_redirects=False)
    outbox = portal.get("/admin/outbox", follow_redirects=False)
    approve = portal.post(f"/admin/users/{user_id}/disable", headers=htmx_headers(csrf))
    account = portal.get("/account")

    for response in (users, outbox, approve):
        assert response.status_code == 403
        assert "only admins may do this" in response.text
    assert _status(portal, user_id)[0] == "approved"
    assert portal.get("/", follow_redirects=False).headers["location"] == "/jobs"
    assert account.status_code == 200
    soup = _soup(account.text)
    assert _text(_one(soup, "h1")) == "My site"
    assert _text(soup.select("dl dd code")[0]) == site_id
    assert CENTRAL_URL in _text(soup)
    nav = [_text(a) for a in soup.select("header nav a")]
    assert "My site" in nav
    assert "Outbox" not in nav and "Sites & users" not in nav


def test_disabling_a_site_ends_its_browser_session(portal: TestClient) -> None:
    user_id, _ = approved_site(portal, "north")
    browser_sign_in(portal, "north", SITE_PASSWORD)
    assert portal.get("/account", follow_redirects=False).status_code == 200

    disabled = portal.post(f"/api/users/{user_id}/disable", headers=admin_headers(portal))

    assert disabled.status_code == 200, disabled.text
    after = portal.get("/account", follow_redirects=False)
    assert after.status_code == 303
    assert after.headers["location"].startswith("/sign-in")


def test_the_outbox_page_shows_the_approval_mail(portal: TestClient) -> None:
    browser_sign_in(portal, ADMIN["username"], ADMIN["password"])
    empty = _soup(portal.get("/admin/outbox").text)
    assert "The outbox is empty" in _text(_one(empty, ".empty"))
    _, site_id = approved_site(portal, "north")

    response = portal.get("/admin/outbox")

    assert response.status_code == 200
    soup = _soup(response.text)
    assert "No SMTP server is configured" in _text(_one(soup, "[role=status]"))
    mails = soup.select("article.mail")
    assert "New site registration" in _text(_one(mails[1], "header strong")), "told the admin"
    mail = mails[0]
    assert site_id in _text(_one(mail, "header strong"))
    assert "north@hospital.example" in _text(_one(mail, "header"))
    body = _one(mail, "pre").get_text()
    assert site_id in body
    assert CENTRAL_URL in body


def test_the_empty_pending_tab_says_what_to_do_next(portal: TestClient) -> None:
    browser_sign_in(portal, ADMIN["username"], ADMIN["password"])

    response = portal.get("/admin/users?status=pending")

    soup = _soup(response.text)
    assert not soup.select("table#users")
    empty = _one(soup, ".empty")
    assert "No registration is waiting" in _text(empty)
    assert _one(empty, "a")["href"] == "/register"
    assert f"{CENTRAL_URL}/register" in _text(empty)


# ---------------------------------------------------------------- assets


def _external(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("", "mailto") and not url.startswith("//"):
        return False
    return parts.hostname not in ("testserver", "127.0.0.1", "localhost")


def _check_assets(path: str, html: str) -> None:
    soup = _soup(html)
    scripts = [s.get("src") for s in soup.select("script[src]")]
    assert HTMX in scripts, path
    for tag in soup.find_all(True):
        for attribute in ("src", "href", "action", "hx-get", "hx-post", "sse-connect"):
            value = tag.get(attribute)
            if isinstance(value, str):
                assert not _external(value), f"{path}: <{tag.name} {attribute}={value!r}>"


def test_pages_use_the_vendored_htmx_and_nothing_from_another_host(portal: TestClient) -> None:
    anonymous = ["/sign-in", "/register"]
    for path in anonymous:
        response = portal.get(path)
        assert response.status_code == 200, path
        _check_assets(path, response.text)
    typed = {"username": "south", "email": "s@h.example", "institution": "South"}
    invalid = portal.post("/register", data=typed)
    assert invalid.status_code == 422
    _check_assets("/register (invalid)", invalid.text)
    registered = portal.post("/register", data={**typed, "password": SITE_PASSWORD})
    assert registered.status_code == 201
    _check_assets("/register (done)", registered.text)
    approved_site(portal, "north")
    browser_sign_in(portal, ADMIN["username"], ADMIN["password"])
    admin_pages = [f"/admin/users?status={s}" for s in ("pending", "approved", "rejected")]
    admin_pages += ["/admin/users?status=disabled", "/admin/outbox", "/jobs", "/jobs/new"]
    admin_pages += ["/algorithms", "/algorithms/SIMI", "/algorithms/NO-SUCH"]
    for path in admin_pages:
        response = portal.get(path)
        assert response.status_code in (200, 404), path
        _check_assets(path, response.text)
    portal.cookies.clear()
    browser_sign_in(portal, "north", SITE_PASSWORD)
    for path in ("/account", "/jobs", "/admin/users"):
        _check_assets(path, portal.get(path).text)


def test_static_files_are_served(portal: TestClient) -> None:
    htmx = portal.get(HTMX)
    sse = portal.get("/static/vendor/htmx-ext-sse-2.2.4.min.js")
    css = portal.get("/static/style.css")

    assert htmx.status_code == 200
    assert "javascript" in htmx.headers["content-type"]
    assert "htmx" in htmx.text and len(htmx.content) > 10_000
    assert sse.status_code == 200
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert portal.get("/static/no-such.js").status_code == 404
    assert portal.get("/static/%2e%2e/pyproject.toml").status_code == 404
