"""A whole federation on loopback for end-to-end tests: central and two sites as processes.

Central runs with TLS from a CA made by trustme, mail goes to a real aiosmtpd server, and
each site portal is its own `fip site` process configured and signed in through its API.
"""

from __future__ import annotations

import email
import os
import re
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import trustme
from aiosmtpd.controller import Controller

from tests.processes import FIP, Process, free_port, wait_for
from tests.site_fixtures import CHEAP_ARGON2_ENV, LOCAL_PASSWORD

ADMIN_PASSWORD = "Central-key-2026"
SITE_PASSWORD = "Site-pass-2026!"


class Mailbox:
    """An aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class SitePortal:
    name: str
    url: str
    data_dir: Path
    process: Process
    site_id: str = ""
    local_password: str = LOCAL_PASSWORD

    def api(self) -> httpx.Client:
        """A client of the site's JSON API, signed in with its local password."""
        with httpx.Client(base_url=self.url, timeout=30) as anonymous:
            response = anonymous.post("/api/local/token", json={"password": self.local_password})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )


@dataclass
class Federation:
    root: Path
    central_url: str
    ca_file: Path
    central_dir: Path
    central: Process
    mailbox: Mailbox
    sites: list[SitePortal] = field(default_factory=list)

    @property
    def tmp_dir(self) -> Path:
        """The temporary folder (TMPDIR) of central and of every site process."""
        return self.root / "tmp"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @contextmanager
    def admin(self) -> Iterator[httpx.Client]:
        """An HTTPS client signed in as central's admin."""
        with httpx.Client(base_url=self.central_url, verify=self.tls(), timeout=30) as client:
            response = client.post(
                "/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
            )
            response.raise_for_status()
            client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
            yield client


def upload_and_start(fed: Federation, job_id: int, files: Mapping[str, Path]) -> None:
    """Each site uploads its file (``files[site.name]``) and clicks Start, then central uploads
    its own (``files["central"]``): the order a job starts in once every site is ready."""
    for site in fed.sites:
        with site.api() as api:
            uploaded = api.post(
                f"/api/jobs/{job_id}/data",
                files={"file": (f"{site.name}.csv", files[site.name].read_bytes())},
            )
            assert uploaded.status_code == 200, uploaded.text
            assert api.post(f"/api/jobs/{job_id}/start").status_code == 200
    with fed.admin() as admin:
        response = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", files["central"].read_bytes())},
        )
        assert response.status_code == 200, response.text


def job_of(fed: Federation, job_id: int) -> dict[str, Any]:
    """The job as central's API shows it to the admin."""
    with fed.admin() as admin:
        job: dict[str, Any] = admin.get(f"/api/jobs/{job_id}").json()
        return job


