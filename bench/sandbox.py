"""What the sandbox costs: an uploaded remote half in a process of its own, against the same half
run in the portal's process.

    .venv/bin/python bench/sandbox.py [--rows 250000] [--columns 20] [--calls 500]

Prints the time to start a sandbox (process, numpy, the lock-down), the time of one small
operation round trip through the pipe, and a whole MEANDRAW job (central and three sites) run
both ways on the same data, with the largest resident size of one sandbox process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from federation.data import Table
from federation.job import CENTRAL
from federation.registry import load_folder
from federation.runtime import run_job
from federation.sandbox import Sandbox
from federation.simulation import make_spec
from federation.site import SiteRunner
from federation.transport import InMemoryTransport

MEANDRAW = Path(__file__).resolve().parents[1] / "docs" / "examples" / "MEANDRAW"
TRIVIAL = """
def prepare(site):
    return {"rows_used": site.data.rows}

def ping(site):
    return {"n": 1}

HANDLERS = {"ping": ping}
"""


def _table(label: str, rows: int, columns: int, rng: np.random.Generator) -> Table:
    values = rng.normal(size=(rows, columns))
    values[rng.random(rows) < 0.2, 0] = np.nan
    return Table(label=label, columns=tuple(f"c{i}" for i in range(columns)), values=values)


def _job_seconds(rows: int, columns: int, *, sandbox: bool) -> float:
    algorithm = load_folder(MEANDRAW)
    rng = np.random.default_rng(1)
    central = _table("central", rows, columns, rng)
    sites = {name: _table(name, rows, columns, rng) for name in ("a", "b", "c")}
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=[("c0", "gaussian")],
        params={"imputations": 5},
        seed=1,
    )
    runners = {
        name: SiteRunner(site=name, data=table, algorithm=algorithm, sandbox=sandbox)
        for name, table in sites.items()
    }
    local = SiteRunner(
        site=CENTRAL, data=central, algorithm=algorithm, is_central=True, sandbox=sandbox
    )
    started = time.perf_counter()
    try:
        asyncio.run(
            run_job(
                spec=spec,
                central_module=algorithm.central,
                local=local,
                transport=InMemoryTransport(runners),
            )
        )
    finally:
        for runner in (local, *runners.values()):
            runner.close()
    return time.perf_counter() - started


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()

    starts = []
    for _ in range(5):
        began = time.perf_counter()
        sandbox = Sandbox(name="T", file_name="TRemote.py", source=TRIVIAL)
        starts.append(time.perf_counter() - began)
        sandbox.close()
    sandbox = Sandbox(name="T", file_name="TRemote.py", source=TRIVIAL)
    values = np.random.default_rng(0).normal(size=(args.rows, args.columns))
    columns = [f"c{i}" for i in range(args.columns)]
    spec: dict[str, Any] = {
        "job_id": "j",
        "algorithm": "T",
        "version": "1",
        "columns": columns,
        "targets": [{"index": 1, "name": "c0", "type": "gaussian"}],
        "params": {"imputations": 1},
        "seed": 1,
        "sites": ["s"],
    }
    began = time.perf_counter()
    sandbox.open(
        site="s",
        spec=spec,
        label="s",
        columns=columns,
        values=values,
        is_central=False,
        rng=np.random.default_rng(1),
    )
    handover = time.perf_counter() - began
    calls = []
    for _ in range(args.calls):
        began = time.perf_counter()
        sandbox.call("ping", {})
        calls.append(time.perf_counter() - began)
    rss = _rss_kib(sandbox.pid)
    sandbox.close()

    in_process = _job_seconds(args.rows, args.columns, sandbox=False)
    sandboxed = _job_seconds(args.rows, args.columns, sandbox=True)
    megabytes = values.nbytes / 2**20
    print(
        "sandbox start (process, numpy, lock-down): "
        f"median {statistics.median(starts) * 1000:.0f} ms"
    )
    print(
        f"data handed over ({args.rows:,} x {args.columns} float64, {megabytes:.0f} MiB): "
        f"{handover * 1000:.0f} ms; sandbox peak RSS {rss / 1024:.0f} MiB"
    )
    print(
        f"one operation through the pipe: median {statistics.median(calls) * 1e6:.0f} us "
        f"(p95 {sorted(calls)[int(0.95 * len(calls))] * 1e6:.0f} us, {args.calls} calls)"
    )
    print(
        f"MEANDRAW job, central + 3 sites x {args.rows:,} rows: in process {in_process:.2f} s, "
        f"sandboxed {sandboxed:.2f} s ({sandboxed / in_process:.2f}x)"
    )


if __name__ == "__main__":
    main()
