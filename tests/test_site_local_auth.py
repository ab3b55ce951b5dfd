"""The site portal answers only its own user: its host names, its local password, no framing.

In process with TestClient (no central anywhere), and, marked slow, as real processes: central
over TLS (HSTS) and a `fip site` on loopback (the Host check in front of uvicorn).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from portal_common.web import HostCheck, allowed_hosts, cross_site
from portal_site.local_auth import Throttle
from portal_site.state import SiteState
from tests.central_fixtures import make_settings
from tests.federation_env import Federation, start_federation, start_site_portal
from tests.processes import Process
from tests.site_fixtures import (
    CHEAP_ARGON2_ENV,
    LOCAL_PASSWORD,
    browser_sign_in,
    csrf_of,
    local_token,
    site_client,
    site_settings,
)

EVIL = "evil.example:9001"
UNREACHABLE = "https://127.0.0.1:1"
DIGEST = "ab" * 32
PAGES = ["/", "/settings", "/jobs", "/jobs/abc123", "/ledger", "/approvals"]
EVENTS = ["/events/status", "/jobs/abc123/events"]
API_READS = ["/api/status", "/api/jobs", "/api/jobs/abc123", "/api/ledger"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[TestClient]:
    """A site portal whose local password is set (from the settings), not signed in."""
    with site_client(site_settings(tmp_path / "site"), signed_in=False) as client:
        yield client


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One site portal for this module's tests that only read (and are refused): a request
    refused at the door changes nothing, so they need no portal of their own."""
    settings = site_settings(tmp_path_factory.mktemp("shared") / "site")
    with site_client(settings, signed_in=False) as client:
        yield client


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[TestClient]:
    """A site portal on its first run: no local password yet."""
    with site_client(site_settings(tmp_path / "site", password=None), signed_in=False) as client:
        yield client


def _state(client: TestClient) -> SiteState:
    state: SiteState = client.app.state.site  # type: ignore[attr-defined]
    return state


