"""Benchmark: drawing a job's plausibility plots, and the wizard's missing-data pattern.

Run::

    .venv/bin/python bench/plots.py                  # central 100,000 rows, M = 20
    .venv/bin/python bench/plots.py --rows 10000 --imputations 5

A job result is made in memory (central's table of ``--rows`` rows: a continuous target missing
in 30% of its rows, a binary one in 20%, imputed cells drawn at random: the plots' cost does not
depend on how they were imputed). It prints the seconds and peak Python memory (tracemalloc) of
drawing every target's plot and table, as central does on a job page's first request, and the
size of each SVG; then the seconds of counting the missing-data pattern of a CSV of that table
as the wizard does while it streams in, and how many patterns it found.
"""

from __future__ import annotations

import argparse
import io
import time
import tracemalloc

import numpy as np

from federation.data import Table
from federation.job import JobSpec, Target
from federation.plots import plausibility
from federation.runtime import JobResult
from portal_central.jobs.header import HeaderReader


def make_result(rows: int, imputations: int, seed: int = 1) -> JobResult:
    rng = np.random.default_rng(seed)
    values = np.column_stack(
        [
            rng.normal(size=rows),
            rng.normal(25, 4, size=rows),
            (rng.random(rows) < 0.3).astype(float),
            rng.normal(size=(rows, 5)),
        ]
    )
    values[rng.random(rows) < 0.3, 1] = np.nan
    values[rng.random(rows) < 0.2, 2] = np.nan
    for column in range(3, 8):
        values[rng.random(rows) < 0.05 * (column - 2), column] = np.nan
    columns = ("x", "bmi", "smoker", "c1", "c2", "c3", "c4", "c5")
    missing = np.isnan(values)
    in_column = np.flatnonzero(missing) % values.shape[1]
    cells = []
    for _ in range(imputations):
        imputed = rng.normal(25, 5, size=in_column.size)
        imputed[in_column == 2] = (rng.random(int(np.sum(in_column == 2))) < 0.4).astype(float)
        cells.append(imputed)
    spec = JobSpec(
        job_id="bench",
        algorithm="SIMICE",
        version="bench",
        digest="",
        columns=columns,
        targets=(Target(2, "bmi", "gaussian"), Target(3, "smoker", "logistic")),
        params={},
        seed=seed,
        sites=(),
    )
    table = Table(label="central", columns=columns, values=values)
    return JobResult(spec=spec, table=table, imputed_cells=cells, report={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--imputations", type=int, default=20)
    args = parser.parse_args()
    result = make_result(args.rows, args.imputations)
    print(f"central: {args.rows:,} rows, M = {args.imputations}")

    plausibility(make_result(200, 2))  # matplotlib's first use (font list) is not the job's cost
    tracemalloc.start()
    start = time.perf_counter()
    plots = plausibility(result)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"plots of {len(plots)} targets: {seconds:.2f} s, peak {peak / 2**20:.1f} MiB")
    for plot in plots:
        size, rows = len(plot.svg) / 1024, len(plot.numbers.rows())
        print(f"  {plot.name}: SVG {size:.0f} KiB, table {rows} rows")

    buffer = io.StringIO()
    np.savetxt(buffer, result.table.values, delimiter=",", fmt="%.6g")
    content = (",".join(result.table.columns) + "\n" + buffer.getvalue()).encode()
    reader = HeaderReader(label="central.csv")
    start = time.perf_counter()
    for offset in range(0, len(content), 1 << 20):
        reader.feed(content[offset : offset + (1 << 20)])
    reader.finish()
    pattern = reader.missing_pattern()
    seconds = time.perf_counter() - start
    found = len(pattern.counts) if pattern is not None else 0
    print(
        f"wizard header and pattern of a {len(content) / 2**20:.1f} MiB CSV: {seconds:.2f} s, "
        f"{found} patterns"
    )


if __name__ == "__main__":
    main()
