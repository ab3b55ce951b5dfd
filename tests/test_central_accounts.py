"""Accounts through the JSON API: registration, the admin's decisions, tokens, roles.

Every test runs on SQLite and on PostgreSQL (unique names and site ids, token cascades), with
one admin.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import httpx2
from fastapi.testclient import TestClient

from portal_central.accounts.service import SITE_ID_ALPHABET, SITE_ID_LENGTH
from portal_central.app import create_app
from portal_central.devcert import make_dev_cert
from portal_central.security import Tokens
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    admin_headers,
    approved_site,
    bearer,
    create_admin,
    make_settings,
    portal_state,
    register_site,
    token,
)

pytestmark = EVERY_DATABASE

CENTRAL_URL = "http://127.0.0.1:8443"
"""The default central URL that mails carry (settings host and port, no TLS)."""


def _registration(name: str = "north", **fields: str) -> dict[str, str]:
    return {
        "username": name,
        "email": f"{name}@hospital.example",
        "institution": f"{name.capitalize()} Hospital",
        "password": SITE_PASSWORD,
        **fields,
    }


def _sign_in(client: TestClient, username: str, password: str) -> httpx2.Response:
    return client.post("/api/auth/token", data={"username": username, "password": password})


def _token_pair(client: TestClient, username: str, password: str = SITE_PASSWORD) -> dict[str, Any]:
    response = _sign_in(client, username, password)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


_ADMIN_HEADERS: WeakKeyDictionary[TestClient, dict[str, str]] = WeakKeyDictionary()


def _admin(client: TestClient) -> dict[str, str]:
    """The admin's bearer header, signed in once per portal."""
    if client not in _ADMIN_HEADERS:
        _ADMIN_HEADERS[client] = admin_headers(client)
    return _ADMIN_HEADERS[client]


def _usernames(client: TestClient, status: str | None = None) -> list[str]:
    query = f"?status={status}" if status else ""
    response = client.get(f"/api/users{query}", headers=_admin(client))
    assert response.status_code == 200, response.text
    return [user["username"] for user in response.json()]


def _site_mails(client: TestClient) -> list[dict[str, Any]]:
    """The outbox without the admins' notices of new registrations."""
    mails = client.get("/api/outbox", headers=_admin(client)).json()
    return [m for m in mails if m["to"] != ADMIN["email"]]


def _decide(client: TestClient, user_id: int, action: str) -> httpx2.Response:
    return client.post(f"/api/users/{user_id}/{action}", headers=_admin(client))


# ---------------------------------------------------------------- registration
# Each test starts a portal on a fresh database (the costly part), so related checks share one.


def test_registration_is_pending_and_cannot_sign_in_yet(central: TestClient) -> None:
    body = {
        **_registration("North", email=" north@hospital.example "),
        "role": "admin",
        "status": "approved",
        "site_id": "aaaaaa",
    }

    response = central.post("/api/register", json=body)

    assert response.status_code == 201, response.text
    user = response.json()
    assert user["username"] == "north", "usernames are lower case"
    assert user["email"] == "north@hospital.example"
    assert (user["role"], user["status"], user["site_id"]) == ("site", "pending", None)
    assert "password" not in json.dumps(user)
    refused = _sign_in(central, "north", SITE_PASSWORD)
    assert refused.status_code == 403
    assert "waiting for an admin's approval" in refused.json()["detail"]


