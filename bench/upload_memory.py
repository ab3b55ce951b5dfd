"""Benchmark: the memory an upload costs, in a real central process and in read_csv alone.

Run::

    .venv/bin/python bench/upload_memory.py                  # a 100 MB CSV, 20 numeric columns
    .venv/bin/python bench/upload_memory.py --megabytes 20   # a quicker run
    .venv/bin/python bench/upload_memory.py --repo /tmp/before   # another checkout (before)

What it measures:

- The CSV: ``--megabytes`` of 20 numeric columns (six decimals, about 10% of the target's
  cells empty), generated in memory by this process; nothing is written to disk.
- Upload: ``fip central`` started from ``--repo`` (plain HTTP on loopback, SQLite in a
  temporary folder), an admin and one approved site account, a SIMI job whose one participant
  never connects (so the job waits and runs nothing). The CSV is posted to
  ``POST /api/jobs/{id}/data`` as multipart, streamed from this process in 1 MiB pieces, then
  to the wizard's ``POST /jobs/new/columns`` (signed in through the form, HTMX's CSRF header).
  Before each post the server's high-water mark is reset (``/proc/<pid>/clear_refs``), so
  its ``VmHWM`` afterwards is the peak resident size during that request.
- read_csv alone: a fresh Python process that imports ``federation.data`` from ``--repo``,
  builds the same CSV, resets its high-water mark, and reads it with ``read_csv``.

It prints, per measurement, the resident size before (``VmRSS``), the peak (``VmHWM``),
``(peak - before) / size``: what the upload costs on top of the idle process, and the peak
over the table's raw float64 size (rows x 20 x 8 bytes; issue #14's goal is <= 3x). It also prints
whether any file was opened in the server's temporary folder (``TMPDIR``, set to a fresh
folder) during the uploads: its /proc/<pid>/fd is polled while they run.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"c{i}" for i in range(1, 21)]
MIB = 1 << 20

MAKE_CSV = textwrap.dedent(
    """
    import numpy as np, pandas as pd

    def make_csv(megabytes, seed=5):
        rng = np.random.default_rng(seed)
        rows = int(megabytes * 1e6 / 182)
        values = rng.normal(50, 10, size=(rows, 20)).round(6)
        values[rng.random(rows) < 0.1, 0] = np.nan  # the job's target, c1
        frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(1, 21)])
        return frame.to_csv(index=False, float_format="%.6f").encode()
    """
)


def make_csv(megabytes: float) -> bytes:
    namespace: dict[str, object] = {}
    exec(MAKE_CSV, namespace)  # noqa: S102 - the same code the read_csv child runs
    content = namespace["make_csv"](megabytes)  # type: ignore[operator]
    assert isinstance(content, bytes)
    return content


def status(pid: int | str) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def reset_peak(pid: int | str) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class FdWatch:
    """Polls a process's open files for anything under ``folder`` while it runs."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder, self.seen = pid, str(folder), set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for fd in Path(f"/proc/{self.pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith(self.folder):
                    self.seen.add(target)
            time.sleep(0.005)

    def __enter__(self) -> FdWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def multipart(
    fields: dict[str, str], name: str, filename: str, content: bytes
) -> tuple[str, Iterator[bytes], int]:
    """A streamed multipart body: its content type, its pieces and its length."""
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def pieces() -> Iterator[bytes]:
        yield head
        view = memoryview(content)
        for start in range(0, len(content), MIB):
            yield bytes(view[start : start + MIB])
        yield tail

    size = len(head) + len(content) + len(tail)
    return f"multipart/form-data; boundary={boundary}", pieces(), size


