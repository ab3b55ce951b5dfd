"""End to end, what goes wrong: cancellation from either side, refusals, revocation, retention."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from federation.outputs import dataset_csv
from tests.federation_env import Federation, connect_site
from tests.processes import wait_for

COLUMNS = ["age", "sex", "bmi", "sbp", "cholesterol", "smoker"]


def _job(fed: Federation, *, cycles: int, name: str) -> int:
    with fed.admin() as admin:
        response = admin.post(
            "/api/jobs",
            json={
                "name": name,
                "algorithm": "SIMICE",
                "columns": COLUMNS,
                "participants": [s.site_id for s in fed.sites],
                "targets": [
                    {"column": "bmi", "type": "gaussian"},
                    {"column": "smoker", "type": "logistic"},
                ],
                "imputations": 1,
                "parameters": {"iteration_before_first_imputation": cycles},
                "seed": 1,
            },
        )
        assert response.status_code == 201, response.text
        job_id: int = response.json()["id"]
        return job_id


def _job_state(fed: Federation, job_id: int) -> dict[str, object]:
    with fed.admin() as admin:
        job: dict[str, object] = admin.get(f"/api/jobs/{job_id}").json()
        return job


def _start_everywhere(fed: Federation, job_id: int, files: dict[str, Path]) -> None:
    for site, data in zip(fed.sites, ("north", "south"), strict=True):
        with site.api() as api:
            assert (
                api.post(
                    f"/api/jobs/{job_id}/data",
                    files={"file": (f"{data}.csv", files[data].read_bytes())},
                ).status_code
                == 200
            )
            started = api.post(f"/api/jobs/{job_id}/start")
            assert started.status_code == 200, started.text
    with fed.admin() as admin:
        response = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", files["central"].read_bytes())},
        )
        assert response.status_code == 200, response.text


def _running_with_progress(fed: Federation, job_id: int) -> bool:
    with fed.admin() as admin:
        job = admin.get(f"/api/jobs/{job_id}").json()
    return bool(job["state"] == "running")


def test_cancel_at_central_stops_the_job_everywhere(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    job_id = _job(fed, cycles=400, name="cancel at central")
    _start_everywhere(fed, job_id, demo_files)
    wait_for(lambda: _running_with_progress(fed, job_id), seconds=20, what="the job to run")

    with fed.admin() as admin:
        cancelled = admin.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["message"] == "cancelled at central"
    for site in fed.sites:
        with site.api() as api:
            wait_for(
                lambda api=api: api.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled",
                seconds=2,
                what=f"{site.name} to see the cancellation",
            )
            assert api.get(f"/api/jobs/{job_id}").json()["data_loaded"] is False


def test_cancel_at_a_site_stops_the_job_everywhere(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    job_id = _job(fed, cycles=400, name="cancel at a site")
    _start_everywhere(fed, job_id, demo_files)
    wait_for(lambda: _running_with_progress(fed, job_id), seconds=20, what="the job to run")

    with fed.sites[1].api() as api:
        response = api.post(f"/api/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text

    wait_for(
        lambda: _job_state(fed, job_id)["state"] == "cancelled", seconds=2, what="central to cancel"
    )
    assert _job_state(fed, job_id)["message"] == f"cancelled at site {fed.sites[1].site_id}"
    with fed.sites[0].api() as api:
        wait_for(lambda: api.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled", seconds=2)


def test_a_site_that_is_not_a_participant_sees_nothing(network: Federation) -> None:
    fed = network
    with fed.admin() as admin:
        response = admin.post(
            "/api/jobs",
            json={
                "name": "north only",
                "algorithm": "SIMI",
                "columns": COLUMNS,
                "participants": [fed.sites[0].site_id],
                "targets": [{"column": "sbp", "type": "gaussian"}],
            },
        )
        job_id = response.json()["id"]
    with fed.sites[1].api() as api:
        assert str(job_id) not in [j["id"] for j in api.get("/api/jobs").json()]
        response = api.get(f"/api/jobs/{job_id}")
        assert response.status_code == 404


def test_signing_in_with_another_sites_account_is_refused(network: Federation) -> None:
    fed = network
    north, south = fed.sites
    with north.api() as api:
        response = api.post(
            "/api/sign-in", json={"username": south.name, "password": "Site-pass-2026!"}
        )
        assert response.status_code == 400
        assert (
            f"belongs to site '{south.site_id}', not to '{north.site_id}'"
            in response.json()["detail"]
        )
    connect_site(fed, north)


def test_disabling_a_site_closes_its_connection(network: Federation) -> None:
    fed = network
    south = fed.sites[1]
    with fed.admin() as admin:
        users = admin.get("/api/users", params={"status": "approved"}).json()
        south_id = next(u["id"] for u in users if u["site_id"] == south.site_id)
        assert admin.post(f"/api/users/{south_id}/disable").status_code == 200
    with south.api() as api:
        wait_for(
            lambda: api.get("/api/status").json()["status"] == "signed out",
            seconds=5,
            what="sign-out",
        )
        assert "disabled" in api.get("/api/status").json()["detail"]
    with fed.admin() as admin:
        assert admin.post(f"/api/users/{south_id}/enable").status_code == 200
    connect_site(fed, south)


def _distinct_values(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Clinical-looking values with nine decimals, so that any copy of them can be found."""
    values = np.column_stack(
        [
            rng.uniform(20, 90, rows),
            (rng.random(rows) < 0.5).astype(float),
            rng.uniform(18, 40, rows),
            rng.uniform(90, 180, rows),
            rng.uniform(3, 8, rows),
            (rng.random(rows) < 0.3).astype(float),
        ]
    )
    values[:, [0, 2, 3, 4]] = np.round(values[:, [0, 2, 3, 4]], 9)
    values[rng.random(rows) < 0.2, 2] = np.nan
    values[rng.random(rows) < 0.2, 5] = np.nan
    return values


