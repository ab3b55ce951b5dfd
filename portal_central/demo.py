"""``fip demo``: central and two demo sites on this machine, ready to try in a browser.

It writes demo data for three hospitals, makes a development CA and certificate, creates an
admin and two approved site accounts (passwords generated once and kept in the demo folder),
starts central over TLS and two site portals as child processes (each with a local password
of its own, generated once and kept there too), configures and signs in the sites, and prints
what to open. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from federation.demo import write_demo_data
from portal_central.accounts import service
from portal_central.db import Database, upgrade
from portal_central.devcert import make_dev_cert
from portal_central.security import Passwords
from portal_central.settings import CentralSettings

SITES = ("north", "south")


def configure(demo: argparse.ArgumentParser) -> None:
    """``fip demo``'s flags (its line in ``fip --help`` is in federation.cli)."""
    demo.description = (
        "Start central (TLS, SQLite, mail to the outbox) and two site portals on this "
        "machine, with demo data, an admin and two approved site accounts. Ctrl-C stops all."
    )
    demo.add_argument("--dir", type=Path, default=Path(".demo"), help="demo folder (default .demo)")
    demo.add_argument("--central-port", type=int, default=8443)
    demo.add_argument("--site-ports", type=int, nargs=2, default=(8001, 8002), metavar="PORT")
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    _say(f"fip demo: demo folder {folder}")
    fresh_data = not (folder / "data").exists()
    _say("writing demo data for three hospitals" if fresh_data else "demo data: kept from before")
    data = write_demo_data(folder / "data")
    tls = folder / "tls"
    fresh = not (tls / "server.pem").exists()
    if fresh:
        _say("making a development CA and a certificate for central")
        make_dev_cert(tls)
    ca_file, certfile, keyfile = tls / "ca.pem", tls / "server.pem", tls / "server-key.pem"
    central_url = f"https://127.0.0.1:{args.central_port}"
    settings = CentralSettings(data_dir=folder / "central", public_url=central_url).prepare()
    if not (folder / "credentials.json").exists():
        _say("creating central's database, an admin and two approved site accounts")
    credentials = _accounts(folder, settings)
    env = {
        **os.environ,
        "FIP_CENTRAL_DATA_DIR": str(settings.data_dir),
        "FIP_CENTRAL_PUBLIC_URL": central_url,
    }
    fip = str(Path(sys.executable).parent / "fip")
    children: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        _say(f"starting central on port {args.central_port}")
        children.append(
            _start(
                [
                    *(fip, "central", "--port", str(args.central_port)),
                    *("--certfile", str(certfile), "--keyfile", str(keyfile)),
                ],
                env,
                logs / "central.log",
            )
        )
        _wait(f"{central_url}/health", ca_file, *children[0])
        site_urls = {}
        for name, port in zip(SITES, args.site_ports, strict=True):
            _say(f"starting the site portal of {name} on port {port} and signing it in")
            site_env = {
                **os.environ,
                "FIP_SITE_LOCAL_PASSWORD": credentials[name]["local_password"],
            }
            children.append(
                _start(
                    [fip, "site", "--port", str(port), "--data-dir", str(folder / f"site-{name}")],
                    site_env,
                    logs / f"site-{name}.log",
                )
            )
            site_urls[name] = f"http://127.0.0.1:{port}"
            _wait(f"{site_urls[name]}/health", None, *children[-1])
            _connect(site_urls[name], central_url, ca_file, credentials[name])
        print(
            banner(
                central_url, site_urls, credentials, data, ca_file, [log for _, log in children]
            ),
            flush=True,
        )
        signal.signal(signal.SIGTERM, _interrupt)
        while all(child.poll() is None for child, _ in children):
            time.sleep(0.5)
        stopped = next(log for child, log in children if child.poll() is not None)
        print(f"fip demo: a process stopped; stopping the others. Its log: {stopped}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the demo…", flush=True)
        for child, _ in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child, _ in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def _say(step: str) -> None:
    """One line of progress on the console (the portals' own logs go to files)."""
    print(step if step.startswith("fip demo") else f"  {step}…", flush=True)


