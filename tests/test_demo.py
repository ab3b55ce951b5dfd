"""`fip demo` (what `scripts/run` starts) as a newcomer sees it: it says what it is doing, keeps
the portals' JSON and access logs in files of the demo folder, and prints its banner last, with
the URLs, usernames and passwords; page views add nothing to the console."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.processes import free_port

FIP = str(Path(sys.executable).parent / "fip")
START_SECONDS = 90.0


@pytest.mark.slow  # three portal processes (~20 s here): the process tier, not the default run
def test_fip_demo_says_what_it_does_and_prints_its_banner_last(tmp_path: Path) -> None:
    central_port, north_port, south_port = (free_port() for _ in range(3))
    folder = tmp_path / "demo"
    cheap = {
        "FIP_CENTRAL_ARGON2_TIME_COST": "1",
        "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64",
        "FIP_SITE_ARGON2_TIME_COST": "1",
        "FIP_SITE_ARGON2_MEMORY_KIB": "64",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIP_")} | cheap
    process = subprocess.Popen(
        [
            *(FIP, "demo", "--dir", str(folder), "--central-port", str(central_port)),
            *("--site-ports", str(north_port), str(south_port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not any(line.startswith("Accounts, passwords and data") for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(0.5)  # anything printed after the banner would arrive now
        before = list(lines)
        credentials = json.loads((folder / "credentials.json").read_text())
        admin = credentials["admin"]
        trust = ssl.create_default_context(cafile=str(folder / "tls" / "ca.pem"))
        with httpx2.Client(verify=trust, timeout=10) as client:
            for _ in range(3):
                assert client.get(f"https://127.0.0.1:{central_port}/sign-in").status_code == 200
        time.sleep(0.5)
        after_views = list(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()

    text = "".join(before)
    steps = [line.strip() for line in before if line.startswith("  ") and line.endswith("…\n")]
    assert steps[:3] == [
        "writing demo data for three hospitals…",
        "making a development CA and a certificate for central…",
        "creating central's database, an admin and two approved site accounts…",
    ], text
    assert f"starting central on port {central_port}…" in steps
    assert not [line for line in before if line.lstrip().startswith("{")], "no JSON on the console"
    assert "GET /" not in text, "no access log on the console"
    assert before[-1].startswith("=" * 78), "the banner ends the output"
    banner = text[text.index("the demo is running") :]
    assert f"https://127.0.0.1:{central_port}" in banner
    assert f"username  {admin['username']}" in banner and f"password  {admin['password']}" in banner
    for name, port in (("north", north_port), ("south", south_port)):
        assert f"http://127.0.0.1:{port}" in banner
        assert f"local password  {credentials[name]['local_password']}" in banner
    log = folder / "logs" / "central.log"
    assert str(log) in banner
    assert after_views == before, "page views add nothing to the console"
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert sum("/sign-in" in e["message"] for e in entries if e["logger"] == "uvicorn.access") >= 3
    assert (folder / "logs" / "site-north.log").stat().st_size > 0
