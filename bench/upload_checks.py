"""Benchmark: the memory of an upload's checks (after the read) when the file is not in the job's
layout: its columns in another order and a carried text column.

Run::

    .venv/bin/python bench/upload_checks.py                 # 1,000,000 rows x 20 columns
    .venv/bin/python bench/upload_checks.py --rows 250000

What it measures: a CSV of ``--rows`` rows (an ID column of text, then 19 normal columns in
the reverse of the job's order, 10% of cells empty) made in memory and read by ``read_csv``
(not measured). Then, with the resident size sampled every millisecond in a thread, what
central does with it after the read (``portal_central.web.jobs`` and the orchestrator): the
job's checks (``federation.roles.check_upload``), its column summaries
(``portal_central.jobs.header.summarize_table``) and the orchestrator's refusal check
(``federation.roles.coding_of``). It prints the peak above the resident size before them, in
MiB and as a ratio to the table's raw float64 size. Before, each put the whole table in the
job's layout: a second copy of it.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from federation import roles
from federation.data import read_csv
from federation.registry import Registry
from federation.simulation import make_spec
from portal_central.jobs.header import summarize_table

MIB = 1 << 20


def resident() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024 / MIB
    raise SystemExit("no /proc/self/status: Linux only")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows (1,000,000)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    values = rng.standard_normal((args.rows, 19))
    values[rng.random(values.shape) < 0.1] = np.nan
    names = [f"c{j}" for j in range(1, 20)]
    frame = pd.DataFrame(values, columns=names)
    frame.insert(0, "id", [f"p{i}" for i in range(args.rows)])
    content = frame[["id", *names[::-1]]].to_csv(index=False).encode()
    del frame, values
    table = read_csv(content, label="central.csv", text={"id"})
    del content
    spec = make_spec(
        algorithm=Registry.with_builtins().get("SIMI"),
        central=table,
        sites=["a"],
        targets=[("c1", "gaussian")],
        params={},
        roles={"id": "carried"},
    )
    gc.collect()
    raw = table.values.nbytes / MIB
    before = resident()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    summarize_table(roles.check_upload(table, spec, show_values=False))
    roles.coding_of(table, spec)
    done.set()
    sampler.join()
    print(
        f"{args.rows:,} rows x 20 columns, table {raw:.0f} MiB; checks after the read: "
        f"peak above before {peak[0] - before:.0f} MiB = {(peak[0] - before) / raw:.2f}x raw"
    )


if __name__ == "__main__":
    main()
