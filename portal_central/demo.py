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


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run central and two demo sites locally, with demo data and accounts",
        description="Start central (TLS, SQLite, mail to the outbox) and two site portals on this "
        "machine, with demo data, an admin and two approved site accounts. Ctrl-C stops all.",
    )
    demo.add_argument("--dir", type=Path, default=Path(".demo"), help="demo folder (default .demo)")
    demo.add_argument("--central-port", type=int, default=8443)
    demo.add_argument("--site-ports", type=int, nargs=2, default=(8001, 8002), metavar="PORT")
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    folder: Path = args.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = write_demo_data(folder / "data")
    tls = folder / "tls"
    cert = make_dev_cert(tls) if not (tls / "server.pem").exists() else None
    ca_file, certfile, keyfile = tls / "ca.pem", tls / "server.pem", tls / "server-key.pem"
    central_url = f"https://127.0.0.1:{args.central_port}"
    settings = CentralSettings(data_dir=folder / "central", public_url=central_url).prepare()
    credentials = _accounts(folder, settings)
    env = {
        **os.environ,
        "FIP_CENTRAL_DATA_DIR": str(settings.data_dir),
        "FIP_CENTRAL_PUBLIC_URL": central_url,
    }
    fip = str(Path(sys.executable).parent / "fip")
    children = [
        subprocess.Popen(
            [
                fip,
                "central",
                "--port",
                str(args.central_port),
                "--certfile",
                str(certfile),
                "--keyfile",
                str(keyfile),
            ],
            env=env,
        )
    ]
    try:
        _wait(f"{central_url}/health", ca_file, children[0])
        site_urls = {}
        for name, port in zip(SITES, args.site_ports, strict=True):
            child = subprocess.Popen(
                [fip, "site", "--port", str(port), "--data-dir", str(folder / f"site-{name}")],
                env={**os.environ, "FIP_SITE_LOCAL_PASSWORD": credentials[name]["local_password"]},
            )
            children.append(child)
            site_urls[name] = f"http://127.0.0.1:{port}"
            _wait(f"{site_urls[name]}/health", None, child)
            _connect(site_urls[name], central_url, ca_file, credentials[name])
        _print(central_url, site_urls, credentials, data, ca_file, fresh=cert is not None)
        signal.signal(signal.SIGTERM, _interrupt)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("fip demo: a process stopped; stopping the others", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the demo…", flush=True)
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


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
    url: str, ca_file: Path | None, child: subprocess.Popen[Any], seconds: float = 30
) -> None:
    import ssl

    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(
                f"fip demo: a process stopped (exit {child.returncode}); see its output above"
            )
        try:
            if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"fip demo: {url} did not answer within {seconds:.0f} s")


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


def _print(
    central_url: str,
    site_urls: dict[str, str],
    credentials: dict[str, dict[str, str]],
    data: dict[str, Path],
    ca_file: Path,
    *,
    fresh: bool,
) -> None:
    admin = credentials["admin"]
    lines = [
        "",
        "Federated Imputation Portal: demo running",
        "",
        f"  central  {central_url}    sign in as {admin['username']} / {admin['password']}",
    ]
    for name, url in site_urls.items():
        account = credentials[name]
        lines.append(
            f"  {name:<8} {url}       site_id {account['site_id']} "
            f"(signed in as {account['username']} / {account['password']})"
        )
        lines.append(
            f"  {'':<8} {'':<22}  local password of this site portal: {account['local_password']}"
        )
    lines += [
        "",
        "  Demo data (one CSV per hospital, with missing bmi and smoker):",
        *(f"    {name:<8} {path}" for name, path in data.items()),
        "",
        "  The browser will warn about central's certificate: it comes from the demo's own CA",
        f"  ({ca_file}). Proceed, or import that CA into the browser.",
        "",
        "  Try it: at central, Jobs > New job, pick SIMICE, read the header of central.csv, tick",
        "  bmi (continuous) and smoker (binary), choose both sites, create; upload central.csv on",
        "  the job page. At each site, open the job, upload its CSV and click Start.",
        "",
        "  Ctrl-C stops everything."
        + ("" if fresh else " (Accounts and data are kept in the demo folder.)"),
        "",
    ]
    print("\n".join(lines), flush=True)