def start_federation(
    root: Path, *, site_names: tuple[str, ...] = ("north", "south"), smtp_server: bool = True
) -> Iterator[Federation]:
    """Central over TLS (mail to a real SMTP server, or to the outbox), then the site portals."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = root / "tls"
    tls.mkdir(parents=True)
    ca_file, certfile, keyfile = tls / "ca.pem", tls / "server.pem", tls / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))

    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port()) if smtp_server else None
    if smtp is not None:
        smtp.start()
    port = free_port()
    central_dir = root / "central"
    (root / "tmp").mkdir(exist_ok=True)
    env = {
        "TMPDIR": str(root / "tmp"),
        "FIP_CENTRAL_DATA_DIR": str(central_dir),
        "FIP_CENTRAL_ARGON2_TIME_COST": "1",
        "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64",
        # The admin, the tests and every site register from 127.0.0.1 (sign-ins: below).
        "FIP_CENTRAL_REGISTER_REQUESTS_PER_HOUR": "10000",
        **(
            {
                "FIP_CENTRAL_SMTP_HOST": "127.0.0.1",
                "FIP_CENTRAL_SMTP_PORT": str(smtp.port if smtp else 0),
                "FIP_CENTRAL_SMTP_SECURITY": "none",
            }
            if smtp_server
            else {}
        ),
        "FIP_CENTRAL_SITE_GRACE_SECONDS": "6",
        # Every process of this federation signs in from 127.0.0.1: one address, many clients.
        "FIP_CENTRAL_TOKEN_REQUESTS_PER_MINUTE": "10000",
        "FIP_CENTRAL_PUBLIC_URL": f"https://127.0.0.1:{port}",
    }
    subprocess.run(
        [
            FIP,
            "central",
            "create-admin",
            "--username",
            "admin",
            "--email",
            "admin@central.example",
            "--password",
            ADMIN_PASSWORD,
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    central = Process(
        ["central", "--port", str(port), "--certfile", str(certfile), "--keyfile", str(keyfile)],
        log=root / "central.log",
        env=env,
    )
    federation = Federation(
        root=root,
        central_url=f"https://127.0.0.1:{port}",
        ca_file=ca_file,
        central_dir=central_dir,
        central=central,
        mailbox=mailbox,
    )
    try:
        central.wait_until_up(f"{federation.central_url}/health", verify=federation.tls())
        for name in site_names:
            federation.sites.append(add_site(federation, name))
        yield federation
    finally:
        for site in federation.sites:
            site.process.stop()
        central.stop()
        if smtp is not None:
            smtp.stop()


def add_site(federation: Federation, name: str) -> SitePortal:
    """Register a site at central, approve it, read its site_id from the mail, start its portal."""
    with httpx.Client(base_url=federation.central_url, verify=federation.tls()) as anonymous:
        response = anonymous.post(
            "/api/register",
            json={
                "username": name,
                "email": f"{name}@hospital.example",
                "institution": f"{name.capitalize()} Hospital",
                "password": SITE_PASSWORD,
            },
        )
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
    address = f"{name}@hospital.example"
    with federation.admin() as admin:
        approved = admin.post(f"/api/users/{user_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["mail_sent"], approved.json()

    def to_site() -> list[Any]:  # the admins' notice of the registration goes elsewhere
        return [m for m in federation.mailbox.messages if m["To"] == address]

    wait_for(lambda: to_site(), seconds=10, what="the approval mail")
    mail = to_site()[-1]
    body = mail.get_payload(decode=True).decode()
    found = re.search(r"Your site_id:\s+(\w+)", body)
    assert found, body
    site_id = found.group(1)
    assert mail["To"] == f"{name}@hospital.example"

    portal = start_site_portal(federation, name, site_id)
    connect_site(federation, portal)
    return portal


def start_site_portal(
    federation: Federation, name: str, site_id: str = "", *, first_run: bool = False
) -> SitePortal:
    """A `fip site` process of its own, not yet configured; its local password is set from
    the environment, unless ``first_run`` leaves it for the first visit to choose."""
    port = free_port()
    data_dir = federation.root / f"site-{name}"
    process = Process(
        ["site", "--port", str(port), "--data-dir", str(data_dir)],
        log=federation.root / f"site-{name}.log",
        env={
            "TMPDIR": str(federation.tmp_dir),
            "FIP_SITE_HEARTBEAT_SECONDS": "1",
            "FIP_SITE_RECONNECT_MAX_SECONDS": "1",
            **CHEAP_ARGON2_ENV,
            **({} if first_run else {"FIP_SITE_LOCAL_PASSWORD": LOCAL_PASSWORD}),
        },
    )
    portal = SitePortal(
        name=name,
        url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        process=process,
        site_id=site_id,
    )
    try:
        process.wait_until_up(f"{portal.url}/health")
    except AssertionError:
        process.stop()  # its log file too, or the failure turns up later as a ResourceWarning
        raise
    return portal


def connect_site(
    federation: Federation,
    portal: SitePortal,
    *,
    central_url: str = "",
    password: str = SITE_PASSWORD,
) -> None:
    """Point a site portal at central (or at ``central_url``, e.g. a relay) and sign it in."""
    with portal.api() as api:
        response = api.post(
            "/api/settings",
            json={
                "central_url": central_url or federation.central_url,
                "site_id": portal.site_id,
                "ca_file": str(federation.ca_file),
            },
        )
        assert response.status_code == 200, response.text
        response = api.post("/api/sign-in", json={"username": portal.name, "password": password})
        assert response.status_code == 200, response.text
        wait_for(
            lambda: api.get("/api/status").json()["status"] == "connected",
            seconds=15,
            what=f"site {portal.name} to connect",
        )


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Central and two site portals as processes, started once and shared by every test module
    that leaves them as it found them (a fixture that reroutes a site puts it back). A module
    whose tests break their federation (kill a site, say) defines a module-scoped ``network``
    of its own with ``start_federation``, as tests/test_federation_reconnect.py does."""
    yield from start_federation(tmp_path_factory.mktemp("federation"))
