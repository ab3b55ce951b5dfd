"""Central as a real process: `fip central` on loopback, mail to a real aiosmtpd server.

A site registers over HTTP, the admin approves it, the approval mail arrives at the SMTP server
and the site_id read from it is the one central gives the site's tokens. The `fip central`
maintenance commands run as subprocesses too. SQLite only: these tests are about the process.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from aiosmtpd.controller import Controller

from tests.central_fixtures import ADMIN, SITE_PASSWORD
from tests.processes import free_port

FIP = str(Path(sys.executable).parent / "fip")
START_SECONDS = 60.0
"""How long central may take to answer /health after it is started."""


def _wait_for(condition: Callable[[], object], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


class Mailbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


class SmtpServer:
    """A real SMTP server on loopback that can be stopped (its port closed) and started again."""

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _environment(**settings: str) -> dict[str, str]:
    """This process's environment without any FIP_CENTRAL_ setting, plus ``settings``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("FIP_CENTRAL_")}
    cheap = {"FIP_CENTRAL_ARGON2_TIME_COST": "1", "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64"}
    return kept | cheap | {f"FIP_CENTRAL_{k.upper()}": v for k, v in settings.items()}


def _fip(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FIP, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@dataclass
class Live:
    url: str
    data_dir: Path
    env: dict[str, str]
    smtp: SmtpServer
    log: Path
    admin_token: str = field(default="")

    def client(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=10)

    def admin(self) -> httpx2.Client:
        client = self.client()
        client.headers["Authorization"] = f"Bearer {self.admin_token}"
        return client


def _stop(process: subprocess.Popen[bytes], handle: IO[bytes]) -> int:
    """SIGTERM (SIGKILL after 10 s); the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    handle.close()
    return process.returncode


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`fip central` with an admin made by `fip central create-admin`, mailing to aiosmtpd."""
    root = tmp_path_factory.mktemp("live")
    smtp = SmtpServer()
    smtp.start()
    port = free_port()
    data_dir = root / "central"
    env = _environment(
        smtp_host="127.0.0.1", smtp_port=str(smtp.port), smtp_security="none", mail_from="fip@c.x"
    )
    log = root / "central.log"
    handle = log.open("wb")
    process: subprocess.Popen[bytes] | None = None
    try:
        created = _fip(
            env,
            *("central", "--data-dir", str(data_dir), "create-admin"),
            *("--username", ADMIN["username"], "--email", ADMIN["email"]),
            *("--password", ADMIN["password"]),
        )
        assert created.returncode == 0, created.stderr
        assert f"admin '{ADMIN['username']}' created" in created.stdout
        process = subprocess.Popen(
            [FIP, "central", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
        server = Live(f"http://127.0.0.1:{port}", data_dir, env, smtp, log)
        _wait_until_healthy(server, process)
        with server.client() as client:
            response = client.post(
                "/api/auth/token",
                data={"username": ADMIN["username"], "password": ADMIN["password"]},
            )
            assert response.status_code == 200, response.text
            server.admin_token = response.json()["access_token"]
        yield server
    finally:
        smtp.stop()
        if process is None:
            handle.close()
        else:
            code = _stop(process, handle)
            # uvicorn re-raises SIGTERM once it has shut down gracefully
            output = log.read_text(errors="replace")
            assert code in (0, -signal.SIGTERM), f"central stopped with {code}:\n{output[-4000:]}"
            assert "Application shutdown complete" in output, output[-4000:]
            assert "Traceback" not in output, output[-4000:]


def _wait_until_healthy(server: Live, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"central exited ({process.returncode}):\n{_log(server)}")
        try:
            if httpx2.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"central did not answer in {START_SECONDS} s:\n{_log(server)}")


def _log(server: Live) -> str:
    return server.log.read_text(errors="replace")[-4000:]


def _register(server: Live, name: str) -> int:
    with server.client() as client:
        response = client.post(
            "/api/register",
            json={
                "username": name,
                "email": f"{name}@hospital.example",
                "institution": f"{name.capitalize()} Hospital",
                "password": SITE_PASSWORD,
            },
        )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"
    user_id: int = response.json()["id"]
    return user_id


def _site_me(server: Live, name: str) -> dict[str, Any]:
    with server.client() as client:
        signed_in = client.post(
            "/api/auth/token", data={"username": name, "password": SITE_PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        access = signed_in.json()["access_token"]
        me = client.get("/api/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200, me.text
    body: dict[str, Any] = me.json()
    return body


def _mails_to(server: Live, address: str) -> list[EmailMessage]:
    return [m for m in server.smtp.mailbox.messages if m["To"] == address]


# ---------------------------------------------------------------- HTTP and mail


def test_the_approval_mail_carries_the_site_id_the_site_signs_in_with(live: Live) -> None:
    user_id = _register(live, "north")

    with live.admin() as admin:
        approved = admin.post(f"/api/users/{user_id}/approve")

    assert approved.status_code == 200, approved.text
    assert approved.json()["mail_sent"] is True
    _wait_for(lambda: _mails_to(live, "north@hospital.example"), seconds=5, what="the mail")
    mail = _mails_to(live, "north@hospital.example")[-1]
    assert mail["To"] == "north@hospital.example"
    assert mail["From"] == "fip@c.x"
    body = mail.get_content()
    assert isinstance(body, str)
    found = re.search(r"Your site_id:\s+(\S+)", body)
    assert found, body
    site_id = found.group(1)
    assert site_id in str(mail["Subject"])
    assert live.url in body, "the mail gives the central URL"
    assert approved.json()["site_id"] == site_id
    assert _site_me(live, "north")["site_id"] == site_id
    with live.admin() as admin:
        assert admin.get("/api/outbox").json() == [], "sent mail is not kept in the outbox"


def test_approval_with_the_smtp_server_down_still_approves_and_says_so(live: Live) -> None:
    user_id = _register(live, "south")
    # The admins' notice of this registration goes out after the answer: let it arrive before
    # the server goes down, or it hangs in the middle of its conversation.
    _wait_for(
        lambda: any("south" in str(m["Subject"]) for m in _mails_to(live, ADMIN["email"])),
        seconds=5,
        what="the admin's notice of the registration",
    )
    live.smtp.stop()
    try:
        with live.admin() as admin:
            response = admin.post(f"/api/users/{user_id}/approve")
    finally:
        live.smtp.start()

    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["status"] == "approved"
    assert decision["mail_sent"] is False
    assert "could not be sent" in decision["notice"]
    assert decision["site_id"] in decision["notice"], "the admin can pass the site_id on"
    assert _mails_to(live, "south@hospital.example") == []
    with live.client() as client:
        assert client.get("/health").json() == {"status": "ok", "database": "ok", "sites_online": 0}
    assert _site_me(live, "south")["site_id"] == decision["site_id"]
    log = _log(live)
    assert "mail to south@hospital.example failed" in log
    assert "Traceback" not in log


def test_the_admin_is_mailed_of_a_registration_and_a_forgotten_password_mails_a_link(
    live: Live,
) -> None:
    _register(live, "east")
    _wait_for(
        lambda: any("east" in str(m["Subject"]) for m in _mails_to(live, ADMIN["email"])),
        seconds=5,
        what="the admin's notice of the registration",
    )
    notice = [m for m in _mails_to(live, ADMIN["email"]) if "east" in str(m["Subject"])][-1]
    assert str(notice["Subject"]) == "New site registration: East Hospital (east)"
    assert f"{live.url}/admin/users?status=pending" in str(notice.get_content())

    with live.client() as client:
        known = client.post("/api/auth/forgot-password", json={"who": "east@hospital.example"})
        unknown = client.post("/api/auth/forgot-password", json={"who": "nobody"})

    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    _wait_for(lambda: _mails_to(live, "east@hospital.example"), seconds=5, what="the reset link")
    mail = _mails_to(live, "east@hospital.example")[-1]
    body = str(mail.get_content())
    found = re.search(rf"{re.escape(live.url)}/reset-password\?token=(\S+)", body)
    assert found, body
    assert "30 minutes" in body and "works once" in body
    with live.client() as client:
        reset = client.post(
            "/api/auth/reset-password",
            json={"token": found.group(1), "new_password": "Brand-new-2027!"},
        )
    assert reset.status_code == 200, reset.text


# ---------------------------------------------------------------- the maintenance commands


def test_create_admin_refuses_a_taken_username(live: Live) -> None:
    again = _fip(
        live.env,
        *("central", "--data-dir", str(live.data_dir), "create-admin"),
        *("--username", ADMIN["username"], "--email", "other@central.example"),
        *("--password", "Second-key-2026"),
    )

    assert again.returncode == 1
    assert again.stderr.startswith("fip: error:")
    assert "taken" in again.stderr
    assert "Traceback" not in again.stderr


def test_db_upgrade_creates_and_keeps_the_schema(tmp_path: Path) -> None:
    env = _environment()
    data_dir = tmp_path / "fresh"

    first = _fip(env, "central", "--data-dir", str(data_dir), "db", "upgrade")

    assert first.returncode == 0, first.stderr
    assert "newest migration" in first.stdout
    with sqlite3.connect(data_dir / "central.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"users", "refresh_tokens", "outbox", "jobs", "alembic_version"} <= tables
    assert len(versions) == 1
