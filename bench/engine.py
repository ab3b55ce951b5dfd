"""Benchmark: federated SIMI and SIMICE against the same fits computed on the pooled rows.

Run::

    .venv/bin/python bench/engine.py                 # 4 sites x 250,000 rows x 20 columns, M = 5
    .venv/bin/python bench/engine.py --quick         # 20,000 rows per site: a smoke run
    .venv/bin/python bench/engine.py --peer --repeat 3  # the peer's job shape (issue #14)
    .venv/bin/python bench/engine.py --rows 100000 --columns 12 --repeat 3 --whole  # issue #14
    .venv/bin/python bench/engine.py --rows 100000 --sites 3 --columns 12 --imputations 10 \\
        --repeat 3 --only SIMICE

What it measures:

- Data: ``--sites`` participants in all, central plus ``--sites - 1`` remote sites (the default
  4 means central and 3 remotes), each with ``--rows`` rows of ``--columns`` columns:
  covariates x1.., then g1, g2 (continuous) and b (binary), generated in memory from a known
  model, with cells missing at random given x1 (about 25% per target). Generating the data is
  not timed. SIMI imputes g1 (only g1 has missing cells in its data); SIMICE imputes g1, g2
  (Gaussian) and b (logistic) with one chain (``chains`` = single: 5 cycles before the first
  imputation, 2 between), M = ``--imputations``.
- Federated: ``federation.simulation.simulate`` run with ``asyncio.run``, exactly as
  ``fip simulate`` does minus reading and writing files: opening and validating every site,
  preparing the data, every round trip through the real binary codec and the in-memory
  transport (sites answer in worker threads), the draws and the imputations.
- Pooled: the plain numpy computation of the same fits on the row-wise concatenation of all
  sites' data (concatenating is not timed; selecting the rows and building the design is).
  SIMI: one Gaussian fit. SIMICE: every fit of every cycle, in the same order: a Gaussian fit is
  X'X, X'y, y'y over the pooled rows where the target is observed, then a Cholesky solve; a
  logistic fit is Newton with full steps from the previous fit of the same target, run for the
  number of iterations the federated report gives for that fit, each iteration one pass over
  the rows (X'WX, X'(y - p), log-likelihood), plus the pass at the final coefficients. It does
  no draws and no imputation, so the ratio federated / pooled is an upper bound on the price
  of federation.
- Whole process (``--whole``), two child processes from their start to their exit on the same
  CSV files (written to a temporary folder beforehand, not timed), run one after the other
  ``--repeat`` times so that both see the same load on a shared machine, after one run of
  each that is not timed (it fills the byte-code cache, kept in the temporary folder: the
  children write it even where ``PYTHONDONTWRITEBYTECODE`` is set, as an installed package
  has it):

  - fip: ``fip simulate`` as a user runs it: starting Python and importing, reading and
    checking every site's file, the job above, and writing its outputs (the zip of the M
    datasets and central's original, the long CSV, report.json and the small files for R).
  - plain: ``bench/pooled_job.py``, the same job done the plainest fast way in one process
    (its docstring says exactly what it does): polars' ``read_csv`` of every file, the rows
    stacked, the same model imputed with numpy on the pooled rows (every fit, draw and
    imputation of the job, the logistic fits with as many Newton steps as fip's report
    gives), and the same outputs written by the same writers: polars' ``write_csv`` for each
    table, ``zipfile`` deflating with ISA-L at fip's level, the long CSV. Both sides' bytes of
    the zip and the long CSV are printed, to show they wrote the same amount.

  Their ratio is what a user of ``fip`` pays over a statistician's own script on pooled data;
  issue #14's goals are 1.5x for SIMICE and 3x for SIMI, in wall time; the CPU seconds of
  each side (every thread) are shown too, less moved by other loads. Beside it, parts of
  fip's time, each alone: a child that starts Python and imports fip's command line, and in
  this process reading every file with ``read_csv`` and ``write_outputs`` of the job's result.
- Ratios are shown as bars: compute (the federated job / the pooled fits) and whole (fip /
  plain), with 1x and the goal marked.
- ``--peer``: the shape of the upstream peer's SIMICE job: 3 participants x 3,000 rows x 5
  columns (x1, x2, g1, g2, b), g1 (Gaussian) and b (logistic) imputed, g2 complete, M = 12,
  7 cycles before the first imputation and 6 between; its round trips are the figure to watch.
- Times are the median of ``--repeat`` runs. Round trips and bytes come from the job's report
  (bytes sent counts each request once per remote site). Memory: ``tracemalloc`` peak of the
  memory allocated during one extra run (the data generated beforehand is not counted; numpy
  reports its buffers to tracemalloc) and the process's ``ru_maxrss`` at the end of that run;
  on Linux the high-water mark is reset before each run (``/proc/self/clear_refs``), so
  ``ru_maxrss`` is the peak resident size of the process during that run, data included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import cho_factor, cho_solve
from scipy.special import expit

from federation.data import Table, read_csv
from federation.job import CENTRAL
from federation.outputs import LONG_NAME, ZIP_LEVEL, ZIP_NAME, write_outputs
from federation.registry import Registry
from federation.runtime import JobResult
from federation.simulation import simulate

QUICK_ROWS = 20_000
MISSING_LOGIT = (-1.2, 0.6)
"""Missingness of each target: P(missing) = sigmoid(a + b * x1), about 25% on average."""

MiB = 1024 * 1024
WHOLE_GOALS = {"SIMI": 3.0, "SIMICE": 1.5}
"""Issue #14's goals for whole ``fip simulate`` over the plain pooled job."""


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Layout:
    """Column names and target positions of the benchmark data."""

    columns: tuple[str, ...]

    @classmethod
    def of(cls, width: int) -> Layout:
        if width < 4:
            raise SystemExit("--columns must be at least 4 (one covariate, g1, g2, b)")
        covariates = tuple(f"x{i}" for i in range(1, width - 2))
        return cls(columns=(*covariates, "g1", "g2", "b"))

    @property
    def covariates(self) -> int:
        return len(self.columns) - 3

    def index(self, name: str) -> int:
        return self.columns.index(name)