class _OpenFiles:
    """Polls the open files (/proc/<pid>/fd) of processes for any under ``folder``."""

    def __init__(self, pids: list[int], folder: Path) -> None:
        self.pids, self.folder, self.seen = pids, str(folder), set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd).startswith(self.folder):
                            self.seen.add(f"{pid}: {os.readlink(fd)}")
            time.sleep(0.002)

    def __enter__(self) -> _OpenFiles:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_nothing_of_the_data_is_retained_anywhere(network: Federation, tmp_path: Path) -> None:
    """After a job, no file under central's or the sites' data directories holds a value, and
    while the CSVs (over 1 MiB each, where Starlette's form parser would spool to a file) are
    uploaded no process opens a file in its temporary folder, which stays empty."""
    fed = network
    rng = np.random.default_rng(99)
    tables = {name: _distinct_values(rng, 30_000) for name in ("central", "north", "south")}
    files = {}
    for name, values in tables.items():
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_bytes(dataset_csv(tuple(COLUMNS), values))
        assert files[name].stat().st_size > 1 << 20
    job_id = _job(fed, cycles=2, name="retention")
    pids = [fed.central.popen.pid, *(s.process.popen.pid for s in fed.sites)]
    with _OpenFiles(pids, fed.tmp_dir) as open_files:
        _start_everywhere(fed, job_id, files)
    assert not open_files.seen, f"temporary files were open during the uploads: {open_files.seen}"
    wait_for(lambda: _job_state(fed, job_id)["state"] == "completed", seconds=30, what="the job")
    with fed.admin() as admin:
        assert admin.get(f"/api/jobs/{job_id}/result", params={"format": "zip"}).status_code == 200

    needles: list[bytes] = []
    for values in tables.values():
        for value in values[:40, [0, 2, 3, 4]].ravel():
            if not np.isnan(value):
                needles.append(repr(float(value)).encode())
                needles.append(struct.pack("<d", float(value)))
    assert list(fed.tmp_dir.rglob("*")) == [], "the temporary folder is not empty"
    folders = [fed.central_dir, *(s.data_dir for s in fed.sites), fed.tmp_dir]
    scanned = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                scanned += 1
                found = [n for n in needles if n in content]
                assert not found, f"{path} holds data values: {found[:3]}"
    assert scanned >= 4, "the databases were scanned"


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_the_websocket_refuses_bad_tokens(network: Federation, kind: str) -> None:
    """The upgrade to a WebSocket without a valid site token is answered 401. Sent as a plain
    HTTP upgrade request with a bounded timeout: websockets' sync client, refused over TLS,
    closes its socket and then waits for its reading thread, which a kept-alive refused
    connection never wakes (it hung CI once)."""
    import base64
    import ssl

    import httpx2 as httpx

    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if kind == "garbage":
        headers["Authorization"] = "Bearer not-a-token"
    context = ssl.create_default_context(cafile=str(network.ca_file))
    with httpx.Client(verify=context, timeout=10) as client:
        refused = client.get(network.central_url + "/ws/site", headers=headers)
    assert refused.status_code == 401, refused.text
