"""Signing out ends the browser session at central, not only in the browser."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.central_fixtures import ADMIN, browser_sign_in


def test_a_copied_session_cookie_dies_with_sign_out(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    cookie = central.cookies.get("fip_session")
    assert cookie and central.get("/admin/users", follow_redirects=False).status_code == 200

    response = central.post("/sign-out", data={"csrf_token": csrf}, follow_redirects=False)

    assert response.status_code == 303
    central.cookies.set("fip_session", cookie)  # as if someone had kept a copy
    again = central.get("/admin/users", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/sign-in")


def test_signing_in_again_after_signing_out_works(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    central.post("/sign-out", data={"csrf_token": csrf})

    browser_sign_in(central, ADMIN["username"], ADMIN["password"])

    assert central.get("/admin/users", follow_redirects=False).status_code == 200
