"""Benchmark: every participant's peak memory at hospital scale, over the network (issue #14).

Run::

    .venv/bin/python bench/scale.py                      # 4 sites x 1,000,000 rows x 20 columns
    .venv/bin/python bench/scale.py --rows 100000        # a quicker run
    .venv/bin/python bench/scale.py --only SIMI --rows 250000
    .venv/bin/python bench/scale.py --only SIMI --upload-only   # the uploads' memory alone

What it measures:

- Data: ``--sites`` participants (central and ``--sites - 1`` site portals), each ``--rows`` x
  ``--columns`` of bench/engine.py's data, turned into CSV in this process (nothing is written
  to disk but the processes' own databases and logs).
- Processes: ``fip central`` (TLS, SQLite) and one ``fip site`` per remote site, on loopback,
  the sites reaching central through bench/network.py's relay with no delay (the same set-up).
- Per job (SIMI of g1; SIMICE of g1, g2, b; M = ``--imputations``), three phases, each with
  every participant's resident high-water mark reset before it (``/proc/<pid>/clear_refs``)
  and read after it (``VmHWM``):
  ``upload``: each site portal's ``POST /api/jobs/{id}/data``, then central's;
  ``job``: from the last Start to the job's end;
  ``download``: central's zip and long CSV (``GET /api/jobs/{id}/result``), read as a client
  does, chunk by chunk, and thrown away.
- It prints, per participant and phase, the peak resident size, its ratio to the
  participant's raw float64 data (rows x columns x 8 bytes; the goal is <= 3x) and the peak
  above the resident size before the phase, also as a ratio; and the seconds of each phase.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import Layout, make_tables  # noqa: E402
from network import Job, delayed_federation  # noqa: E402

from federation.outputs import dataset_csv  # noqa: E402
from tests.federation_env import Federation  # noqa: E402
from tests.processes import wait_for  # noqa: E402

MiB = 1 << 20


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Peak:
    participant: str
    phase: str
    before: int
    peak: int
    raw: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.participant:<8} {self.phase:<14} {self.seconds:8.2f} "
            f"{self.before / MiB:10.0f} {self.peak / MiB:10.0f} {self.peak / self.raw:7.2f}x "
            f"{(self.peak - self.before) / MiB:10.0f} {(self.peak - self.before) / self.raw:7.2f}x"
        )


HEADER = "who      phase           seconds  before MiB   peak MiB  peak/raw  +peak MiB  +peak/raw"


def measured(pids: dict[str, int], raw: int, phase: str, action: Callable[[], None]) -> list[Peak]:
    """``action`` run with every process's high-water mark reset before it and read after."""
    before = {}
    for who, pid in pids.items():
        reset_peak(pid)
        before[who] = status(pid)["VmRSS"]
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    return [
        Peak(who, phase, before[who], status(pid)["VmHWM"], raw, seconds)
        for who, pid in pids.items()
    ]


def run(
    fed: Federation,
    job: Job,
    columns: Sequence[str],
    files: dict[str, bytes],
    raw: int,
    *,
    upload_only: bool = False,
) -> list[Peak]:
    pids = {"central": fed.central.popen.pid} | {s.name: s.process.popen.pid for s in fed.sites}
    peaks: list[Peak] = []
    with fed.admin() as admin:
        created = admin.post(
            "/api/jobs",
            json={
                "name": f"scale {job.algorithm}",
                "algorithm": job.algorithm,
                "columns": list(columns),
                "participants": [s.site_id for s in fed.sites],
                "targets": [{"column": c, "type": t} for c, t in job.targets],
                "imputations": job.parameters["imputations"],
                "parameters": {},
                "seed": 1,
            },
        )
        created.raise_for_status()
    job_id = created.json()["id"]

    def upload() -> None:
        for site in fed.sites:
            with site.api() as api:
                api.timeout = 600
                api.post(
                    f"/api/jobs/{job_id}/data", files={"file": ("data.csv", files[site.name])}
                ).raise_for_status()

    peaks += measured(pids, raw, "upload sites", upload)

    def upload_central() -> None:
        with fed.admin() as admin:
            admin.timeout = 600
            admin.post(
                f"/api/jobs/{job_id}/data", files={"file": ("central.csv", files["central"])}
            ).raise_for_status()

    peaks += measured(pids, raw, "upload central", upload_central)
    if upload_only:
        return peaks

    def compute() -> None:
        for site in fed.sites:
            with site.api() as api:
                api.post(f"/api/jobs/{job_id}/start").raise_for_status()
        with fed.admin() as admin:

            def finished() -> bool:
                return admin.get(f"/api/jobs/{job_id}").json()["state"] not in (
                    "waiting",
                    "running",
                )

            wait_for(finished, seconds=3600, every=0.5, what=f"{job.algorithm} to finish")
            done = admin.get(f"/api/jobs/{job_id}").json()
            if done["state"] != "completed":
                raise SystemExit(f"{job.algorithm} ended {done['state']}: {done['message']}")

    peaks += measured(pids, raw, "job", compute)

    for format in ("zip", "long"):

        def download(format: str = format) -> None:
            size = 0
            with fed.admin() as admin:
                admin.timeout = 600
                with admin.stream("GET", f"/api/jobs/{job_id}/result?format={format}") as reply:
                    reply.raise_for_status()
                    for chunk in reply.iter_bytes():
                        size += len(chunk)
            print(f"    {job.algorithm} {format}: {size / MiB:.0f} MiB", flush=True)

        peaks += measured(pids, raw, f"download {format}", download)
    return peaks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per participant")
    parser.add_argument("--sites", type=int, default=4, help="participants, central included")
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--imputations", type=int, default=5, help="M")
    parser.add_argument("--only", choices=("SIMI", "SIMICE"), help="one algorithm only")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--upload-only", action="store_true", help="measure the uploads only (no job, download)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    layout = Layout.of(args.columns)
    m = {"imputations": args.imputations}
    jobs = [
        Job("scale", "SIMI", (("g1", "gaussian"),), m),
        Job("scale", "SIMICE", (("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")), m),
    ]
    jobs = [j for j in jobs if args.only in (None, j.algorithm)]
    raw = args.rows * args.columns * 8
    print(
        f"{args.sites} participants x {args.rows:,} rows x {args.columns} columns, "
        f"raw float64 {raw / MiB:.0f} MiB each, M = {args.imputations}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="fip-scale-"))
    remote = [f"site{k}" for k in range(1, args.sites)]
    with delayed_federation(root, remote, loopback=True) as delayed:
        peaks: list[Peak] = []
        for job in jobs:
            targets = [c for c, _ in job.targets]
            tables = make_tables(layout, args.rows, args.sites, args.seed, targets)
            files = {name: dataset_csv(t.columns, t.values) for name, t in tables.items()}
            del tables
            print(
                f"  {job.algorithm}: CSV {len(files['central']) / MiB:.0f} MiB per participant",
                flush=True,
            )
            ran = run(
                delayed.federation, job, layout.columns, files, raw, upload_only=args.upload_only
            )
            print(f"\n{job.algorithm}\n{HEADER}\n{'-' * len(HEADER)}", flush=True)
            for peak in ran:
                print(peak.line(), flush=True)
            peaks += ran
        worst = max(peaks, key=lambda p: p.peak)
        print(
            f"\nworst: {worst.participant} during {worst.phase}: {worst.peak / MiB:.0f} MiB, "
            f"{worst.peak / raw:.2f}x its raw data (goal <= 3x)"
        )


if __name__ == "__main__":
    main()
