"""The built wheel is the product: installed into a fresh venv, both portals run from it.

The wheel is built from a copy of the sources (``pip wheel --no-deps``), installed into a new
virtual environment with its dependencies, and central (over TLS, with ``fip central
dev-cert``) and a site portal are started from that environment's ``fip``, outside the
repository: their pages render from the templates in the wheel, with its static files, and
central's database was created by the migrations in the wheel.

The dependencies come from a wheelhouse repacked from this test environment's installed
distributions (only those the wheel requires, followed through their own requirements), so
that the test needs no index for them and checks that the wheel declares what it needs.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import zipfile
from contextlib import closing
from importlib import metadata
from pathlib import Path

import httpx2 as httpx
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from portal_central.db import alembic_config
from portal_site.store import MIGRATIONS as SITE_MIGRATIONS
from tests.processes import Process, free_port, wait_for
from tests.site_fixtures import CHEAP_ARGON2_ENV, LOCAL_PASSWORD

ADMIN_PASSWORD = "Central-key-2026"
SITE_PASSWORD = "Site-pass-2026!"
ROOT = Path(__file__).resolve().parents[1]
PROJECT = "federated-imputation-portal"
RESOURCES = [
    "federation/r/fip_mids.R",
    "portal_common/templates/base.html",
    "portal_common/templates/_macros.html",
    "portal_common/static/style.css",
    "portal_common/static/vendor/htmx-2.0.11.min.js",
    "portal_central/templates/auth/sign_in.html",
    "portal_central/templates/mail/site_approved.txt",
    "portal_central/migrations/env.py",
    "portal_central/migrations/script.py.mako",
    "portal_site/templates/local.html",
    "portal_site/migrations/env.py",
    "portal_site/migrations/versions/site_2026_12_07_initial.py",
]
"""Files of each kind the wheel must hold (the test also compares the whole trees below)."""
SKIPPED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".demo", ".*_cache"
)


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIPPED)
    out = tmp / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def _requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    return [
        Requirement(line.split(":", 1)[1])
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def _needed(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``requirements`` (no extras of ours) need, transitively."""
    needed: dict[str, metadata.Distribution] = {}
    extras_done: dict[str, set[str]] = {}
    todo = [(requirement, "") for requirement in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(requirement.name)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{requirement} is needed but not installed here") from None
        assert distribution.version in requirement.specifier, (
            str(requirement),
            distribution.version,
        )
        wanted = {""} | set(requirement.extras)
        new = wanted - extras_done.setdefault(key, set())
        if not new:
            continue
        extras_done[key] |= new
        needed[key] = distribution
        todo += [(Requirement(r), e) for r in distribution.requires or [] for e in new]
    return needed


def _repack(distribution: metadata.Distribution, wheelhouse: Path) -> None:
    """A wheel of an installed distribution: its files in site-packages, with a new RECORD
    (scripts outside site-packages are left out: pip makes them from entry_points.txt)."""
    site = Path(str(distribution.locate_file(""))).resolve()
    info = next(
        path for path in distribution.files or [] if path.parts[0].endswith(".dist-info")
    ).parts[0]
    tags = [
        line.split(":", 1)[1].strip()
        for line in (distribution.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    assert tags, f"{distribution.metadata['Name']} was not installed from a wheel"
    parts = [dict.fromkeys(tag.split("-")[i] for tag in tags) for i in range(3)]
    tag = "-".join(".".join(part) for part in parts)  # py2-none-any, py3-none-any: py2.py3-...
    name = distribution.metadata["Name"].replace("-", "_")
    target = wheelhouse / f"{name}-{distribution.version}-{tag}.whl"
    record = io.StringIO()
    rows = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in distribution.files or []:
            full = Path(str(distribution.locate_file(path))).resolve()
            inside = full.is_relative_to(site) and full.is_file()
            if not inside or full.suffix == ".pyc":
                continue
            relative = full.relative_to(site).as_posix()
            if relative.startswith(info) and relative.split("/")[-1] in (
                "RECORD",
                "INSTALLER",
                "REQUESTED",
                "direct_url.json",
            ):
                continue
            content = full.read_bytes()
            archive.writestr(relative, content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            rows.writerow([relative, f"sha256={digest.decode()}", len(content)])
        rows.writerow([f"{info}/RECORD", "", ""])
        archive.writestr(f"{info}/RECORD", record.getvalue())


def _venv(tmp: Path, wheel: Path) -> Path:
    wheelhouse = tmp / "wheelhouse"
    wheelhouse.mkdir()
    for distribution in _needed(_requirements(wheel)).values():
        _repack(distribution, wheelhouse)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _tree(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_installs_and_both_portals_run_from_it(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [name for name in RESOURCES if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    for package, folder in [
        ("portal_common", "templates"),
        ("portal_common", "static"),
        ("portal_central", "templates"),
        ("portal_central", "migrations"),
        ("portal_site", "templates"),
        ("portal_site", "migrations"),
    ]:
        shipped = {
            n.removeprefix(f"{package}/{folder}/")
            for n in names
            if n.startswith(f"{package}/{folder}/")
        }
        assert shipped == _tree(ROOT / package / folder), (
            f"{package}/{folder} is not whole in the wheel"
        )

    venv = _venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing can come from its folders
    elsewhere.mkdir()
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import portal_common, portal_central, portal_site;"
            "print(portal_common.__file__, portal_central.__file__, portal_site.__file__)",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for module in where.stdout.split():
        assert Path(module).is_relative_to(venv), f"imported from {module}, not from the venv"

    fip = str(venv / "bin" / "fip")
    central_dir = tmp_path / "central"
    env = {
        "FIP_CENTRAL_DATA_DIR": str(central_dir),
        "FIP_CENTRAL_ARGON2_TIME_COST": "1",
        "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64",
    }
    admin = [
        "--username",
        "admin",
        "--email",
        "admin@central.example",
        "--password",
        ADMIN_PASSWORD,
    ]
    for args in (["central", "dev-cert"], ["central", "create-admin", *admin]):
        done = subprocess.run(
            [fip, *args],
            env={**os.environ, **env},
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    tls = central_dir / "tls"
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env["FIP_CENTRAL_PUBLIC_URL"] = url
    central = Process(
        [
            "central",
            "--port",
            str(port),
            "--certfile",
            str(tls / "server.pem"),
            "--keyfile",
            str(tls / "server-key.pem"),
        ],
        log=tmp_path / "central.log",
        env=env,
        fip=fip,
        cwd=elsewhere,
    )
    site: Process | None = None
    try:
        context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        central.wait_until_up(f"{url}/health", verify=context)
        with httpx.Client(base_url=url, verify=context, timeout=30) as client:
            _page_with_its_static_files(client, "/sign-in", "Sign in")
            assert client.get("/health").json()["database"] == "ok"
            site_id = _approved_site(client)
        _migrated(central_dir / "central.db")

        site_port = free_port()
        site = Process(
            ["site", "--port", str(site_port), "--data-dir", str(tmp_path / "site")],
            log=tmp_path / "site.log",
            env={**CHEAP_ARGON2_ENV, "FIP_SITE_LOCAL_PASSWORD": LOCAL_PASSWORD},
            fip=fip,
            cwd=elsewhere,
        )
        site_url = f"http://127.0.0.1:{site_port}"
        site.wait_until_up(f"{site_url}/health")
        _site_migrated(tmp_path / "site" / "site.db")
        with httpx.Client(base_url=site_url, timeout=30) as client:
            _page_with_its_static_files(client, "/local/sign-in", "Sign in")
            signed_in = client.post("/api/local/token", json={"password": LOCAL_PASSWORD})
            assert signed_in.status_code == 200, signed_in.text
            client.headers["Authorization"] = f"Bearer {signed_in.json()['access_token']}"
            _page_with_its_static_files(client, "/settings", "Settings")
            settings = {"central_url": url, "site_id": site_id, "ca_file": str(tls / "ca.pem")}
            assert client.post("/api/settings", json=settings).status_code == 200
            credentials = {"username": "north", "password": SITE_PASSWORD}
            assert client.post("/api/sign-in", json=credentials).status_code == 200
            wait_for(
                lambda: client.get("/api/status").json()["status"] == "connected",
                seconds=20,
                what="the site installed from the wheel to connect to central",
            )
    finally:
        if site is not None:
            site.stop()
        central.stop()


def _page_with_its_static_files(client: httpx.Client, path: str, heading: str) -> None:
    """The page renders (a template of the wheel) and every file it links from /static is served
    (the wheel's static files), byte for byte those of the repository."""
    page = client.get(path)
    assert page.status_code == 200, (path, page.text[:500])
    assert page.headers["content-type"].startswith("text/html")
    assert heading in page.text, page.text[:500]
    linked = re.findall(r'(?:href|src)="/static/([^"]+)"', page.text)
    assert "style.css" in linked, linked
    for name in linked:
        served = client.get(f"/static/{name}")
        assert served.status_code == 200, name
        assert served.content == (ROOT / "portal_common" / "static" / name).read_bytes(), name


def _approved_site(client: httpx.Client) -> str:
    """Register north and approve it as the admin: the approval mail (a template of the wheel)
    waits in the outbox, with the site_id."""
    registered = client.post(
        "/api/register",
        json={
            "username": "north",
            "email": "north@hospital.example",
            "institution": "North Hospital",
            "password": SITE_PASSWORD,
        },
    )
    assert registered.status_code == 201, registered.text
    token = client.post("/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    approved = client.post(f"/api/users/{registered.json()['id']}/approve", headers=headers)
    assert approved.status_code == 200, approved.text
    site_id: str = approved.json()["site_id"]
    return site_id


def _site_migrated(database: Path) -> None:
    """The site's database is at the newest of the repository's site migrations."""
    head = ScriptDirectory(str(SITE_MIGRATIONS)).get_current_head()
    with closing(sqlite3.connect(database)) as connection:
        versions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    assert versions == [head]


def _migrated(database: Path) -> None:
    """Central's database is at the newest migration of the repository, made by the wheel's."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    with closing(sqlite3.connect(database)) as connection:
        versions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        outbox = [
            row[0]
            for row in connection.execute(
                "SELECT body FROM outbox WHERE to_address = 'north@hospital.example'"
            )
        ]
    assert versions == [head]
    assert {"users", "jobs", "algorithm_versions", "sign_in_throttles"} <= tables, tables
    # The admins are told of the registration too; the site's own mail is its approval.
    assert len(outbox) == 1 and "Your site_id:" in outbox[0], outbox
