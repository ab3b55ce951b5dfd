"""The admin manages accounts: edits an email, deletes an account (never the last admin, never
one that a job under way names), is told of new registrations (mail and a badge), and sees a
decided row leave the tab it no longer belongs to.

Every test runs on SQLite and on PostgreSQL. Mail goes to the outbox (no SMTP server here;
tests/test_central_live.py reads the registration notice from a real SMTP server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from federation.demo import COLUMNS
from portal_central.accounts import service
from portal_central.models import User
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    htmx_headers,
    portal_state,
    register_site,
    token,
)

TARGETS = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]


def _outbox(client: TestClient) -> list[dict[str, Any]]:
    mails: list[dict[str, Any]] = client.get("/api/outbox", headers=admin_auth(client)).json()
    return mails


def _usernames(client: TestClient) -> list[str]:
    return [u["username"] for u in client.get("/api/users", headers=admin_auth(client)).json()]


# ---------------------------------------------------------------- edit email


def test_the_admin_edits_an_email_and_a_bad_one_names_the_field(central: TestClient) -> None:
    user_id, _ = approved_site(central, "north")

    bad = central.patch(
        f"/api/users/{user_id}", json={"email": "not-an-email"}, headers=admin_auth(central)
    )
    good = central.patch(
        f"/api/users/{user_id}", json={"email": " it@north.example "}, headers=admin_auth(central)
    )
    as_site = central.patch(
        f"/api/users/{user_id}",
        json={"email": "mine@north.example"},
        headers=bearer(token(central, "north", SITE_PASSWORD)),
    )

    assert bad.status_code == 422 and bad.json()["field"] == "email"
    assert good.status_code == 200, good.text
    assert good.json()["email"] == "it@north.example"
    assert as_site.status_code == 403
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    row = central.post(
        f"/admin/users/{user_id}/email?tab=approved",
        data={"email": "desk@north.example"},
        headers=htmx_headers(csrf),
    )
    assert row.status_code == 200
    assert "Email changed to desk@north.example" in row.text
    refused = central.post(
        f"/admin/users/{user_id}/email?tab=approved",
        data={"email": "nope"},
        headers=htmx_headers(csrf),
    )
    assert "enter an email address" in refused.text
    assert central.get("/api/me", headers=admin_auth(central)).status_code == 200
    users = central.get("/api/users", headers=admin_auth(central)).json()
    assert {u["username"]: u["email"] for u in users}["north"] == "desk@north.example"


# ---------------------------------------------------------------- delete


def test_the_last_admin_cannot_be_deleted_but_another_can(central: TestClient) -> None:
    me = central.get("/api/me", headers=admin_auth(central)).json()

    last = central.delete(f"/api/users/{me['id']}", headers=admin_auth(central))

    assert last.status_code == 409
    assert "last admin" in last.json()["detail"]
    state = portal_state(central)
    with state.database.session() as session:
        other = service.create_admin(
            session=session,
            passwords=state.passwords,
            username="second",
            email="second@central.example",
            password="Another-key-2026",
        ).id
    gone = central.delete(f"/api/users/{other}", headers=admin_auth(central))
    assert gone.status_code == 200, gone.text
    assert "second is deleted" in gone.json()["detail"]
    assert _usernames(central) == [ADMIN["username"]]
    again = central.delete(f"/api/users/{other}", headers=admin_auth(central))
    assert again.status_code == 404


def test_a_site_named_by_an_unfinished_job_is_kept_and_after_the_job_only_a_nameless_row(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    user_id, site_id = approved_site(central, "north")
    pair = central.post(
        "/api/auth/token", data={"username": "north", "password": SITE_PASSWORD}
    ).json()
    job = central.post(
        "/api/jobs",
        json={
            "name": "with north",
            "algorithm": "SIMICE",
            "columns": list(COLUMNS),
            "targets": TARGETS,
            "imputations": 2,
            "parameters": {},
            "seed": 1,
            "participants": [site_id],
        },
        headers=admin_auth(central),
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    uploaded = central.post(
        f"/api/jobs/{job_id}/data",
        files={"file": ("central.csv", demo_files["central"].read_bytes(), "text/csv")},
        headers=admin_auth(central),
    )
    assert uploaded.json()["state"] == "waiting"

    refused = central.delete(f"/api/users/{user_id}", headers=admin_auth(central))

    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"north takes part in job {job_id} 'with north', which is waiting; cancel that job or "
        "let it finish, then delete the account"
    )
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 200
    central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central))

    deleted = central.delete(f"/api/users/{user_id}", headers=admin_auth(central))

    assert deleted.status_code == 200, deleted.text
    assert "Finished jobs still name its institution" in deleted.json()["detail"]
    assert "north" not in _usernames(central)
    assert central.get("/api/me", headers=bearer(pair["access_token"])).status_code == 401
    refreshed = central.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 401
    signed_in = central.post(
        "/api/auth/token", data={"username": "north", "password": SITE_PASSWORD}
    )
    assert signed_in.status_code == 401
    listed = central.get(f"/api/jobs/{job_id}", headers=admin_auth(central))
    assert listed.status_code == 200, "the finished job keeps its record"
    assert register_site(central, "north"), "the username is free again"


def test_deleting_a_never_used_registration_removes_it_through_the_page(
    central: TestClient,
) -> None:
    user_id = register_site(central, "spam")
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])

    response = central.post(
        f"/admin/users/{user_id}/delete?tab=pending", headers=htmx_headers(csrf)
    )

    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    row = soup.select_one(f"tr#user-{user_id}")
    assert row is not None and "spam is deleted" in row.get_text()
    pending = soup.select_one("#count-pending")
    assert pending is not None and pending.get("hx-swap-oob") == "true"
    assert pending.get_text() == "0"
    assert "spam" not in _usernames(central)
    with portal_state(central).database.session() as session:
        assert session.get(User, user_id) is None, "nothing named it: the row is gone"


# ---------------------------------------------------------------- new registrations


def test_admins_are_mailed_of_a_registration_and_see_a_pending_badge(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    assert central.get("/jobs").status_code == 200
    assert "pending-badge" not in central.get("/jobs").text

    register_site(central, "north")
    central.post(
        "/register",
        data={
            "username": "south",
            "email": "south@hospital.example",
            "institution": "South Hospital",
            "password": SITE_PASSWORD,
        },
    )

    mails = _outbox(central)
    assert [m["to"] for m in mails] == [ADMIN["email"]] * 2
    assert {m["subject"] for m in mails} == {
        "New site registration: North Hospital (north)",
        "New site registration: South Hospital (south)",
    }
    assert "/admin/users?status=pending" in mails[0]["body"]
    page = BeautifulSoup(central.get("/jobs").text, "html.parser")
    badge = page.select_one("#pending-badge")
    assert badge is not None and badge.get_text() == "2"
    assert "registration(s) waiting" in str(badge.get("title"))
    assert csrf


def test_an_approved_row_leaves_the_pending_tab_and_the_counts_follow(central: TestClient) -> None:
    user_id = register_site(central, "north")
    register_site(central, "south")
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get("/admin/users?status=pending").text, "html.parser")
    approve = page.select_one(f"tr#user-{user_id} button[hx-post$='approve?tab=pending']")
    assert isinstance(approve, Tag)

    response = central.post(str(approve["hx-post"]), headers=htmx_headers(csrf))

    soup = BeautifulSoup(response.text, "html.parser")
    row = soup.select_one(f"tr#user-{user_id}")
    assert row is not None and "moved" in row.get_attribute_list("class")
    assert not row.select("button"), "no longer a pending row"
    site_id = row.select_one("code")
    assert site_id is not None
    assert "moved to Approved" in row.get_text(" ", strip=True)
    assert site_id.get_text() in row.get_text()
    counts = {t["id"]: t.get_text() for t in soup.select("[hx-swap-oob]")}
    assert counts["count-pending"] == "1" and counts["count-approved"] == "1"
    assert counts["pending-badge"] == "1"
    on_its_tab = central.post(
        f"/admin/users/{user_id}/disable?tab=approved", headers=htmx_headers(csrf)
    )
    assert "moved" in on_its_tab.text, "disabled: it leaves Approved too"
    plain = central.post(f"/admin/users/{user_id}/enable", headers=htmx_headers(csrf))
    row = BeautifulSoup(plain.text, "html.parser").select_one(f"tr#user-{user_id}")
    assert row is not None and row.select("button"), "without a tab: the updated row itself"