def site_names(sites: int) -> list[str]:
    """Central first, then the remote sites."""
    return [CENTRAL, *(f"site{k}" for k in range(1, sites))]


def full_data(layout: Layout, rows: int, seed: int, site: int) -> np.ndarray:
    """Complete data of one site: g1 and b depend on the covariates, g2 on all of them."""
    rng = np.random.default_rng((seed, site))
    p = layout.covariates
    x = rng.standard_normal((rows, p))
    x[:, 1:] += 0.3 * x[:, :1]  # some correlation between covariates
    weights = np.linspace(0.5, -0.5, p) / np.sqrt(p)
    g1 = 1.0 + x @ weights + rng.standard_normal(rows)
    b = (rng.random(rows) < expit(-0.5 + x @ weights[::-1] + 0.5 * g1)).astype(np.float64)
    g2 = 2.0 - x @ weights + 0.5 * g1 - 0.7 * b + rng.standard_normal(rows)
    values = np.empty((rows, p + 3))
    values[:, :p] = x
    values[:, p] = g1
    values[:, p + 1] = g2
    values[:, p + 2] = b
    return values


def with_missing(
    values: np.ndarray, layout: Layout, targets: Sequence[str], seed: int, site: int
) -> np.ndarray:
    """A copy with each target's cells missing at random given x1."""
    rng = np.random.default_rng((seed, site, 1))
    out = values.copy()
    chance = expit(MISSING_LOGIT[0] + MISSING_LOGIT[1] * values[:, 0])
    for name in targets:
        out[rng.random(values.shape[0]) < chance, layout.index(name)] = np.nan
    return out