INVALID_REGISTRATIONS: list[tuple[str, dict[str, str], str, str]] = [
    # (case, changes to a valid registration, the field named, words of the message)
    ("short password", {"password": "Sh0rt!"}, "password", "at least 10 characters"),
    ("common password", {"password": "letmein123"}, "password", "too easy"),
    ("few characters", {"password": "aaaaaaaaaaaa1"}, "password", "too easy"),
    ("letters only", {"password": "abcdefghijk"}, "password", "mix letters"),
    ("from username", {"password": "North-pass-2026"}, "password", "from your username"),
    (
        "from email",
        {"password": "x7-HOSPITAL-x7", "email": "hospital@north.example"},
        "password",
        "from your username or email",
    ),
    ("space in username", {"username": "no spaces"}, "username", "3 to 32 characters"),
    ("short username", {"username": "ab"}, "username", "3 to 32 characters"),
    ("leading dash", {"username": "-north"}, "username", "starting with"),
    ("long username", {"username": "n" * 33}, "username", "3 to 32 characters"),
    ("bad email", {"email": "not-an-email"}, "email", "email address"),
    ("email without dot", {"email": "a@b"}, "email", "email address"),
    ("empty institution", {"institution": "   "}, "institution", "institution"),
    ("long institution", {"institution": "x" * 201}, "institution", "200"),
]


def test_invalid_or_taken_registrations_name_the_field_and_create_nothing(
    central: TestClient,
) -> None:
    for case, changes, field, words in INVALID_REGISTRATIONS:
        response = central.post("/api/register", json=_registration("north", **changes))

        assert response.status_code == 422, (case, response.text)
        assert response.json()["field"] == field, case
        assert words in response.json()["detail"], (case, response.json())
    missing = _registration("north")
    del missing["institution"]
    response = central.post("/api/register", json=missing)
    assert response.status_code == 422
    assert response.json()["field"] == "institution"
    assert "institution" in response.json()["detail"]
    assert _usernames(central) == [ADMIN["username"]], "no account was created"
    register_site(central, "north")

    again = central.post("/api/register", json=_registration("North", email="other@x.example"))

    assert again.status_code == 409
    assert again.json()["field"] == "username"
    assert "'north' is taken" in again.json()["detail"]
    assert _usernames(central) == [ADMIN["username"], "north"]


# ---------------------------------------------------------------- the admin's decisions


def test_admin_lists_users_by_status(central: TestClient) -> None:
    register_site(central, "north")
    register_site(central, "south")
    approved_site(central, "east")

    assert _usernames(central, "pending") == ["north", "south"]
    assert _usernames(central, "approved") == [ADMIN["username"], "east"]
    assert _usernames(central) == [ADMIN["username"], "north", "south", "east"]
    unknown = central.get("/api/users?status=sleeping", headers=_admin(central))
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "status"
    assert "pending" in unknown.json()["detail"]


def test_approval_mails_a_short_unique_site_id(central: TestClient) -> None:
    user_id = register_site(central, "north")

    response = _decide(central, user_id, "approve")

    assert response.status_code == 200, response.text
    decision = response.json()
    site_id = decision["site_id"]
    assert decision["status"] == "approved"
    assert len(site_id) == SITE_ID_LENGTH == 6
    assert set(site_id) <= set(SITE_ID_ALPHABET)
    assert decision["mail_sent"] is True
    assert decision["notice"] == (
        f"Approved: site_id {site_id}; the mail for north@hospital.example is in the outbox "
        "(forward it)."
    )
    outbox = _site_mails(central)
    assert len(outbox) == 1
    mail = outbox[0]
    assert mail["to"] == "north@hospital.example"
    assert site_id in mail["subject"]
    assert site_id in mail["body"]
    assert CENTRAL_URL in mail["body"]
    assert "fip site" in mail["body"], "the mail says what to do next"
    body = mail["body"]
    assert "pip install federated_imputation_portal-0.1.0-py3-none-any.whl" in body
    assert "fip/bin/fip site" in body and "local password" in body
    assert "CA file" in body and "fip central dev-cert" in body
    assert f"{CENTRAL_URL}/forgot-password" in body
    others = {approved_site(central, name)[1] for name in ("south", "east", "west")}
    assert len(others | {site_id}) == 4, "site_ids are unique"


