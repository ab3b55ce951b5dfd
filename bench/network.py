"""Benchmark: SIMI and SIMICE over real processes and TLS on loopback, beside in-process runs.

    .venv/bin/python bench/network.py            # 4 sites x 250,000 rows x 20 columns
    .venv/bin/python bench/network.py --quick    # 20,000 rows per site
    .venv/bin/python bench/network.py --secure   # with secure_aggregation (masked sums)

Central and each remote site run as their own `fip` processes (central over TLS, each site
portal with its WebSocket worker), set up as in the end-to-end tests. The data are those of
bench/engine.py. For each algorithm it prints the time from the moment the job started at
central (the last site ready and central's data in) to the moment its results were ready, the
same job run in one process with `fip simulate`'s in-memory transport, and the round trips and
bytes the report counts. Uploading the CSVs is timed apart. It prints numbers; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import QUICK_ROWS, Layout, make_tables  # noqa: E402

from federation.data import Table  # noqa: E402
from federation.outputs import dataset_csv  # noqa: E402
from federation.registry import Registry  # noqa: E402
from federation.simulation import simulate  # noqa: E402
from tests.federation_env import Federation, start_federation  # noqa: E402
from tests.processes import wait_for  # noqa: E402

JOBS: dict[str, list[tuple[str, str]]] = {
    "SIMI": [("g1", "gaussian")],
    "SIMICE": [("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")],
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=250_000, help="rows per site")
    parser.add_argument("--sites", type=int, default=4, help="sites including central")
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--imputations", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows per site")
    parser.add_argument(
        "--secure", action="store_true", help="run the jobs with secure_aggregation (masked sums)"
    )
    return parser.parse_args(argv)


def _seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


def run_job(
    fed: Federation,
    name: str,
    columns: list[str],
    targets: list[tuple[str, str]],
    files: dict[str, Path],
    m: int,
    parameters: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], float]:
    with fed.admin() as admin:
        job = admin.post(
            "/api/jobs",
            json={
                "name": f"bench {name}",
                "algorithm": name,
                "columns": columns,
                "participants": [s.site_id for s in fed.sites],
                "targets": [{"column": c, "type": t} for c, t in targets],
                "imputations": m,
                "parameters": parameters,
                "seed": 1,
            },
        ).json()
    job_id = job["id"]
    uploads = time.perf_counter()
    for site in fed.sites:
        with site.api() as api:
            response = api.post(
                f"/api/jobs/{job_id}/data",
                files={"file": ("data.csv", files[site.name].read_bytes())},
            )
            response.raise_for_status()
            api.post(f"/api/jobs/{job_id}/start").raise_for_status()
    with fed.admin() as admin:
        admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", files["central"].read_bytes())},
        ).raise_for_status()
    upload_seconds = time.perf_counter() - uploads

    def finished() -> bool:
        with fed.admin() as admin:
            return admin.get(f"/api/jobs/{job_id}").json()["state"] not in ("waiting", "running")

    wait_for(finished, seconds=3600, every=0.5, what=f"{name} to finish")
    with fed.admin() as admin:
        job = admin.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "completed":
            raise SystemExit(f"{name} ended {job['state']}: {job['message']}")
        report = admin.get(f"/api/jobs/{job_id}/report").json()
    return job, report, upload_seconds


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    rows = QUICK_ROWS if args.quick else args.rows
    layout = Layout.of(args.columns)
    remote = [f"site{k}" for k in range(1, args.sites)]
    root = Path(tempfile.mkdtemp(prefix="fip-bench-"))
    tables: dict[str, dict[str, Table]] = {}
    files: dict[str, dict[str, Path]] = {}
    for name, targets in JOBS.items():  # each job's data miss only its own targets
        tables[name] = make_tables(layout, rows, args.sites, args.seed, [c for c, _ in targets])
        files[name] = {}
        for site, table in tables[name].items():
            files[name][site] = root / f"{name}-{site}.csv"
            files[name][site].write_bytes(dataset_csv(table.columns, table.values))
    print(
        f"{args.sites} sites (central + {args.sites - 1} remote processes) x {rows:,} rows x "
        f"{args.columns} columns, M = {args.imputations}, over TLS on loopback"
        + (", secure aggregation" if args.secure else "")
    )
    parameters = {"secure_aggregation": True} if args.secure else {}
    federation = start_federation(root / "federation", site_names=tuple(remote))
    fed = next(federation)
    results = []
    try:
        for name, targets in JOBS.items():
            job, report, uploads = run_job(
                fed, name, list(layout.columns), targets, files[name], args.imputations, parameters
            )
            started = time.perf_counter()
            local = asyncio.run(
                simulate(
                    algorithm=Registry.with_builtins().get(name),
                    central=tables[name]["central"],
                    sites={s.site_id: tables[name][s.name] for s in fed.sites},
                    targets=targets,
                    params={"imputations": args.imputations, **parameters},
                    seed=1,
                )
            )
            in_process = time.perf_counter() - started
            results.append((name, _seconds(job), in_process, report, dict(local.report), uploads))
            print(f"  {name} done")
    finally:
        for _ in federation:
            pass
    print()
    header = (
        "algorithm  network s  in-process s  ratio  round trips  ms/round trip  "
        "bytes sent  bytes received  uploads s"
    )
    print(header)
    print("-" * len(header))
    for name, network, in_process, report, in_memory, uploads in results:
        trips = report["round_trips"]
        print(
            f"{name:<9}  {network:9.2f}  {in_process:12.2f}  {network / in_process:4.1f}x  "
            f"{trips:11d}  {1000 * network / trips:13.1f}  {report['bytes_sent']:10,}  "
            f"{report['bytes_received']:14,}  {uploads:9.1f}"
        )
        assert in_memory["round_trips"] == trips, "the same job takes the same round trips"


if __name__ == "__main__":
    main()