def _bearer(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {local_token(client)}"}


def _configure(client: TestClient) -> None:
    response = client.post(
        "/api/settings",
        json={"central_url": UNREACHABLE, "site_id": "north1"},
        headers=_bearer(client),
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- the Host header


@pytest.mark.parametrize("with_origin", [False, True], ids=["no Origin", "matching Origin"])
@pytest.mark.parametrize("path", ["/local/sign-in", *PAGES, *API_READS, *EVENTS, "/health"])
def test_a_request_for_a_foreign_host_is_refused(
    shared_site: TestClient, path: str, with_origin: bool
) -> None:
    headers = {"Host": EVIL, **({"Origin": f"http://{EVIL}"} if with_origin else {})}
    response = shared_site.get(path, headers={**headers, **_bearer(shared_site)})
    assert response.status_code == 421, (path, response.status_code)
    assert "does not answer for Host evil.example:9001" in response.text
    assert "FIP_SITE_ALLOWED_HOSTS" in response.text
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("with_origin", [False, True], ids=["no Origin", "matching Origin"])
def test_a_post_for_a_foreign_host_changes_nothing(site: TestClient, with_origin: bool) -> None:
    """DNS rebinding: evil.example now resolves to 127.0.0.1, its page posts to the portal."""
    _configure(site)
    headers = {"Host": EVIL, **({"Origin": f"http://{EVIL}"} if with_origin else {})}
    evil = {"central_url": "https://evil.example", "site_id": "evil1"}
    assert site.post("/settings", data=evil, headers=headers).status_code == 421
    assert site.post("/api/settings", json=evil, headers=headers).status_code == 421
    token = site.post("/api/local/token", json={"password": LOCAL_PASSWORD}, headers=headers)
    assert token.status_code == 421, "not even a token for a foreign host"
    status = site.get("/api/status", headers=_bearer(site)).json()
    assert (status["central_url"], status["site_id"]) == (UNREACHABLE, "north1")


def test_a_websocket_for_a_foreign_host_is_closed_before_it_opens() -> None:
    """The site portal has no WebSocket route of its own; the check covers them all the same."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    app = HostCheck(Starlette(routes=[WebSocketRoute("/ws", echo)]), allowed=allowed_hosts(8001))
    with TestClient(app, base_url="http://127.0.0.1:8001") as client:
        # (TestClient's WebSockets ignore base_url: the Host header is given here)
        with client.websocket_connect("/ws", headers={"Host": "127.0.0.1:8001"}) as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "hello"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/ws", headers={"Host": EVIL}),
        ):
            pass
        assert closed.value.code == 1008


@pytest.mark.parametrize("host", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001"])
def test_the_loopback_names_at_the_portals_port_are_answered(
    shared_site: TestClient, host: str
) -> None:
    assert shared_site.get("/health", headers={"Host": host}).status_code == 200
    wrong_port = {"Host": host.replace("8001", "8002")}
    assert shared_site.get("/health", headers=wrong_port).status_code == 421


def test_allowed_hosts_add_names_and_bad_ones_are_refused_by_name(tmp_path: Path) -> None:
    settings = site_settings(tmp_path, allowed_hosts="site.lan, localhost:8002")
    with site_client(settings, signed_in=False) as client:
        for host in ("site.lan:8001", "SITE.LAN:8001", "localhost:8002", "127.0.0.1:8001"):
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
        assert client.get("/health", headers={"Host": "site.lan:8002"}).status_code == 421
    with pytest.raises(ValueError, match="FIP_SITE_ALLOWED_HOSTS: 'https://site.lan'"):
        site_settings(tmp_path, allowed_hosts="https://site.lan")


def test_an_origin_is_checked_against_the_allowed_hosts_not_the_host_header(
    site: TestClient,
) -> None:
    """Another of the portal's own names passes; any other origin, even on 127.0.0.1, not."""
    bearer = _bearer(site)
    body = {"central_url": UNREACHABLE, "site_id": "north1"}
    same = site.post(
        "/api/settings", json=body, headers={**bearer, "Origin": "http://localhost:8001"}
    )
    assert same.status_code == 200, same.text
    for foreign in ("http://127.0.0.1:9999", "http://evil.example:8001", "null"):
        other = {**body, "site_id": "evil1"}
        refused = site.post("/api/settings", json=other, headers={**bearer, "Origin": foreign})
        assert refused.status_code == 403, foreign
        assert "cross-site" in refused.json()["detail"]
    assert site.get("/api/status", headers=bearer).json()["site_id"] == "north1"


# ---------------------------------------------------------------- security headers


def _assert_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["X-Frame-Options"] == "DENY"
    policy = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin", "no-referrer would make Origin null"


def test_site_pages_and_api_carry_the_security_headers(site: TestClient) -> None:
    bearer = _bearer(site)
    for path in ("/local/sign-in", "/settings", "/jobs", "/api/status", "/static/style.css"):
        response = site.get(path, headers=bearer)
        assert response.status_code == 200, path
        _assert_security_headers(response)
        assert "Strict-Transport-Security" not in response.headers, "the site is plain HTTP"


def test_central_pages_carry_the_security_headers(tmp_path: Path) -> None:
    from portal_central.app import create_app

    settings = make_settings(tmp_path / "central", f"sqlite:///{tmp_path / 'central.db'}")
    with TestClient(create_app(settings)) as central:
        for path in ("/sign-in", "/register", "/health"):
            response = central.get(path)
            assert response.status_code == 200, path
            _assert_security_headers(response)
            assert "Strict-Transport-Security" not in response.headers, "not over TLS"


def test_the_api_docs_allow_only_swagger_uis_own_inline_script(site: TestClient) -> None:
    response = site.get("/docs")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "'sha256-" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]


# ---------------------------------------------------------------- no local session: no change


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/settings", {"central_url": "https://evil.example", "site_id": "evil1"}),
        ("/sign-in", {"username": "a", "password": "b"}),
        ("/sign-out", {}),
        ("/jobs/abc123/approve", {}),
        ("/jobs/abc123/start", {}),
        ("/jobs/abc123/cancel", {}),
        (f"/approvals/{DIGEST}/withdraw", {}),
        ("/local/sign-out", {}),
    ],
)
def test_a_form_post_without_the_local_session_is_sent_to_sign_in(
    site: TestClient, path: str, form: dict[str, str]
) -> None:
    _configure(site)
    _state(site).store.approve(digest=DIGEST, name="MEANDRAW", version="1.0.0")
    response = site.post(path, data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/local/sign-in"
    htmx = site.post(path, data=form, headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"] == "/local/sign-in"
    _assert_unchanged(site)


def test_an_upload_without_the_local_session_is_refused(site: TestClient) -> None:
    _configure(site)
    files = {"file": ("north.csv", b"age,bmi\n1,2\n")}
    response = site.post("/jobs/abc123/data", files=files, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/local/sign-in"
    assert site.post("/api/jobs/abc123/data", files=files).status_code == 401
    _assert_unchanged(site)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/settings", {"central_url": "https://evil.example", "site_id": "evil1"}),
        ("/api/sign-in", {"username": "a", "password": "b"}),
        ("/api/jobs/abc123/start", None),
        ("/api/jobs/abc123/cancel", None),
        (f"/api/algorithms/{DIGEST}/approve", None),
        ("/api/local/sign-out", None),
    ],
)
@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no token", "a made-up token"])
def test_an_api_post_without_a_local_token_is_refused(
    site: TestClient, path: str, body: dict[str, str] | None, token: str | None
) -> None:
    _configure(site)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = site.post(path, json=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "/api/local/token" in response.json()["detail"] or token is None
    _assert_unchanged(site)


@pytest.mark.parametrize("path", [*PAGES, *API_READS, *EVENTS])
def test_reading_needs_the_local_session_too(shared_site: TestClient, path: str) -> None:
    response = shared_site.get(path, follow_redirects=False)
    if path.startswith("/api/") or "events" in path:
        assert response.status_code == 401
    else:
        assert response.status_code == 303
        assert response.headers["location"] == f"/local/sign-in?next={path}"


def _assert_unchanged(site: TestClient) -> None:
    status = site.get("/api/status", headers=_bearer(site)).json()
    assert (status["central_url"], status["site_id"]) == (UNREACHABLE, "north1")
    assert _state(site).store.approved(DIGEST) or not _state(site).store.approvals()


# ---------------------------------------------------------------- a browser session and CSRF


def test_a_browser_session_is_an_httponly_strict_cookie_and_forms_need_its_csrf_token(
    site: TestClient,
) -> None:
    response = site.post(
        "/local/sign-in",
        data={"password": LOCAL_PASSWORD, "next": "/settings"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/settings"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("fip_site_8001="), "named by port: cookies ignore ports"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie

    page = site.get("/settings")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    form = {"central_url": UNREACHABLE, "site_id": "north1"}
    refused = site.post("/settings", data=form)
    assert refused.status_code == 403 and "reload the page" in refused.text
    wrong = site.post("/settings", data={**form, "csrf_token": "x" + csrf})
    assert wrong.status_code == 403
    assert site.get("/api/status", headers=_bearer(site)).json()["site_id"] == ""
    saved = site.post("/settings", data={**form, "csrf_token": csrf})
    assert saved.status_code == 200 and "Saved" in saved.text
    htmx = site.post(
        f"/approvals/{DIGEST}/withdraw",
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        follow_redirects=False,
    )
    assert htmx.status_code == 303
    sign_in_form = BeautifulSoup(page.text, "html.parser").select("form[action='/sign-in']")
    assert sign_in_form and sign_in_form[0].select("input[name=csrf_token]")


def test_an_upload_from_a_browser_session_needs_the_csrf_token_too(site: TestClient) -> None:
    """Without htmx the upload form carries the token in its action's query string, so that the
    body is read only by the upload route."""
    csrf = browser_sign_in(site)
    files = {"file": ("north.csv", b"age,bmi\n1,2\n")}
    refused = site.post("/jobs/abc123/data", files=files)
    assert refused.status_code == 403 and "reload the page" in refused.text
    in_query = site.post("/jobs/abc123/data", files=files, params={"csrf_token": csrf})
    in_header = site.post("/jobs/abc123/data", files=files, headers={"X-CSRF-Token": csrf})
    for passed in (in_query, in_header):
        assert passed.status_code != 403, "past the CSRF check: the job is unknown here"
        assert "reload the page" not in passed.text


def test_signing_in_again_ends_the_earlier_session(site: TestClient) -> None:
    browser_sign_in(site)
    earlier = site.cookies["fip_site_8001"]
    browser_sign_in(site)
    current = site.cookies["fip_site_8001"]
    assert current != earlier
    for token, status in ((earlier, 303), (current, 200)):
        site.cookies.clear()
        site.cookies.set("fip_site_8001", token)
        assert site.get("/jobs", follow_redirects=False).status_code == status


def test_signing_out_ends_the_session(site: TestClient) -> None:
    csrf = browser_sign_in(site)
    assert site.get("/jobs").status_code == 200
    response = site.post("/local/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/local/sign-in"
    assert site.get("/jobs", follow_redirects=False).status_code == 303

    token = local_token(site)
    bearer = {"Authorization": f"Bearer {token}"}
    assert site.get("/api/status", headers=bearer).status_code == 200
    assert site.post("/api/local/sign-out", headers=bearer).status_code == 204
    assert site.get("/api/status", headers=bearer).status_code == 401


# ---------------------------------------------------------------- first run, wrong passwords


def test_first_run_every_page_leads_to_choosing_a_local_password(fresh: TestClient) -> None:
    for path in PAGES:
        response = fresh.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/local/password?next={path}"
    assert fresh.get("/local/sign-in?next=/jobs", follow_redirects=False).headers["location"] == (
        "/local/password?next=/jobs"
    )
    api = fresh.get("/api/status")
    assert api.status_code == 401
    assert fresh.post("/api/local/token", json={"password": LOCAL_PASSWORD}).status_code == 409

    page = fresh.get("/settings")
    assert page.status_code == 200 and "Choose a local password" in page.text
    short = fresh.post(
        "/local/password", data={"password": "short", "repeat": "short", "next": "/jobs"}
    )
    assert short.status_code == 422 and "at least 10 characters" in short.text
    differ = fresh.post(
        "/local/password",
        data={"password": LOCAL_PASSWORD, "repeat": LOCAL_PASSWORD + "x", "next": "/jobs"},
    )
    assert differ.status_code == 422 and "differ" in differ.text
    assert not _state(fresh).auth.has_password()

    chosen = fresh.post(
        "/local/password",
        data={"password": LOCAL_PASSWORD, "repeat": LOCAL_PASSWORD, "next": "/jobs"},
        follow_redirects=False,
    )
    assert chosen.status_code == 303 and chosen.headers["location"] == "/jobs"
    assert fresh.get("/jobs").status_code == 200, "choosing it signed the user in"
    stored = _state(fresh).store.local_password_hash()
    assert stored.startswith("$argon2id$") and LOCAL_PASSWORD not in stored

    # Once chosen, it cannot be chosen again (nor by anyone else who gets there).
    again = fresh.get("/local/password", follow_redirects=False)
    assert again.headers["location"].startswith("/local/sign-in")
    other = fresh.post(
        "/local/password",
        data={"password": "Another-one-2026", "repeat": "Another-one-2026"},
        follow_redirects=False,
    )
    assert other.headers["location"].startswith("/local/sign-in")
    assert _state(fresh).store.local_password_hash() == stored


def test_a_next_path_never_leaves_the_portal(fresh: TestClient) -> None:
    chosen = fresh.post(
        "/local/password",
        data={"password": LOCAL_PASSWORD, "repeat": LOCAL_PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert chosen.headers["location"] == "/"


class ManualClock:
    """A monotonic clock that moves only when the test says so (no real sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_wrong_local_passwords_wait_longer_and_longer(site: TestClient) -> None:
    clock = ManualClock()
    _state(site).auth.throttle = Throttle(clock=clock)

    def sign_in(password: str) -> httpx.Response:
        return site.post(
            "/local/sign-in", data={"password": password, "next": "/jobs"}, follow_redirects=False
        )

    wrong = sign_in("not-the-password")
    assert wrong.status_code == 401 and "wrong local password" in wrong.text
    assert "fip_site_8001" not in wrong.headers.get("set-cookie", "")
    soon = sign_in(LOCAL_PASSWORD)  # even the right one waits
    assert soon.status_code == 429 and soon.headers["Retry-After"] == "1"
    assert "wait 1 s" in soon.text
    clock.advance(0.99)
    assert sign_in(LOCAL_PASSWORD).status_code == 429, "not before the wait is over"
    clock.advance(0.02)
    assert sign_in("still-not-it").status_code == 401
    soon = site.post("/api/local/token", json={"password": LOCAL_PASSWORD})  # the API shares it
    assert soon.status_code == 429 and soon.headers["Retry-After"] == "2"
    clock.advance(2.01)
    right = sign_in(LOCAL_PASSWORD)
    assert right.status_code == 303 and right.headers["location"] == "/jobs"
    assert _state(site).auth.throttle.failures == 0, "a right password starts again"
    assert sign_in("wrong-again").status_code == 401
    assert _state(site).auth.throttle.wait() <= 1.0, "no lock-out: back to the first wait"


def test_cross_site_compares_the_origin_with_the_allowed_hosts(site: TestClient) -> None:
    """The rule itself: an Origin matching a foreign Host does not pass."""
    from starlette.requests import Request

    def request(host: str, origin_header: str) -> Request:
        headers = [(b"host", host.encode()), (b"origin", origin_header.encode())]
        return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"})

    allowed = {"127.0.0.1:8001", "localhost:8001"}
    assert cross_site(request(EVIL, f"http://{EVIL}"), allowed)
    assert not cross_site(request("127.0.0.1:8001", "http://localhost:8001"), allowed)
    assert cross_site(request("127.0.0.1:8001", "http://127.0.0.1:8002"), allowed)


# ---------------------------------------------------------------- as real processes


@pytest.fixture(scope="module")
def central_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    yield from start_federation(
        tmp_path_factory.mktemp("local-auth"), site_names=(), smtp_server=False
    )


@pytest.mark.slow
def test_central_over_tls_sends_hsts(central_only: Federation) -> None:
    with httpx.Client(base_url=central_only.central_url, verify=central_only.tls()) as client:
        response = client.get("/sign-in")
    assert response.status_code == 200
    _assert_security_headers(response)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.slow
def test_a_site_process_refuses_foreign_hosts_and_needs_its_password(
    central_only: Federation,
) -> None:
    portal = start_site_portal(central_only, "hosts")
    try:
        port = portal.url.rsplit(":", 1)[1]
        for path in ("/settings", "/api/status", "/events/status"):
            refused = httpx.get(f"{portal.url}{path}", headers={"Host": f"evil.example:{port}"})
            assert refused.status_code == 421, path
        signed_out = httpx.get(f"{portal.url}/api/status")
        assert signed_out.status_code == 401
        with portal.api() as api:
            response = api.get("/api/status")
            assert response.status_code == 200
            _assert_security_headers(response)
            assert "Strict-Transport-Security" not in response.headers
            with api.stream("GET", "/events/status") as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")
    finally:
        portal.process.stop()


@pytest.mark.slow
def test_forget_local_password_lets_the_next_visit_choose_a_new_one(
    central_only: Federation,
) -> None:
    portal = start_site_portal(central_only, "forgetful")
    portal.process.stop()
    port = portal.url.rsplit(":", 1)[1]
    again = Process(
        ["site", "--port", port, "--data-dir", str(portal.data_dir), "--forget-local-password"],
        log=central_only.root / "site-forgetful-again.log",
        env=CHEAP_ARGON2_ENV,
    )
    try:
        again.wait_until_up(f"{portal.url}/health")
        token = httpx.post(f"{portal.url}/api/local/token", json={"password": LOCAL_PASSWORD})
        assert token.status_code == 409 and "choose one first" in token.json()["detail"]
        page = httpx.get(f"{portal.url}/jobs")
        assert page.status_code == 303 and page.headers["location"] == "/local/password?next=/jobs"
        assert "the local password is forgotten" in again.output()
    finally:
        again.stop()