def test_the_approval_mail_says_where_the_ca_file_comes_from_and_how_to_install(
    tmp_path: Path, database_url: str
) -> None:
    tls = make_dev_cert(tmp_path / "tls")
    settings = make_settings(
        tmp_path / "central",
        database_url,
        certfile=tls.certfile,
        keyfile=tls.keyfile,
        site_install="git+https://git.example.org/fip.git",
    )
    with TestClient(create_app(settings)) as central:
        create_admin(central)
        user_id = register_site(central, "north")
        assert _decide(central, user_id, "approve").status_code == 200
        body = _site_mails(central)[0]["body"]

    assert 'fip/bin/pip install "git+https://git.example.org/fip.git"' in body
    assert ".whl" not in body, "the configured source replaces the generic advice"
    assert "its own certificate authority" in body
    assert "ca.pem" in body and "fip central dev-cert" in body
    assert "https://127.0.0.1:8443" in body


def test_moves_the_transition_table_forbids_are_conflicts_naming_the_state(
    central: TestClient,
) -> None:
    user_id, site_id = approved_site(central, "north")
    pending_id = register_site(central, "south")

    twice = _decide(central, user_id, "approve")
    reject_approved = _decide(central, user_id, "reject")
    disable_pending = _decide(central, pending_id, "disable")
    enable_pending = _decide(central, pending_id, "enable")

    assert twice.status_code == 409
    assert twice.json()["detail"] == "cannot approve an account that is approved"
    assert reject_approved.status_code == 409
    assert "approved" in reject_approved.json()["detail"]
    assert disable_pending.status_code == 409
    assert "pending" in disable_pending.json()["detail"]
    assert enable_pending.status_code == 409
    assert len(_site_mails(central)) == 1
    me = central.get("/api/me", headers=bearer(token(central, "north", SITE_PASSWORD))).json()
    assert me["site_id"] == site_id, "the site_id did not change"
    assert _usernames(central, "pending") == ["south"]


def test_reject(central: TestClient) -> None:
    user_id = register_site(central, "north")

    response = _decide(central, user_id, "reject")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    assert response.json()["site_id"] is None
    assert _usernames(central, "pending") == []
    assert _usernames(central, "rejected") == ["north"]
    mail = central.get("/api/outbox", headers=_admin(central)).json()[0]
    assert mail["to"] == "north@hospital.example"
    assert "not approved" in mail["subject"]
    refused = _sign_in(central, "north", SITE_PASSWORD)
    assert refused.status_code == 403
    assert "not approved" in refused.json()["detail"]
    twice = _decide(central, user_id, "reject")
    assert twice.status_code == 409
    assert "rejected" in twice.json()["detail"]


def test_disable_revokes_every_token_and_enable_lets_the_user_back(central: TestClient) -> None:
    user_id, site_id = approved_site(central, "north")
    pair = _token_pair(central, "north")
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 200

    disabled = _decide(central, user_id, "disable")

    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "disabled"
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401
    refreshed = central.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401, refreshed.text
    signed_in = _sign_in(central, "north", SITE_PASSWORD)
    assert signed_in.status_code == 403
    assert "disabled" in signed_in.json()["detail"]

    enabled = _decide(central, user_id, "enable")

    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "approved"
    assert enabled.json()["site_id"] == site_id, "the site keeps its site_id"
    fresh = _token_pair(central, "north")
    me = central.get("/api/me", headers=bearer(fresh["access_token"]))
    assert me.status_code == 200
    assert me.json()["site_id"] == site_id
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401
    stale = central.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert stale.status_code == 401, "tokens from before the disabling stay dead"


def test_unknown_actions_users_and_admin_accounts_are_clear_errors(central: TestClient) -> None:
    user_id = register_site(central, "north")
    admin_id = central.get("/api/me", headers=_admin(central)).json()["id"]

    unknown_action = _decide(central, user_id, "promote")
    unknown_user = _decide(central, 4242, "approve")
    admin_account = _decide(central, admin_id, "disable")

    assert unknown_action.status_code == 400
    assert unknown_action.json()["field"] == "action"
    detail = unknown_action.json()["detail"]
    assert "'promote'" in detail
    assert all(action in detail for action in ("approve", "reject", "disable", "enable"))
    assert unknown_user.status_code == 404
    assert "4242" in unknown_user.json()["detail"]
    assert admin_account.status_code == 403
    assert "create-admin" in admin_account.json()["detail"]
    assert _usernames(central, "pending") == ["north"]


