"""The pooled job done the plain way, in one process: the reference of bench/engine.py --whole.

Run by bench/engine.py as a child process, like ``fip simulate``::

    python bench/pooled_job.py JOB.json

What a statistician holding every site's file would write, fast but without tricks:

- Start Python and import numpy, polars and zipfile (with ISA-L's deflate, ``isal_zlib``, put
  in zipfile's place: one line, and the compressor fip's zip uses, at the same level).
- Read every site's CSV with ``polars.read_csv`` (its defaults, ``NA`` as the missing token),
  and stack the sites' rows into one float64 matrix (central's rows first).
- Impute with numpy, the same model as fip's job and ALGORITHMS.md: SIMI fits the Gaussian
  model once on the pooled complete rows (X'X, X'y, y'y, the ridge penalty, a Cholesky solve),
  then for m = 1..M draws sigma^2 and the coefficients and imputes central's missing cells.
  SIMICE fills each target's missing cells with draws from the observed values, then runs the
  chain (one chain: ``before`` cycles, then ``between`` cycles before each further dataset),
  each target in turn: a Gaussian fit, or a logistic Newton fit warm-started at the target's
  previous fit and run for the number of iterations fip's report gives for that fit (full
  steps: no line search, no extra evaluations), then one draw of the parameters and an
  imputation of every pooled row's missing cells of that target; central's rows are kept as
  dataset m when the chain reaches it. No traces, no convergence diagnostics, no checks.
- Write what fip writes, the same way cell for cell: ``imputations.zip`` holding
  ``imputation_<m>.csv`` for m = 1..M and ``original.csv`` (``zipfile``, deflated at ISA-L's
  level ``zip_level``), the long CSV ``imputations_long.csv`` (``.imp``, ``.id``, then the
  columns; the original as ``.imp`` 0) and ``report.json``, every table by polars'
  ``write_csv`` with ``NA`` for missing cells. A column polars read as integers stays integer
  (the imputed 0/1 cells of a logistic target too), as fip writes whole-number columns, so the
  CSV text is the same size; the small files fip adds for R (methods.csv, fip_mids.R,
  chains.csv) are left out. One thread of Python: polars formats and reads on all cores by
  itself.

It prints the bytes of the zip and the long CSV, one line of JSON, so the benchmark can show
that both sides wrote the same amount.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from isal import isal_zlib

zipfile.zlib = isal_zlib  # type: ignore[attr-defined]  # zipfile's deflate, by ISA-L


def main(spec_path: str) -> None:
    job: dict[str, Any] = json.loads(Path(spec_path).read_text())
    frames = [pl.read_csv(path, null_values="NA") for path in job["files"]]
    central = frames[0]
    columns = central.columns
    pooled = np.vstack([frame.cast(pl.Float64).to_numpy() for frame in frames])
    rows = central.height
    rng = np.random.default_rng(job["seed"])
    targets = [columns.index(name) for name in job["targets"]]
    if job["algorithm"] == "SIMI":
        datasets = simi(pooled, rows, targets[0], job, rng)
    else:
        datasets = simice(pooled, rows, targets, job, rng)
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    completed = [
        central.with_columns(
            pl.Series(columns[j], cells[:, k]).cast(central.schema[columns[j]])
            for k, j in enumerate(targets)
        )
        for cells in datasets
    ]
    width = len(str(len(completed)))
    zip_path = out / "imputations.zip"
    with zipfile.ZipFile(
        zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=job["zip_level"]
    ) as archive:
        for m, frame in enumerate([*completed, central], start=1):
            name = f"imputation_{m:0{width}d}.csv" if m <= len(completed) else "original.csv"
            with archive.open(name, "w") as handle:
                frame.write_csv(handle, null_value="NA")
    long_path = out / "imputations_long.csv"
    ids = pl.Series(".id", np.arange(1, rows + 1))
    pl.concat(
        [
            frame.select(pl.lit(m, dtype=pl.Int64).alias(".imp"), ids, pl.all())
            for m, frame in enumerate([central, *completed])
        ]
    ).write_csv(long_path, null_value="NA")
    (out / "report.json").write_text(json.dumps({"algorithm": job["algorithm"]}) + "\n")
    sizes = {"zip": zip_path.stat().st_size, "long": long_path.stat().st_size}
    print(json.dumps(sizes))


def _penalised(x: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """X'X and the ridge penalty's diagonal (0 for the intercept, the last column)."""
    xtx = x.T @ x
    sums = xtx[-1]
    penalty: np.ndarray = ridge * (np.diag(xtx) - sums * sums / x.shape[0])
    penalty[-1] = 0.0
    return xtx, penalty


def gaussian_draw(
    x: np.ndarray, y: np.ndarray, ridge: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """One draw of (coefficients, sigma) of the Gaussian fit of y on x (mice's norm)."""
    xtx, penalty = _penalised(x, ridge)
    xty = x.T @ y
    gram = xtx + np.diag(penalty)
    upper = np.linalg.cholesky(gram).T
    beta = np.linalg.solve(gram, xty)
    sse = float(y @ y - 2.0 * beta @ xty + beta @ xtx @ beta)
    sigma = np.sqrt(sse / rng.chisquare(max(y.size - x.shape[1], 1)))
    return beta + sigma * np.linalg.solve(upper, rng.standard_normal(beta.size)), float(sigma)


def simi(
    pooled: np.ndarray, rows: int, target: int, job: dict[str, Any], rng: np.random.Generator
) -> list[np.ndarray]:
    design = [c for c in range(pooled.shape[1]) if c != target]
    complete = ~np.isnan(pooled).any(axis=1)
    x = np.column_stack([pooled[complete][:, design], np.ones(int(complete.sum()))])
    y = pooled[complete, target]
    missing = np.isnan(pooled[:rows, target])
    x_missing = np.column_stack([pooled[:rows][missing][:, design], np.ones(int(missing.sum()))])
    datasets = []
    for _ in range(job["imputations"]):
        alpha, sigma = gaussian_draw(x, y, job["ridge"], rng)
        cells = pooled[:rows, [target]].copy()
        cells[missing, 0] = x_missing @ alpha + sigma * rng.standard_normal(x_missing.shape[0])
        datasets.append(cells)
    return datasets


def logistic_draw(
    x: np.ndarray,
    y: np.ndarray,
    ridge: float,
    start: np.ndarray,
    iterations: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Newton with full steps from ``start``, then one draw from N(theta, H^-1); returns the
    fit (the next warm start) and the draw."""
    _, penalty = _penalised(x, ridge)
    theta = start
    for step in range(iterations + 1):
        mu = 1.0 / (1.0 + np.exp(-(x @ theta)))
        hessian = (x * (mu * (1.0 - mu))[:, None]).T @ x + np.diag(penalty)
        if step < iterations:
            theta = theta + np.linalg.solve(hessian, x.T @ (y - mu) - penalty * theta)
    upper = np.linalg.cholesky(hessian).T
    return theta, theta + np.linalg.solve(upper, rng.standard_normal(theta.size))


def simice(
    pooled: np.ndarray,
    rows: int,
    targets: list[int],
    job: dict[str, Any],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    z = np.column_stack([pooled, np.ones(pooled.shape[0])])
    missing = {j: np.isnan(z[:, j]) for j in targets}
    for j in targets:  # mice's start: draws from the observed values
        z[missing[j], j] = rng.choice(z[~missing[j], j], size=int(missing[j].sum()))
    starts = {j: np.zeros(z.shape[1] - 1) for j in targets}
    iterations = iter(job["iterations"])
    keep = {job["before"] + k * job["between"] for k in range(job["imputations"])}
    datasets = []
    for cycle in range(1, max(keep) + 1):
        for j, kind in zip(targets, job["kinds"], strict=True):
            design = [c for c in range(z.shape[1]) if c != j]
            observed = z[~missing[j]]
            x, y = observed[:, design], observed[:, j]
            x_missing = z[missing[j]][:, design]
            if kind == "gaussian":
                alpha, sigma = gaussian_draw(x, y, job["ridge"], rng)
                noise = sigma * rng.standard_normal(x_missing.shape[0])
                z[missing[j], j] = x_missing @ alpha + noise
            else:
                starts[j], theta = logistic_draw(
                    x, y, job["ridge"], starts[j], next(iterations), rng
                )
                chance = 1.0 / (1.0 + np.exp(-(x_missing @ theta)))
                z[missing[j], j] = (rng.random(chance.size) < chance).astype(np.float64)
        if cycle in keep:
            datasets.append(z[:rows, targets].copy())
    return datasets


if __name__ == "__main__":
    main(sys.argv[1])