def _start(
    command: list[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """A portal as a child process whose output (JSON logs, access logs) goes to ``log``."""
    with log.open("ab") as handle:
        child = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return child, log


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _accounts(folder: Path, settings: CentralSettings) -> dict[str, dict[str, str]]:
    """The admin and the two site accounts: created once, their passwords kept in the folder."""
    path = folder / "credentials.json"
    if path.exists():
        stored: dict[str, dict[str, str]] = json.loads(path.read_text())
        missing = [name for name in SITES if "local_password" not in stored[name]]
        for name in missing:  # a demo folder from before the sites had local passwords
            stored[name]["local_password"] = _password()
        if missing:
            path.write_text(json.dumps(stored, indent=2))
        return stored
    upgrade(settings.database)
    database = Database(settings.database)
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    credentials: dict[str, dict[str, str]] = {}
    try:
        with database.session() as session:
            admin_password = _password()
            service.create_admin(
                session=session,
                passwords=passwords,
                username="admin",
                email="admin@central.demo",
                password=admin_password,
            )
            credentials["admin"] = {"username": "admin", "password": admin_password}
            for name in SITES:
                password = _password()
                user = service.register(
                    session=session,
                    passwords=passwords,
                    username=name,
                    email=f"{name}@hospital.demo",
                    institution=f"{name.capitalize()} Hospital (demo)",
                    password=password,
                )
                service.decide(session=session, user_id=user.id, action="approve")
                credentials[name] = {
                    "username": name,
                    "password": password,
                    "site_id": user.site_id or "",
                    "local_password": _password(),
                }
    finally:
        database.dispose()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(credentials, handle, indent=2)
    return credentials


def _password() -> str:
    return "demo-" + secrets.token_urlsafe(9)


def _wait(
    url: str, ca_file: Path | None, child: subprocess.Popen[Any], log: Path, seconds: float = 30
) -> None:
    import ssl

    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(
                f"fip demo: a process stopped (exit {child.returncode}); the end of {log}:\n{tail}"
            )
        try:
            if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"fip demo: {url} did not answer within {seconds:.0f} s; see {log}")


def _connect(site_url: str, central_url: str, ca_file: Path, account: dict[str, str]) -> None:
    with httpx.Client(base_url=site_url, timeout=30) as client:
        token = client.post("/api/local/token", json={"password": account["local_password"]})
        if token.status_code != 200:
            raise SystemExit(
                f"fip demo: the site portal at {site_url} refused the local password kept in "
                f"credentials.json: {token.text}"
            )
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        client.post(
            "/api/settings",
            json={
                "central_url": central_url,
                "site_id": account["site_id"],
                "ca_file": str(ca_file),
            },
        ).raise_for_status()
        response = client.post(
            "/api/sign-in", json={"username": account["username"], "password": account["password"]}
        )
        if response.status_code != 200:
            raise SystemExit(f"fip demo: signing in {account['username']} failed: {response.text}")


def banner(
    central_url: str,
    site_urls: dict[str, str],
    credentials: dict[str, dict[str, str]],
    data: dict[str, Path],
    ca_file: Path,
    logs: list[Path],
) -> str:
    """What to open and how to sign in: printed last, once everything runs."""
    admin = credentials["admin"]
    rule = "=" * 78
    lines = [
        "",
        rule,
        "Federated Imputation Portal: the demo is running. Ctrl-C stops it.",
        rule,
        "",
        "Central (open it in a browser):",
        f"    {central_url}",
        f"    username  {admin['username']}",
        f"    password  {admin['password']}",
    ]
    for name, url in site_urls.items():
        account = credentials[name]
        lines += [
            "",
            f"Site portal of {name} (signed in to central as {account['username']}, "
            f"site_id {account['site_id']}):",
            f"    {url}",
            f"    local password  {account['local_password']}",
            f"    (its central password, should you sign it in again: {account['password']})",
        ]
    lines += [
        "",
        "Demo data (one CSV per hospital, with missing bmi and smoker):",
        *(f"    {name:<8} {path}" for name, path in data.items()),
        "",
        "The browser warns about central's certificate: it comes from the demo's own CA",
        f"({ca_file}). Proceed, or import that CA into the browser.",
        "",
        "Try it: at central, Jobs > New job, pick SIMICE, read the header of central.csv, tick",
        "bmi (continuous) and smoker (binary), choose both sites, create; upload central.csv on",
        "the job page. At each site, open the job, upload its CSV and click Start.",
        "",
        "The portals' logs (one JSON object a line, page views included):",
        *(f"    {log}" for log in logs),
        f"Accounts, passwords and data stay in {ca_file.parent.parent} for the next run.",
        rule,
    ]
    return "\n".join(lines)