# ---------------------------------------------------------------- tokens


def test_refresh_tokens_rotate_and_can_be_revoked(central: TestClient) -> None:
    approved_site(central, "north")
    first = _token_pair(central, "north")
    assert first["token_type"] == "bearer"
    assert first["expires_in"] == 15 * 60

    second = central.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})

    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert central.get("/api/me", headers=bearer(rotated["access_token"])).status_code == 200
    reused = central.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert "sign in again" in reused.json()["detail"]

    revoked = central.post("/api/auth/revoke", json={"refresh_token": rotated["refresh_token"]})

    assert revoked.status_code == 204
    after = central.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401
    unknown = central.post("/api/auth/revoke", json={"refresh_token": "never-issued"})
    assert unknown.status_code == 204, "revoking an unknown token reveals nothing"
    made_up = central.post("/api/auth/refresh", json={"refresh_token": "never-issued"})
    assert made_up.status_code == 401


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_expired_forged_and_misused_tokens_are_refused(central: TestClient) -> None:
    admin_id = central.get("/api/me", headers=_admin(central)).json()["id"]
    claims: dict[str, Any] = {
        "user_id": admin_id,
        "role": "admin",
        "token_version": 0,
        "site_id": None,
    }
    tokens = portal_state(central).tokens
    refresh = _token_pair(central, ADMIN["username"], ADMIN["password"])["refresh_token"]
    assert (
        central.get(
            "/api/users", headers=bearer(tokens.issue(**claims, kind="access", lifetime_seconds=60))
        ).status_code
        == 200
    ), "the claims are right: only what is named below is wrong"
    bad = {
        "expired": tokens.issue(**claims, kind="access", lifetime_seconds=-10),
        "forged": Tokens(os.urandom(32)).issue(**claims, kind="access", lifetime_seconds=600),
        "session cookie as bearer": tokens.issue(**claims, kind="session", lifetime_seconds=600),
        "refresh token as bearer": refresh,
        "unsigned": _unsigned(
            {"sub": str(admin_id), "role": "admin", "tv": 0, "kind": "access", "sid": "x"}
            | {"exp": 2**40}
        ),
        "garbage": "not-a-token",
        "empty parts": "a.b.c",
    }

    for case, value in bad.items():
        response = central.get("/api/users", headers=bearer(value))

        assert response.status_code == 401, case
        assert "not valid" in response.json()["detail"], case
    expired = central.get("/api/me", headers=bearer(bad["expired"]))
    assert "expired" in expired.json()["detail"]


# ---------------------------------------------------------------- sign-in waits
# tests/test_central_sign_in.py: growing waits instead of a lock, unlock, rate limits, families.


# ---------------------------------------------------------------- permissions


def test_anonymous_callers_get_nothing_and_site_users_cannot_act_as_admin(
    central: TestClient,
) -> None:
    approved_site(central, "north")
    other = register_site(central, "south")
    site = bearer(token(central, "north", SITE_PASSWORD))
    admin_only = [
        ("GET", "/api/users"),
        ("GET", "/api/users?status=pending"),
        ("GET", "/api/outbox"),
        ("POST", f"/api/users/{other}/approve"),
        ("POST", f"/api/users/{other}/reject"),
        ("POST", f"/api/users/{other}/disable"),
    ]

    for method, path in [*admin_only, ("GET", "/api/me")]:
        anonymous = central.request(method, path)
        assert anonymous.status_code == 401, path
        assert anonymous.json()["detail"] == "sign in first", path
    for method, path in admin_only:
        as_site = central.request(method, path, headers=site)
        assert as_site.status_code == 403, path
        assert as_site.json()["detail"] == "only admins may do this", path
    assert _usernames(central, "pending") == ["south"]