def make_tables(
    layout: Layout, rows: int, sites: int, seed: int, targets: Sequence[str]
) -> dict[str, Table]:
    tables = {}
    for k, name in enumerate(site_names(sites)):
        values = with_missing(full_data(layout, rows, seed, k), layout, targets, seed, k)
        tables[name] = Table(label=f"{name} (benchmark)", columns=layout.columns, values=values)
    return tables


# ---------------------------------------------------------------- measuring


@dataclass
class Memory:
    tracemalloc_peak: int = 0
    maxrss: int = 0
    maxrss_reset: bool = False


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of resident memory (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@contextmanager
def measure_memory(memory: Memory) -> Iterator[None]:
    gc.collect()
    memory.maxrss_reset = _reset_peak_rss()
    tracemalloc.start()
    try:
        yield
    finally:
        memory.tracemalloc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        memory.maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _median(times: Sequence[float]) -> float:
    return float(statistics.median(times))


def _timed(task: Callable[[], Any]) -> float:
    started = time.perf_counter()
    task()
    return time.perf_counter() - started


def median_time(task: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` runs, and the last run's value."""
    times = []
    value: Any = None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        value = task()
        times.append(time.perf_counter() - started)
    return _median(times), value


# ---------------------------------------------------------------- federated


def run_federated(
    algorithm: str,
    tables: dict[str, Table],
    targets: Sequence[tuple[str, str]],
    params: dict[str, Any],
    seed: int,
) -> JobResult:
    chosen = Registry.with_builtins().get(algorithm)
    central, *remote = tables
    return asyncio.run(
        simulate(
            algorithm=chosen,
            central=tables[central],
            sites={name: tables[name] for name in remote},
            targets=targets,
            params=params,
            seed=seed,
        )
    )


@dataclass
class Whole:
    """Median wall times of the whole-process runs, start to exit, interleaved run by run."""

    fip: float
    """``fip simulate`` as a child process."""
    reference: float
    """bench/pooled_job.py as a child process: the same job done the plain way."""
    fip_cpu: float
    """CPU seconds (user + system, every thread) of ``fip simulate``."""
    reference_cpu: float
    """CPU seconds of the plain job."""
    start: float
    """A child process that starts Python, imports fip's command line and exits."""
    read: float
    """Reading every site's file with read_csv, in this process."""
    write: float
    """write_outputs of the job's result, in this process."""
    fip_bytes: dict[str, int]
    """Bytes of fip's zip and long CSV."""
    reference_bytes: dict[str, int]
    """Bytes of the reference's zip and long CSV."""


REFERENCE = Path(__file__).with_name("pooled_job.py")


def _fip_command(
    algorithm: str,
    paths: dict[str, Path],
    targets: Sequence[tuple[str, str]],
    params: dict[str, Any],
    seed: int,
    out: Path,
) -> list[str]:
    central, *remote = paths
    return [
        sys.executable,
        "-c",
        "import sys; from federation.cli import main; sys.exit(main())",
        "simulate",
        "--algorithm",
        algorithm,
        "--central",
        str(paths[central]),
        *(arg for name in remote for arg in ("--site", f"{name}={paths[name]}")),
        *(arg for column, kind in targets for arg in ("--target", f"{column}:{kind}")),
        "--imputations",
        str(params["imputations"]),
        *(
            arg
            for key, value in params.items()
            if key != "imputations"
            for arg in ("--param", f"{key}={value}")
        ),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]


def _reference_job(
    algorithm: str,
    paths: dict[str, Path],
    targets: Sequence[tuple[str, str]],
    seed: int,
    result: JobResult,
    out: Path,
) -> dict[str, Any]:
    """What bench/pooled_job.py needs: the files, the model, and the logistic fits' Newton
    iterations as fip's report gives them (the reference runs as many, with full steps)."""
    report = result.report
    params = report["params"]
    kinds = [kind for _, kind in targets]
    fits = report["fits"]
    return {
        "algorithm": algorithm,
        "files": [str(path) for path in paths.values()],
        "targets": [column for column, _ in targets],
        "kinds": kinds,
        "imputations": len(result.imputed_cells),
        "ridge": float(params["ridge"]),
        "seed": seed,
        "before": int(params.get("iteration_before_first_imputation", 1)),
        "between": int(params.get("iteration_between_imputations", 1)),
        "iterations": [
            int(fit["iterations"])
            for k, fit in enumerate(fits)
            if kinds[k % len(kinds)] != "gaussian"
        ],
        "zip_level": ZIP_LEVEL,
        "out": str(out),
    }


def _sizes(out: Path) -> dict[str, int]:
    return {"zip": (out / ZIP_NAME).stat().st_size, "long": (out / LONG_NAME).stat().st_size}


def _site_file(table: Table, path: Path) -> None:
    """A site's CSV as a hospital's would be: a column of whole numbers (b) written as integers."""
    frame = pd.DataFrame(table.values, columns=list(table.columns))
    for name in frame.columns:
        cells = frame[name].dropna()
        if (cells == cells.round()).all():
            frame[name] = frame[name].astype("Int64")
    frame.to_csv(path, index=False, na_rep="NA")


def _children_cpu() -> float:
    """CPU seconds used so far by this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child_environment(root: Path) -> dict[str, str]:
    """The children's environment: Python's byte code cached (in ``root``), as it is for an
    installed package, even where this process's environment says not to write it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def run_whole(
    algorithm: str,
    tables: dict[str, Table],
    targets: Sequence[tuple[str, str]],
    params: dict[str, Any],
    seed: int,
    repeat: int,
    result: JobResult,
) -> Whole:
    """Median wall times of ``fip simulate`` and of the plain pooled job, each a child process
    from start to exit on the same CSV files, run one after the other ``repeat`` times (so both
    see the same load); then fip's start-up alone and its two file steps in this process."""
    with tempfile.TemporaryDirectory(prefix="fip-bench-") as folder:
        root = Path(folder)
        paths = {}
        for name, table in tables.items():
            paths[name] = root / f"{name}.csv"
            _site_file(table, paths[name])
        fip = _fip_command(algorithm, paths, targets, params, seed, root / "fip")
        spec = root / "reference.json"
        job = _reference_job(algorithm, paths, targets, seed, result, root / "reference")
        spec.write_text(json.dumps(job))
        reference = [sys.executable, str(REFERENCE), str(spec)]
        env = _child_environment(root)
        fip_times: list[tuple[float, float]] = []
        reference_times: list[tuple[float, float]] = []
        for run in range(repeat + 1):  # the first, not timed, fills the byte-code cache
            for command, times in ((fip, fip_times), (reference, reference_times)):
                cpu = _children_cpu()
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                if run:
                    times.append((time.perf_counter() - started, _children_cpu() - cpu))
        importing = [sys.executable, "-c", "import federation.cli"]
        start = _median(
            [_timed(lambda: subprocess.run(importing, check=True, env=env)) for _ in range(repeat)]
        )
        read, _ = median_time(lambda: [read_csv(path) for path in paths.values()], repeat)
        write, _ = median_time(lambda: write_outputs(result, root / "in-process"), repeat)
        return Whole(
            fip=_median([wall for wall, _ in fip_times]),
            reference=_median([wall for wall, _ in reference_times]),
            fip_cpu=_median([cpu for _, cpu in fip_times]),
            reference_cpu=_median([cpu for _, cpu in reference_times]),
            start=start,
            read=read,
            write=write,
            fip_bytes=_sizes(root / "fip"),
            reference_bytes=_sizes(root / "reference"),
        )


# ---------------------------------------------------------------- pooled


def _design(width: int, column: int) -> np.ndarray:
    return np.array([c for c in range(width) if c != column], dtype=np.intp)


def _penalty(xtx: np.ndarray, n: int, ridge: float) -> np.ndarray:
    """diag(P) = ridge * (sums of squared deviations), 0 for the intercept (the last column)."""
    sums = xtx[-1]
    diagonal: np.ndarray = ridge * (np.diag(xtx) - sums * sums / n)
    diagonal[-1] = 0.0
    return diagonal


def pooled_gaussian(z: np.ndarray, column: int, ridge: float) -> np.ndarray:
    """beta of a Gaussian fit on the rows of ``z`` (columns, then ones): X'X, X'y, y'y, solve."""
    cols = _design(z.shape[1], column)
    x = z[:, cols]
    y = z[:, column]
    n = y.size
    xtx = x.T @ x
    xty = x.T @ y
    yty = float(y @ y)
    gram = xtx + np.diag(_penalty(xtx, n, ridge))
    beta: np.ndarray = cho_solve(cho_factor(gram, lower=True), xty)
    _sse = yty - 2.0 * beta @ xty + beta @ xtx @ beta
    return beta


def pooled_logistic(
    z: np.ndarray, column: int, ridge: float, start: np.ndarray, iterations: int
) -> tuple[np.ndarray, int]:
    """Newton with full steps for ``iterations`` steps; returns beta and the passes made."""
    cols = _design(z.shape[1], column)
    x = z[:, cols]
    y = z[:, column]
    penalty = _penalty(x.T @ x, y.size, ridge)  # the first evaluation's moments
    beta = start.copy()
    passes = 0
    for step in range(iterations + 1):
        eta = x @ beta
        mu = expit(eta)
        h = (x * (mu * (1.0 - mu))[:, None]).T @ x + np.diag(penalty)
        g = x.T @ (y - mu) - penalty * beta
        _q = float(y @ eta - np.logaddexp(0.0, eta).sum()) - float(penalty @ beta**2) / 2
        passes += 1
        if step < iterations:
            beta = beta + cho_solve(cho_factor(h, lower=True), g)
    return beta, passes


def augment(values: np.ndarray) -> np.ndarray:
    z = np.empty((values.shape[0], values.shape[1] + 1))
    z[:, :-1] = values
    z[:, -1] = 1.0
    return z


def pooled_simi(pooled: np.ndarray, column: int, ridge: float) -> int:
    """The SIMI fit on the pooled complete rows; returns the passes over the data (1)."""
    complete = ~np.isnan(pooled).any(axis=1)
    pooled_gaussian(augment(pooled[complete]), column, ridge)
    return 1


def pooled_simice(
    pooled: np.ndarray,
    columns: Sequence[int],
    kinds: Sequence[str],
    fits: Sequence[dict[str, Any]],
    ridge: float,
) -> int:
    """Every fit of the federated job, in order, on the pooled rows; returns the passes."""
    z = augment(pooled)
    observed = {c: ~np.isnan(z[:, c]) for c in columns}
    for c in columns:  # start values: the observed mean, as each site does
        z[~observed[c], c] = z[observed[c], c].mean()
    rows = {c: z[observed[c]] for c in columns}
    starts = {c: np.zeros(z.shape[1] - 1) for c in columns}
    passes = 0
    for k, fit in enumerate(fits):
        position = k % len(columns)
        column = columns[position]
        if kinds[position] == "gaussian":
            pooled_gaussian(rows[column], column, ridge)
            passes += 1
        else:
            starts[column], used = pooled_logistic(
                rows[column], column, ridge, starts[column], int(fit["iterations"])
            )
            passes += used
    return passes


# ---------------------------------------------------------------- the benchmark


@dataclass
class Row:
    algorithm: str
    federated: float
    pooled: float
    round_trips: int
    bytes_sent: int
    bytes_received: int
    memory: Memory
    pooled_memory: Memory
    fits: int
    newton_iterations: int
    pooled_passes: int
    whole: Whole | None = None


def bench(
    algorithm: str,
    layout: Layout,
    args: argparse.Namespace,
) -> Row:
    if algorithm == "SIMI":
        names = ["g1"]
        targets = [("g1", "gaussian")]
    elif args.peer:
        names = ["g1", "b"]
        targets = [("g1", "gaussian"), ("b", "logistic")]
    else:
        names = ["g1", "g2", "b"]
        targets = [("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")]
    tables = make_tables(layout, args.rows, args.sites, args.seed, names)
    params: dict[str, Any] = {"imputations": args.imputations}
    if algorithm == "SIMICE":  # one chain, as these figures were first measured
        params.update(chains="single", iteration_before_first_imputation=5)
    if args.peer and algorithm == "SIMICE":
        params.update(iteration_before_first_imputation=7, iteration_between_imputations=6)

    def federated() -> JobResult:
        return run_federated(algorithm, tables, targets, params, args.seed)

    fed_seconds, result = median_time(federated, args.repeat)
    memory = Memory()
    with measure_memory(memory):
        federated()
    report = result.report
    ridge = float(report["params"]["ridge"])
    fits: list[dict[str, Any]] = report["fits"]

    pooled_rows = np.concatenate([t.values for t in tables.values()])
    columns = [layout.index(n) for n in names]
    kinds = [kind for _, kind in targets]

    def pooled() -> int:
        if algorithm == "SIMI":
            return pooled_simi(pooled_rows, columns[0], ridge)
        return pooled_simice(pooled_rows, columns, kinds, fits, ridge)

    pooled_seconds, passes = median_time(pooled, args.repeat)
    whole = None
    if args.whole:
        whole = run_whole(algorithm, tables, targets, params, args.seed, args.repeat, result)
    pooled_memory = Memory()
    with measure_memory(pooled_memory):
        pooled()
    return Row(
        algorithm=algorithm,
        federated=fed_seconds,
        pooled=pooled_seconds,
        round_trips=int(report["round_trips"]),
        bytes_sent=int(report["bytes_sent"]),
        bytes_received=int(report["bytes_received"]),
        memory=memory,
        pooled_memory=pooled_memory,
        fits=len(fits),
        newton_iterations=sum(int(f.get("iterations") or 0) for f in fits),
        pooled_passes=passes,
        whole=whole,
    )


def _mib(value: int) -> str:
    return f"{value / MiB:,.1f}"


def print_table(rows: Sequence[Row]) -> None:
    header = (
        "algorithm",
        "federated s",
        "pooled s",
        "ratio",
        "round trips",
        "bytes sent",
        "bytes received",
        "peak MiB (tracemalloc)",
        "ru_maxrss MiB",
        "fits",
    )
    body = [
        (
            r.algorithm,
            f"{r.federated:.3f}",
            f"{r.pooled:.3f}",
            f"{r.federated / r.pooled:.1f}x",
            f"{r.round_trips:,}",
            f"{r.bytes_sent:,}",
            f"{r.bytes_received:,}",
            _mib(r.memory.tracemalloc_peak),
            _mib(r.memory.maxrss),
            f"{r.fits}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print(line(["-" * w for w in widths]))
    for cells in body:
        print(line(cells))
    print()
    for r in rows:
        print(
            f"{r.algorithm}: Newton iterations {r.newton_iterations}; passes over the data: "
            f"federated {r.round_trips} round trips (open and close included) vs pooled "
            f"{r.pooled_passes}; pooled peak MiB: tracemalloc "
            f"{_mib(r.pooled_memory.tracemalloc_peak)}, ru_maxrss {_mib(r.pooled_memory.maxrss)}"
        )
    print()
    print("ratios (1 character per 0.1x, '>' past 8x; '|' marks 1x, '!' the goal if there is one):")
    for r in rows:
        print(f"  {r.algorithm:<7} compute {_bar(r.federated / r.pooled, None)}")
        if r.whole is not None:
            goal = WHOLE_GOALS.get(r.algorithm)
            print(f"  {'':<7} whole   {_bar(r.whole.fip / r.whole.reference, goal)}")
    wholes = [r for r in rows if r.whole is not None]
    if wholes:
        print()
        print("whole process, start to exit, files in and out (median of the interleaved runs):")
        for r in wholes:
            assert r.whole is not None
            w = r.whole
            print(
                f"  {r.algorithm}: fip simulate {w.fip:.2f} s, plain pooled job "
                f"{w.reference:.2f} s: {w.fip / w.reference:.2f}x (CPU seconds {w.fip_cpu:.2f} / "
                f"{w.reference_cpu:.2f}: {w.fip_cpu / w.reference_cpu:.2f}x). Bytes written, "
                f"fip / plain: zip {w.fip_bytes['zip']:,} / {w.reference_bytes['zip']:,}, long CSV "
                f"{w.fip_bytes['long']:,} / {w.reference_bytes['long']:,}"
            )
            print(
                f"    parts of fip's, each alone: starting Python and importing fip's command "
                f"line {w.start:.2f} s; in this process: reading the files {w.read:.2f} s, the "
                f"job {r.federated:.2f} s, writing the outputs {w.write:.2f} s"
            )
    if rows and not rows[0].memory.maxrss_reset:
        print("ru_maxrss could not be reset between runs: it is the process's peak so far")


_BAR_MAX = 80
"""Characters of the longest bar (8x); a longer one ends with '>'."""


def _bar(ratio: float, goal: float | None) -> str:
    """A ratio as a bar of one character per 0.1x, with 1x and the goal marked."""
    width = max(int(round(ratio * 10)), 1)
    marks = {10: "|"}
    if goal is not None:
        marks[int(round(goal * 10))] = "!"
    end = min(max(width, *marks), _BAR_MAX)
    cells = [marks.get(k, "#" if k <= width else " ") for k in range(1, end + 1)]
    if width > _BAR_MAX:
        cells[-1] = ">"
    verdict = "" if goal is None else (" (goal met)" if ratio <= goal else f" (goal {goal}x)")
    return f"{''.join(cells)} {ratio:.2f}x{verdict}"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=250_000, help="rows per site (250,000)")
    parser.add_argument(
        "--sites", type=int, default=4, help="participants, central included (4: central + 3)"
    )
    parser.add_argument("--columns", type=int, default=20, help="columns per site (20)")
    parser.add_argument("--imputations", type=int, default=5, help="M (5)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the median is shown (1)")
    parser.add_argument("--seed", type=int, default=2024, help="data and job seed")
    parser.add_argument(
        "--only", choices=("SIMI", "SIMICE"), action="append", help="run only this algorithm"
    )
    parser.add_argument(
        "--whole", action="store_true", help="also time fip simulate as a whole process"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_ROWS:,} rows per site"
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="the peer-shaped job: 3 sites x 3,000 rows x 5 columns, SIMICE of g1 (gaussian) "
        "and b (logistic), M = 12, 7 + 6 cycles",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = QUICK_ROWS
    if args.peer:
        args.sites, args.rows, args.columns, args.imputations = 3, 3_000, 5, 12
        args.only = ["SIMICE"]
    if args.sites < 1 or args.rows < 100 or args.imputations < 1 or args.repeat < 1:
        parser.error("need --sites >= 1, --rows >= 100, --imputations >= 1, --repeat >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    layout = Layout.of(args.columns)
    print(
        f"{args.sites} sites (central + {args.sites - 1} remote) x {args.rows:,} rows x "
        f"{len(layout.columns)} columns, M = {args.imputations}, median of {args.repeat}; "
        "SIMI: g1 (gaussian); SIMICE: g1, g2 (gaussian), b (logistic)",
        flush=True,
    )
    rows = []
    for algorithm in args.only or ["SIMI", "SIMICE"]:
        rows.append(bench(algorithm, layout, args))
        print(f"  {algorithm} done", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
