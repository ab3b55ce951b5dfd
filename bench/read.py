"""Benchmark: reading a CSV with ``federation.data.read_csv`` against pandas' defaults.

Run::

    .venv/bin/python bench/read.py                  # 250,000 rows x 20 columns
    .venv/bin/python bench/read.py --rows 1000000   # a 1M-row file

What it measures: a CSV of ``--rows`` x ``--columns`` normal floats printed in full (the
shortest text that reads back exactly, as R and pandas write them), about 10% of the cells
empty, made in memory (not timed). Then, best of ``--repeat``: ``read_csv(bytes)`` as an upload
is read, and ``pandas.read_csv`` with its defaults on the same bytes. It checks that both give
the same float64 values and prints seconds, CPU seconds (all threads: Arrow's reader uses
several), the ratio, and the megabytes per second.
"""

from __future__ import annotations

import argparse
import gc
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from federation.data import read_csv


def make_csv(rows: int, columns: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, columns))
    values[rng.random(values.shape) < 0.1] = np.nan
    frame = pd.DataFrame(values, columns=[f"c{j}" for j in range(1, columns + 1)])
    text: str = frame.to_csv(index=False, lineterminator="\n")
    return text.encode()


def best(task: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall seconds, best CPU seconds (all threads), and the value."""
    seconds, cpu, value = float("inf"), float("inf"), None
    for _ in range(repeat):
        gc.collect()
        started, used = time.perf_counter(), time.process_time()
        value = task()
        seconds = min(seconds, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - used)
    return seconds, cpu, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=250_000, help="rows (250,000)")
    parser.add_argument("--columns", type=int, default=20, help="columns (20)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs, best shown (5)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    content = make_csv(args.rows, args.columns, args.seed)
    megabytes = len(content) / 1e6
    print(f"{args.rows:,} rows x {args.columns} columns, {megabytes:,.1f} MB")
    ours, our_cpu, table = best(lambda: read_csv(content, label="bench.csv"), args.repeat)
    theirs, their_cpu, frame = best(lambda: pd.read_csv(io.BytesIO(content)), args.repeat)
    same = np.array_equal(table.values, frame.to_numpy(dtype=np.float64), equal_nan=True)
    print(f"{'reader':<16} {'seconds':>8} {'CPU s':>7} {'MB/s':>8}")
    print(f"{'read_csv':<16} {ours:>8.3f} {our_cpu:>7.3f} {megabytes / ours:>8.1f}")
    print(f"{'pandas defaults':<16} {theirs:>8.3f} {their_cpu:>7.3f} {megabytes / theirs:>8.1f}")
    print(f"ratio read_csv / pandas: {ours / theirs:.2f}x; same float64 values: {same}")


if __name__ == "__main__":
    main()
