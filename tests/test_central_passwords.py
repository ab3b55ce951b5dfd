"""Passwords a user can change and reset: the current password guards a change; a reset link
is mailed (the same answer for unknown accounts), works once and briefly, is stored only as a
hash, and revokes every token of the account; an admin can send one; requests are rate-limited.

Every test runs on SQLite and on PostgreSQL. Mail goes to the outbox here (no SMTP server);
tests/test_central_live.py reads the same mails from a real SMTP server.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from portal_central.app import create_app
from portal_central.models import PasswordReset, utcnow
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    create_admin,
    make_settings,
    portal_state,
)

NEW_PASSWORD = "Fresh-start-2027!"
STRANGER = ("203.0.113.66", 40000)


def _outbox(client: TestClient) -> list[dict[str, Any]]:
    mails: list[dict[str, Any]] = client.get("/api/outbox", headers=admin_auth(client)).json()
    return mails


def _reset_token(mail: dict[str, Any]) -> str:
    found = re.search(r"/reset-password\?token=(\S+)", mail["body"])
    assert found, mail["body"]
    return found.group(1)


def _sign_in(client: TestClient, username: str, password: str) -> int:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    return response.status_code


def _forgot(client: TestClient, who: str) -> Any:
    return client.post("/api/auth/forgot-password", json={"who": who})


# ---------------------------------------------------------------- change


def test_a_signed_in_user_changes_its_password_with_the_current_one(central: TestClient) -> None:
    approved_site(central, "north")
    pair = central.post(
        "/api/auth/token", data={"username": "north", "password": SITE_PASSWORD}
    ).json()
    site = bearer(pair["access_token"])

    wrong = central.post(
        "/api/me/password",
        json={"current_password": "not-the-password", "new_password": NEW_PASSWORD},
        headers=site,
    )
    weak = central.post(
        "/api/me/password",
        json={"current_password": SITE_PASSWORD, "new_password": "short"},
        headers=site,
    )
    anonymous = central.post(
        "/api/me/password", json={"current_password": SITE_PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert wrong.status_code == 422
    assert wrong.json() == {"detail": "the current password is wrong", "field": "current_password"}
    assert weak.status_code == 422
    assert weak.json()["field"] == "new_password"
    assert "at least 10 characters" in weak.json()["detail"]
    assert anonymous.status_code == 401
    assert _sign_in(central, "north", SITE_PASSWORD) == 200, "nothing changed yet"

    changed = central.post(
        "/api/me/password",
        json={"current_password": SITE_PASSWORD, "new_password": NEW_PASSWORD},
        headers=site,
    )

    assert changed.status_code == 200, changed.text
    assert _sign_in(central, "north", SITE_PASSWORD) == 401
    assert _sign_in(central, "north", NEW_PASSWORD) == 200
    hashed = _password_hash(central, "north")
    assert hashed.startswith("$argon2id$") and "m=64,t=1" in hashed, "the settings' cost"


def _password_hash(client: TestClient, username: str) -> str:
    from portal_central.models import User

    with portal_state(client).database.session() as session:
        value = session.scalar(select(User.password_hash).where(User.username == username))
        assert value is not None
        return value


def test_the_change_password_page_needs_the_current_password(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = central.get("/password")
    assert page.status_code == 200
    assert 'name="current_password"' in page.text

    wrong = central.post(
        "/password",
        data={
            "csrf_token": csrf,
            "current_password": "nope-nope-1",
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )
    differ = central.post(
        "/password",
        data={
            "csrf_token": csrf,
            "current_password": ADMIN["password"],
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD + "x",
        },
    )
    forged = central.post(
        "/password",
        data={
            "current_password": ADMIN["password"],
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )

    assert wrong.status_code == 422 and "the current password is wrong" in wrong.text
    assert differ.status_code == 422 and "the two passwords differ" in differ.text
    assert forged.status_code == 403, "the form is CSRF-checked"
    changed = central.post(
        "/password",
        data={
            "csrf_token": csrf,
            "current_password": ADMIN["password"],
            "new_password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
    )
    assert changed.status_code == 200
    assert "Your password is changed" in changed.text
    assert _sign_in(central, ADMIN["username"], NEW_PASSWORD) == 200


# ---------------------------------------------------------------- forgot and reset


def test_forgot_password_answers_the_same_for_unknown_accounts_and_mails_a_one_time_link(
    central: TestClient,
) -> None:
    user_id, _ = approved_site(central, "north")
    pair = central.post(
        "/api/auth/token", data={"username": "north", "password": SITE_PASSWORD}
    ).json()
    before = len(_outbox(central))
    verifications = portal_state(central).passwords.verifications

    known = _forgot(central, "north")
    by_email = _forgot(central, "NORTH@hospital.example")
    unknown = _forgot(central, "nobody")
    unknown_email = _forgot(central, "nobody@hospital.example")

    assert known.status_code == unknown.status_code == 202
    assert known.json() == by_email.json() == unknown.json() == unknown_email.json()
    assert "30 minutes" in known.json()["detail"]
    assert portal_state(central).passwords.verifications == verifications, "no argon2 either way"
    mails = _outbox(central)[: len(_outbox(central)) - before]
    assert [m["to"] for m in mails] == ["north@hospital.example"] * 2, "unknown: no mail"
    token = _reset_token(mails[-1])
    assert "30 minutes" in mails[-1]["body"]
    with portal_state(central).database.session() as session:
        hashes = list(session.scalars(select(PasswordReset.token_hash)))
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert all(token not in h for h in hashes), "only the hash is stored"

    page = central.get(f"/reset-password?token={token}")
    assert page.status_code == 200 and "north" in page.text
    weak = central.post("/api/auth/reset-password", json={"token": token, "new_password": "short"})
    assert weak.status_code == 422 and weak.json()["field"] == "new_password"

    reset = central.post(
        "/api/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
    )

    assert reset.status_code == 200, reset.text
    assert _sign_in(central, "north", NEW_PASSWORD) == 200
    assert _sign_in(central, "north", SITE_PASSWORD) == 401
    revoked = central.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert revoked.status_code == 401, "every refresh token from before is revoked"
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401
    again = central.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "Another-one-2027"}
    )
    assert again.status_code == 400
    assert again.json() == {
        "detail": "this reset link was already used; ask for a new one if you need to",
        "field": "token",
    }
    other = _reset_token(mails[0])
    assert (
        central.post(
            "/api/auth/reset-password", json={"token": other, "new_password": "Another-one-2027"}
        ).status_code
        == 400
    ), "using one link uses up the account's other open links"
    assert user_id


def test_an_expired_or_made_up_reset_link_is_refused_with_a_reason(central: TestClient) -> None:
    approved_site(central, "north")
    _forgot(central, "north")
    token = _reset_token(_outbox(central)[0])
    with portal_state(central).database.session() as session:
        session.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))

    expired = central.post(
        "/api/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
    )
    made_up = central.post(
        "/api/auth/reset-password", json={"token": "made-up", "new_password": NEW_PASSWORD}
    )
    page = central.get(f"/reset-password?token={token}")
    form = central.post(
        "/reset-password",
        data={"token": token, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )

    assert expired.status_code == 400
    assert expired.json()["detail"] == "this reset link has expired; ask for a new one"
    assert made_up.status_code == 400
    assert made_up.json()["detail"] == "this reset link is not valid; ask for a new one"
    assert page.status_code == 400 and "has expired" in page.text
    assert 'name="new_password"' not in page.text
    assert form.status_code == 400 and "has expired" in form.text
    assert _sign_in(central, "north", SITE_PASSWORD) == 200, "the password did not change"


def test_the_reset_pages_walk_a_user_from_sign_in_to_a_new_password(central: TestClient) -> None:
    approved_site(central, "north")
    sign_in = central.get("/sign-in")
    assert 'href="/forgot-password"' in sign_in.text

    asked = central.post("/forgot-password", data={"who": "north"})
    unknown = central.post("/forgot-password", data={"who": "nobody"})
    empty = central.post("/forgot-password", data={"who": "  "})

    assert asked.status_code == unknown.status_code == 200
    assert "If an account has that username or email" in asked.text
    assert asked.text == unknown.text, "the same page for unknown accounts"
    assert empty.status_code == 422 and "enter your username or email" in empty.text
    token = _reset_token(_outbox(central)[0])
    differ = central.post(
        "/reset-password",
        data={"token": token, "new_password": NEW_PASSWORD, "confirm": "something-else-1"},
    )
    assert differ.status_code == 422 and "the two passwords differ" in differ.text
    assert f'value="{token}"' in differ.text, "the form keeps its link"

    done = central.post(
        "/reset-password",
        data={"token": token, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )

    assert done.status_code == 200
    assert "Your password is changed" in done.text
    assert _sign_in(central, "north", NEW_PASSWORD) == 200


def test_an_admin_sends_a_reset_link_that_lands_in_the_outbox(central: TestClient) -> None:
    user_id, _ = approved_site(central, "north")

    sent = central.post(f"/api/users/{user_id}/reset-link", headers=admin_auth(central))
    as_site = central.post(
        f"/api/users/{user_id}/reset-link",
        headers=bearer(
            central.post(
                "/api/auth/token", data={"username": "north", "password": SITE_PASSWORD}
            ).json()["access_token"]
        ),
    )
    unknown = central.post("/api/users/4242/reset-link", headers=admin_auth(central))

    assert sent.status_code == 200, sent.text
    assert sent.json()["mail_sent"] is True
    assert "outbox" in sent.json()["notice"]
    assert as_site.status_code == 403
    assert unknown.status_code == 404
    mail = _outbox(central)[0]
    assert mail["to"] == "north@hospital.example"
    assert "An admin at central sent you this link" in mail["body"]
    token = _reset_token(mail)
    assert (
        central.post(
            "/api/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
        ).status_code
        == 200
    )
    assert _sign_in(central, "north", NEW_PASSWORD) == 200


# ---------------------------------------------------------------- rate limit


@pytest.fixture
def limited_central(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "central", database_url, reset_requests_per_hour=2)
    with TestClient(create_app(settings)) as client:
        create_admin(client)
        yield client


def test_reset_requests_beyond_the_rate_get_429_with_retry_after(
    limited_central: TestClient,
) -> None:
    busy = TestClient(limited_central.app, client=STRANGER)
    assert _forgot(busy, "north").status_code == 202
    assert busy.post("/forgot-password", data={"who": "south"}).status_code == 200

    limited = _forgot(busy, "east")
    form = busy.post("/forgot-password", data={"who": "west"})

    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 60
    assert "too many password reset requests" in limited.json()["detail"]
    assert form.status_code == 429
    assert int(form.headers["Retry-After"]) >= 60
    assert "too many password reset requests" in form.text
    assert _forgot(limited_central, "north").status_code == 202, "other addresses are served"
