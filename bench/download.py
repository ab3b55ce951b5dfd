"""Benchmark: central's downloads (the zip and the long CSV) of a finished job.

Run::

    .venv/bin/python bench/download.py                   # 100,000 rows x 20 columns, M = 10
    .venv/bin/python bench/download.py --rows 1000000    # a 1M-row central
    .venv/bin/python bench/download.py --levels 0,1,2,3  # bytes and seconds per deflate level

What it measures:

- A finished job's result made in memory (not timed): central's table of ``--rows`` x
  ``--columns`` normal floats, a quarter of the cells of the last five columns missing, and
  ``--imputations`` sets of imputed cells; that is all a job keeps.
- Each download as the portal serves it: the bytes produced from the result, consumed to the
  last byte (``zip_chunks``/``long_chunks`` where they exist; on older code, which built each
  file whole, ``zip_bytes``/``long_csv``). Seconds to the last byte, the bytes, and the peak
  extra memory: the process's resident high-water mark during the download (reset before it
  through ``/proc/self/clear_refs``) minus its resident size before, also as a multiple of
  central's raw float64 table. CPU seconds (all threads of the process) beside the wall time
  show how much of the machine the download had: on a busy machine the wall time is longer.
  Each download runs twice and the second is shown, as in a server that has served one before
  (the first pages in the writer's libraries).
- ``--levels``: the zip at each of ISA-L's deflate levels (0 to 3), bytes and seconds.
"""

from __future__ import annotations

import argparse
import gc
import re
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from federation import outputs
from federation.data import Table
from federation.job import JobSpec, Target
from federation.runtime import JobResult

MiB = 1 << 20


def make_result(rows: int, columns: int, imputations: int, seed: int) -> JobResult:
    rng = np.random.default_rng(seed)
    names = tuple(f"x{j}" for j in range(1, columns + 1))
    values = rng.standard_normal((rows, columns))
    targets = names[-5:]
    values[:, -5:][rng.random((rows, 5)) < 0.25] = np.nan
    missing = int(np.isnan(values).sum())
    spec = JobSpec(
        job_id="bench",
        algorithm="SIMICE",
        version="1",
        digest="d",
        columns=names,
        targets=tuple(Target(columns - 5 + k, name, "gaussian") for k, name in enumerate(targets)),
        params={"imputations": imputations},
        seed=seed,
        sites=(),
    )
    cells = [rng.standard_normal(missing) for _ in range(imputations)]
    table = Table(label="central (benchmark)", columns=names, values=values)
    return JobResult(spec=spec, table=table, imputed_cells=cells, report={})


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(produce: Callable[[], Iterable[bytes]]) -> tuple[float, float, int, int]:
    """Seconds to the last byte, CPU seconds of the process (all threads), bytes, and the peak
    extra resident memory."""
    gc.collect()
    before = _status("VmRSS")
    _reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    size = 0
    for chunk in produce():
        size += len(chunk)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, size, _status("VmHWM") - before


def producers(result: JobResult) -> dict[str, Callable[[], Iterable[bytes]]]:
    if hasattr(outputs, "zip_chunks"):
        return {
            "zip": lambda: outputs.zip_chunks(result),
            "long CSV": lambda: outputs.long_chunks(result),
        }
    return {  # older code: each file built whole
        "zip": lambda: [outputs.zip_bytes(result)],
        "long CSV": lambda: [outputs.long_csv(result)],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="central's rows (100,000)")
    parser.add_argument("--columns", type=int, default=20, help="columns, >= 5 (20)")
    parser.add_argument("--imputations", type=int, default=10, help="M (10)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--levels", help="ISA-L deflate levels of the zip to compare, e.g. 0,1,3")
    args = parser.parse_args(argv)
    if args.columns < 5 or args.rows < 1 or args.imputations < 1:
        parser.error("need --columns >= 5, --rows >= 1, --imputations >= 1")
    result = make_result(args.rows, args.columns, args.imputations, args.seed)
    raw = result.table.values.nbytes
    print(
        f"central {args.rows:,} rows x {args.columns} columns (raw float64 {raw / MiB:,.1f} MiB),"
        f" M = {args.imputations}, {result.imputed_cells[0].size:,} imputed cells per dataset"
    )
    if args.levels:
        if not hasattr(outputs, "zip_chunks"):
            parser.error("--levels needs the streamed writer (zip_chunks)")
        print(f"{'level':>5}  {'bytes':>15}  {'seconds':>8}  {'CPU s':>6}")
        for level in (int(x) for x in args.levels.split(",")):
            seconds, cpu, size, _ = measure(partial(outputs.zip_chunks, result, level=level))
            print(f"{level:>5}  {size:>15,}  {seconds:>8.2f}  {cpu:>6.2f}")
        return
    heads = ("s to last byte", "CPU s", "bytes", "peak extra MiB", "x raw")
    print(
        f"{'download':<9} {heads[0]:>14}  {heads[1]:>6}  {heads[2]:>15}  {heads[3]:>14}  "
        f"{heads[4]:>6}"
    )
    for name, produce in producers(result).items():
        measure(produce)  # warm: libraries' code paged in, thread pools started
        seconds, cpu, size, extra = measure(produce)
        print(
            f"{name:<9} {seconds:>14.2f}  {cpu:>6.2f}  {size:>15,}  {extra / MiB:>14,.1f}  "
            f"{extra / raw:>6.2f}"
        )


if __name__ == "__main__":
    main()