def fip(repo: Path, *args: str) -> list[str]:
    code = (
        f"import sys; sys.argv = ['fip', *{list(args)!r}]; "
        "from federation.cli import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


def measure_server(repo: Path, content: bytes) -> list[tuple[str, dict[str, int], int, set[str]]]:
    work = Path(tempfile.mkdtemp(prefix="fip-bench-"))
    tmp = work / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "TMPDIR": str(tmp),
        "FIP_CENTRAL_DATA_DIR": str(work / "central"),
        "FIP_CENTRAL_ARGON2_TIME_COST": "1",
        "FIP_CENTRAL_ARGON2_MEMORY_KIB": "64",
    }
    password = "Quiet-harbour-7413"
    subprocess.run(
        fip(repo, "central", "create-admin", "--username", "admin", "--email", "a@b.example",
            "--password", password),
        env=env, check=True, capture_output=True, cwd=repo,
    )  # fmt: skip
    log = (work / "central.log").open("wb")
    server = subprocess.Popen(
        fip(repo, "central", "--port", str(port)), env=env, stdout=log, stderr=log, cwd=repo
    )
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for _ in range(200):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            signed_in = client.post(
                "/api/auth/token", data={"username": "admin", "password": password}
            )
            assert signed_in.status_code == 200, signed_in.text
            access = signed_in.json()["access_token"]
            auth = {"Authorization": f"Bearer {access}"}
            site = client.post(
                "/api/register",
                json={
                    "username": "north",
                    "email": "north@b.example",
                    "institution": "North",
                    "password": "Site-pass-2026!",
                },
            ).json()
            approved = client.post(f"/api/users/{site['id']}/approve", headers=auth)
            approved.raise_for_status()
            site_id = approved.json()["site_id"]
            job = client.post(
                "/api/jobs",
                headers=auth,
                json={
                    "name": "bench",
                    "algorithm": "SIMI",
                    "columns": COLUMNS,
                    "targets": [{"column": "c1", "type": "gaussian"}],
                    "participants": [site_id],
                    "imputations": 2,
                    "seed": 1,
                },
            )
            assert job.status_code == 201, job.text
            job_id = job.json()["id"]

            kind, body, size = multipart({}, "file", "central.csv", content)
            before = _settle(server.pid)
            with FdWatch(server.pid, tmp) as watch:
                response = client.post(
                    f"/api/jobs/{job_id}/data",
                    headers={**auth, "Content-Type": kind, "Content-Length": str(size)},
                    content=body,
                )
            assert response.status_code == 200, response.text
            peak = {**before, **_peak(server.pid)}
            results.append(("central job data (API)", peak, len(content), watch.seen))

            signed = client.post(
                "/sign-in", data={"username": "admin", "password": password}, follow_redirects=True
            )
            found = re.search(r'name="csrf_token" value="([^"]+)"', signed.text)
            assert found, signed.text[:500]
            kind, body, size = multipart(
                {"algorithm": "SIMI"}, "header_file", "central.csv", content
            )
            client.headers.pop("Authorization", None)
            before = _settle(server.pid)
            with FdWatch(server.pid, tmp) as watch:
                response = client.post(
                    "/jobs/new/columns",
                    headers={
                        "Content-Type": kind,
                        "Content-Length": str(size),
                        "HX-Request": "true",
                        "X-CSRF-Token": found.group(1),
                    },
                    content=body,
                )
            assert response.status_code == 200, response.text[:500]
            assert "c20" in response.text
            peak = {**before, **_peak(server.pid)}
            results.append(("wizard header", peak, len(content), watch.seen))
    finally:
        server.terminate()
        server.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return results


def _settle(pid: int) -> dict[str, int]:
    time.sleep(0.5)
    reset_peak(pid)
    return {"before": status(pid)["VmRSS"]}


def _peak(pid: int) -> dict[str, int]:
    return {"peak": status(pid)["VmHWM"]}


READ_CSV_CHILD = MAKE_CSV + textwrap.dedent(
    """
    import re, sys
    from pathlib import Path
    from federation.data import read_csv

    def status():
        text = Path("/proc/self/status").read_text()
        found = re.findall(r"^(VmRSS|VmHWM):\\s+(\\d+) kB", text, re.M)
        return {k: int(v) * 1024 for k, v in found}

    content = make_csv(float(sys.argv[1]))
    Path("/proc/self/clear_refs").write_text("5")
    before = status()["VmRSS"]
    table = read_csv(content, label="central.csv")
    print(before, status()["VmHWM"], len(content), table.rows)
    """
)


def measure_read_csv(repo: Path, megabytes: float) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", READ_CSV_CHILD, str(megabytes)],
        env={**os.environ, "PYTHONPATH": str(repo)},
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout to run (default: this)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    content = make_csv(args.megabytes)
    mb = len(content) / 1e6
    print(f"repo {repo}; CSV of {mb:.1f} MB, 20 columns")

    raw = (content.count(b"\n") - 1) * len(COLUMNS) * 8
    print(f"raw float64 {raw / 1e6:.1f} MB")

    def line(what: str, before: int, peak: int, size: int) -> None:
        print(
            f"  {what:<26} before {before / 1e6:7.0f} MB  peak {peak / 1e6:7.0f} MB  "
            f"(peak - before) / size = {(peak - before) / size:5.2f}   peak / size = "
            f"{peak / size:5.2f}   peak / raw = {peak / raw:5.2f}"
        )

    before, peak, size = measure_read_csv(repo, args.megabytes)
    line("read_csv alone", before, peak, size)
    for what, numbers, size, seen in measure_server(repo, content):
        line(what, numbers["before"], numbers["peak"], size)
        print(f"    files open in the server's TMPDIR during the upload: {sorted(seen) or 'none'}")


if __name__ == "__main__":
    main()
