"""Sign-in that a stranger cannot turn against the admin: growing waits per username and per
client address instead of a lock, one answer for unknown, wrong and throttled, unlock by
command and by the admin's button, request rate limits (429), refresh-token families.

Every test runs on SQLite and on PostgreSQL. Waits are made short (or long, where a test must
be inside one) through the settings; no test sleeps for more than a fraction of a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from federation.cli import main
from portal_central.accounts import throttle
from portal_central.accounts.service import WRONG
from portal_central.app import create_app
from portal_central.models import SignInThrottle
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    approved_site,
    bearer,
    browser_sign_in,
    create_admin,
    htmx_headers,
    make_settings,
    portal_state,
)

STRANGER = ("203.0.113.66", 40000)
ELSEWHERE = ("198.51.100.10", 40001)
THIRD = ("192.0.2.33", 40002)
WRONG_BODY = {"detail": WRONG, "field": None}

pytestmark = EVERY_DATABASE


@pytest.fixture
def make_central(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """A factory of central portals with the given settings (each with the admin)."""
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = make_settings(tmp_path / f"central{len(opened)}", database_url, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        create_admin(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


def _from(central: TestClient, address: tuple[str, int]) -> TestClient:
    """Another client of the same running portal, calling from ``address``."""
    return TestClient(central.app, client=address)


def _sign_in(client: TestClient, username: str, password: str) -> httpx2.Response:
    return client.post("/api/auth/token", data={"username": username, "password": password})


def _throttle_rows(central: TestClient) -> dict[str, SignInThrottle]:
    with portal_state(central).database.session() as session:
        return {row.key: row for row in session.scalars(select(SignInThrottle))}


# ---------------------------------------------------------------- waits, not locks


def test_a_strangers_failures_keep_the_admin_out_only_for_the_short_account_wait(
    make_central: Any,
) -> None:
    central = make_central(sign_in_first_delay_seconds=0.05, account_max_delay_seconds=0.2)
    stranger, admin = _from(central, STRANGER), _from(central, ELSEWHERE)
    passwords = portal_state(central).passwords
    before = passwords.verifications

    answers = [_sign_in(stranger, "admin", f"Guess-number-{k}") for k in range(20)]

    assert {a.status_code for a in answers} == {401}
    assert all(a.json() == WRONG_BODY for a in answers), "counted or not: the same answer"
    assert passwords.verifications - before == 20, "every attempt cost one argon2 verification"
    account = _throttle_rows(central)["account:admin"]
    assert account.wait_until is not None
    assert (account.wait_until - account.last_failure_at).total_seconds() <= 0.2 + 1e-6, (
        "the admin's account waits no longer than its short maximum"
    )
    time.sleep(max(0.0, (account.wait_until - account.last_failure_at).total_seconds()) + 0.05)
    signed_in = _sign_in(admin, ADMIN["username"], ADMIN["password"])
    assert signed_in.status_code == 200, signed_in.text
    assert "account:admin" not in _throttle_rows(central), "a success forgets the failures"
    assert f"client:{STRANGER[0]}" in _throttle_rows(central), "the stranger's count stays"


def test_unknown_wrong_and_throttled_get_one_answer_after_one_verification(
    make_central: Any,
) -> None:
    central = make_central(account_free_failures=2, sign_in_first_delay_seconds=60)
    approved_site(central, "north")
    passwords = portal_state(central).passwords

    def attempt(client: TestClient, username: str, password: str) -> httpx2.Response:
        before = passwords.verifications
        response = _sign_in(client, username, password)
        assert passwords.verifications - before == 1, (username, "one argon2 verification")
        return response

    unknown = attempt(_from(central, STRANGER), "nobody", SITE_PASSWORD)
    wrong = attempt(_from(central, STRANGER), "north", "Not-the-password-1")
    attempt(_from(central, STRANGER), "north", "Not-the-password-2")  # north now waits 60 s
    throttled = attempt(_from(central, ELSEWHERE), "north", SITE_PASSWORD)

    for response in (unknown, wrong, throttled):
        assert response.status_code == 401
        assert response.json() == WRONG_BODY
        assert "retry-after" not in response.headers, "a wait is not announced"
    assert _throttle_rows(central)["account:north"].failures == 2, "the right password, "
    "refused during the wait, was not counted"
    page_unknown = _from(central, ELSEWHERE).post(
        "/sign-in", data={"username": "nobody", "password": SITE_PASSWORD}
    )
    page_throttled = _from(central, ELSEWHERE).post(
        "/sign-in", data={"username": "north", "password": SITE_PASSWORD}
    )
    assert page_unknown.status_code == page_throttled.status_code == 401
    assert page_unknown.text.replace("nobody", "north") == page_throttled.text
    assert WRONG in page_throttled.text


def test_a_client_address_that_guesses_many_names_waits_while_others_sign_in(
    make_central: Any,
) -> None:
    central = make_central(
        client_free_failures=3, account_free_failures=100, sign_in_first_delay_seconds=30
    )
    approved_site(central, "north")
    guesser = _from(central, STRANGER)
    for name in ("alice", "bob", "carol"):
        assert _sign_in(guesser, name, "Some-password-1").json() == WRONG_BODY

    refused = _sign_in(guesser, "north", SITE_PASSWORD)

    assert refused.status_code == 401
    assert refused.json() == WRONG_BODY, "the guessing address waits, even with a right password"
    assert _sign_in(_from(central, ELSEWHERE), "north", SITE_PASSWORD).status_code == 200
    rows = _throttle_rows(central)
    assert rows[f"client:{STRANGER[0]}"].failures == 3
    assert "account:north" not in rows, "a refused attempt during a wait counts for nobody"


def test_fip_central_unlock_lets_the_admin_in_at_once(
    make_central: Any, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    central = make_central(account_free_failures=2, sign_in_first_delay_seconds=60)
    stranger, admin = _from(central, STRANGER), _from(central, ELSEWHERE)
    for _ in range(2):
        _sign_in(stranger, "admin", "Guess-password-1")
    assert _sign_in(admin, ADMIN["username"], ADMIN["password"]).status_code == 401
    where = ["central", "--data-dir", str(tmp_path / "central0"), "--database-url", database_url]

    code = main([*where, "unlock", "Admin"])

    assert code == 0
    assert "'admin' may sign in again now" in capsys.readouterr().out
    assert _sign_in(admin, ADMIN["username"], ADMIN["password"]).status_code == 200
    assert main([*where, "unlock", "nobody"]) == 1
    assert "no account 'nobody'" in capsys.readouterr().err


def test_the_admins_button_clears_a_sites_wait(make_central: Any) -> None:
    central = make_central(account_free_failures=2, sign_in_first_delay_seconds=60)
    user_id, _ = approved_site(central, "north")
    approved_site(central, "south")
    for _ in range(2):
        _sign_in(_from(central, STRANGER), "north", "Guess-password-1")
    assert _sign_in(_from(central, ELSEWHERE), "north", SITE_PASSWORD).status_code == 401
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])

    page = central.get("/admin/users?status=approved")

    assert "2 failed sign-in(s)" in page.text
    assert page.text.count("Clear sign-in delay") == 1, "only north's row offers it"
    assert f'hx-post="/admin/users/{user_id}/unlock?tab=approved"' in page.text
    forged = central.post(f"/admin/users/{user_id}/unlock", headers={"HX-Request": "true"})
    assert forged.status_code == 403, "the button's post carries the CSRF token"
    unlocked = central.post(f"/admin/users/{user_id}/unlock", headers=htmx_headers(csrf))
    assert unlocked.status_code == 200, unlocked.text
    assert "north may sign in again now." in unlocked.text
    assert "Clear sign-in delay" not in unlocked.text
    assert _sign_in(_from(central, ELSEWHERE), "north", SITE_PASSWORD).status_code == 200
    site = bearer(_sign_in(_from(central, THIRD), "north", SITE_PASSWORD).json()["access_token"])
    assert central.post(f"/admin/users/{user_id}/unlock", headers=site).status_code == 403
    assert central.post(f"/api/users/{user_id}/unlock", headers=site).status_code == 403


def test_the_api_unlocks_an_account_for_the_admin(make_central: Any) -> None:
    central = make_central(account_free_failures=2, sign_in_first_delay_seconds=60)
    user_id, _ = approved_site(central, "north")
    admin = bearer(_pair(central, ADMIN["username"], ADMIN["password"])["access_token"])
    for _ in range(2):
        _sign_in(_from(central, STRANGER), "north", "Guess-password-1")
    assert _sign_in(_from(central, ELSEWHERE), "north", SITE_PASSWORD).status_code == 401

    unlocked = central.post(f"/api/users/{user_id}/unlock", headers=admin)

    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json()["username"] == "north"
    assert _sign_in(_from(central, ELSEWHERE), "north", SITE_PASSWORD).status_code == 200
    assert central.post("/api/users/4242/unlock", headers=admin).status_code == 404


# ---------------------------------------------------------------- request rate limits


def test_sign_in_requests_beyond_the_rate_get_429_with_retry_after(make_central: Any) -> None:
    central = make_central(token_requests_per_minute=3)
    busy, other = _from(central, STRANGER), _from(central, ELSEWHERE)
    for _ in range(3):
        assert _sign_in(busy, "admin", "Guess-password-1").status_code == 401

    limited = _sign_in(busy, ADMIN["username"], ADMIN["password"])

    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 20
    assert "too many sign-in requests" in limited.json()["detail"]
    form = busy.post("/sign-in", data={"username": "admin", "password": ADMIN["password"]})
    assert form.status_code == 429, "the form shares the address's rate"
    assert int(form.headers["Retry-After"]) >= 1
    assert "too many sign-in requests" in form.text
    assert _sign_in(other, ADMIN["username"], ADMIN["password"]).status_code == 200


def test_registrations_beyond_the_rate_get_429_with_retry_after(make_central: Any) -> None:
    central = make_central(register_requests_per_hour=2)
    busy = _from(central, STRANGER)
    body = {"email": "x@hospital.example", "institution": "X", "password": SITE_PASSWORD}
    assert busy.post("/api/register", json={"username": "one", **body}).status_code == 201
    assert (
        busy.post(
            "/register", data={"username": "two", **body, "email": "two@hospital.example"}
        ).status_code
        == 201
    )

    limited = busy.post("/api/register", json={"username": "three", **body})
    form = busy.post("/register", data={"username": "four", **body})

    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 60
    assert "too many registrations" in limited.json()["detail"]
    assert form.status_code == 429
    assert int(form.headers["Retry-After"]) >= 60
    assert "too many registrations" in form.text
    allowed = _from(central, ELSEWHERE).post("/api/register", json={"username": "five", **body})
    assert allowed.status_code == 201


# ---------------------------------------------------------------- refresh-token families


def _pair(client: TestClient, username: str, password: str = SITE_PASSWORD) -> dict[str, Any]:
    response = _sign_in(client, username, password)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def _refresh(client: TestClient, refresh_token: str) -> httpx2.Response:
    return client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


def test_reusing_a_rotated_refresh_token_revokes_its_whole_family(make_central: Any) -> None:
    central = make_central()
    first = _pair(central, ADMIN["username"], ADMIN["password"])
    other_sign_in = _pair(central, ADMIN["username"], ADMIN["password"])
    second = _refresh(central, first["refresh_token"]).json()
    third = _refresh(central, second["refresh_token"]).json()

    reused = _refresh(central, first["refresh_token"])  # a stolen copy of the first

    assert reused.status_code == 401
    assert "sign in again" in reused.json()["detail"]
    after = _refresh(central, third["refresh_token"])
    assert after.status_code == 401, "the newest token of the family is revoked too"
    assert _refresh(central, second["refresh_token"]).status_code == 401
    assert _refresh(central, other_sign_in["refresh_token"]).status_code == 200, (
        "another sign-in of the admin is another family, untouched"
    )


def test_a_sites_new_sign_in_revokes_its_earlier_refresh_tokens(make_central: Any) -> None:
    central = make_central()
    approved_site(central, "north")
    approved_site(central, "south")
    south = _pair(central, "south")
    first = _pair(central, "north")
    rotated = _refresh(central, first["refresh_token"]).json()

    second = _pair(central, "north")

    assert _refresh(central, rotated["refresh_token"]).status_code == 401
    assert _refresh(central, first["refresh_token"]).status_code == 401
    renewed = _refresh(central, second["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert central.get("/api/me", headers=bearer(renewed.json()["access_token"])).json()[
        "username"
    ] == ("north")
    assert _refresh(central, south["refresh_token"]).status_code == 200, "other sites keep theirs"
    admin_first = _pair(central, ADMIN["username"], ADMIN["password"])
    _pair(central, ADMIN["username"], ADMIN["password"])
    assert _refresh(central, admin_first["refresh_token"]).status_code == 200, (
        "an admin may hold several sign-ins (browser, scripts)"
    )


def test_throttle_failures_are_listed_by_username(make_central: Any) -> None:
    central = make_central()
    for name in ("north", "north", "nobody"):
        _sign_in(_from(central, STRANGER), name, "Guess-password-1")

    with portal_state(central).database.session() as session:
        counts = throttle.failures(session, ["north", "nobody", "south"])

    assert counts == {"north": 2, "nobody": 1}


def test_the_migration_gives_old_refresh_tokens_a_family_each(database_url: str) -> None:
    from alembic import command

    from portal_central.db import alembic_config, make_engine, upgrade

    command.upgrade(alembic_config(database_url), "rev_2026_11_23_compare")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, username, email, institution, password_hash, role, "
                    "status, created_at, failed_sign_ins, locked_until, token_version) VALUES "
                    "(1, 'north', 'n@h.example', 'North', 'x', 'site', 'approved', "
                    ":now, 3, :now, 0)"
                ),
                {"now": "2026-11-30 10:00:00"},
            )
            for token_id in (1, 2):
                connection.execute(
                    text(
                        "INSERT INTO refresh_tokens (id, user_id, token_hash, created_at, "
                        "expires_at) VALUES (:id, 1, :hash, :now, :now)"
                    ),
                    {"id": token_id, "hash": f"h{token_id}", "now": "2026-11-30 10:00:00"},
                )

        upgrade(database_url)

        with engine.connect() as connection:
            families = connection.execute(
                text("SELECT id, family_id FROM refresh_tokens ORDER BY id")
            ).all()
            columns = {c["name"] for c in inspect(connection).get_columns("users")}
    finally:
        engine.dispose()
    assert [tuple(row) for row in families] == [(1, "old-1"), (2, "old-2")]
    assert not {"failed_sign_ins", "locked_until"} & columns


def test_addresses_of_one_ipv6_network_share_one_wait(make_central: Any) -> None:
    central = make_central(
        client_free_failures=2, account_free_failures=100, sign_in_first_delay_seconds=30
    )
    approved_site(central, "north")
    for k, name in enumerate(("alice", "bob")):
        _sign_in(_from(central, (f"2001:db8:1:2::{k + 1}", 5000)), name, "Some-password-1")

    same_network = _sign_in(_from(central, ("2001:db8:1:2:ffff::9", 5000)), "north", SITE_PASSWORD)
    other_network = _sign_in(_from(central, ("2001:db8:1:3::1", 5000)), "north", SITE_PASSWORD)

    assert same_network.json() == WRONG_BODY, "a fresh address in the same /64 still waits"
    assert other_network.status_code == 200
    assert "client:2001:db8:1:2::/64" in _throttle_rows(central)


def test_a_browser_the_admin_signed_in_from_before_skips_the_accounts_wait(
    make_central: Any,
) -> None:
    """Strangers at many addresses can keep the admin's username waiting; the admin's own
    browser (a signed cookie from an earlier sign-in) is not kept out by it."""
    central = make_central(account_free_failures=2, sign_in_first_delay_seconds=60)
    browser = _from(central, ELSEWHERE)
    browser_sign_in(browser, ADMIN["username"], ADMIN["password"])
    assert browser.cookies.get("fip_device")
    browser.cookies.delete("fip_session")  # the session ended; the device cookie stays
    for k in range(3):
        _sign_in(_from(central, (f"203.0.113.{k + 1}", 4000)), "admin", "Guess-password-1")
    form = {"username": ADMIN["username"], "password": ADMIN["password"]}
    fresh = _from(central, THIRD).post("/sign-in", data=form)
    assert fresh.status_code == 401, "a browser without the cookie waits"
    assert WRONG in fresh.text

    again = browser.post("/sign-in", data=form, follow_redirects=False)

    assert again.status_code == 303, again.text
    approved_site(central, "north")
    for _ in range(2):
        _sign_in(_from(central, STRANGER), "north", "Guess-password-1")
    borrowed = _from(central, THIRD)
    borrowed.cookies.set("fip_device", browser.cookies["fip_device"], path="/sign-in")
    as_north = borrowed.post("/sign-in", data={"username": "north", "password": SITE_PASSWORD})
    assert as_north.status_code == 401, "the admin's cookie does not let another username skip"
    as_admin = borrowed.post("/sign-in", data=form, follow_redirects=False)
    assert as_admin.status_code == 303, "the same cookie, for its own username, is sent and works"
