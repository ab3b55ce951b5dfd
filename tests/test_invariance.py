"""Fits that do not depend on units (ALGORITHMS.md, Conventions): shifting or rescaling any
column (+1000, x1000, /1000) shifts or rescales its own imputations exactly and changes no other
column's, for continuous and binary targets and predictors, in every built-in family.

"Exactly" is to rounding: every imputed cell of the transformed column, transformed back, and
every imputed cell of any other column, equals the untransformed run's to ``TOLERANCE`` in units
of that column's standard deviation, with the same seed. That holds only because the penalty is
lambda * diag(C) (no unit, no offset), the variance draw is SSE / chi2(N - p), and fits and
draws are made in centred coordinates with a scale-free Newton stopping rule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from federation.data import Table
from federation.runtime import JobResult
from tests.helpers import run, table

COLUMNS = ("x1", "year", "g", "b")
TOLERANCE = 1e-8

Transform = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
TRANSFORMS: Mapping[str, Transform] = {
    "+1000": (lambda v: v + 1000.0, lambda v: v - 1000.0),
    "x1000": (lambda v: v * 1000.0, lambda v: v / 1000.0),
    "/1000": (lambda v: v / 1000.0, lambda v: v * 1000.0),
}


def values(seed: int, rows: int) -> np.ndarray:
    """x1 standard normal, a calendar-year-like predictor, g linear and b logistic in both."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    year = 2008.0 + rng.integers(0, 3, size=rows) + 0.1 * rng.normal(size=rows)
    g = 3.0 + 0.8 * x1 + 0.5 * (year - 2008.0) + rng.normal(size=rows)
    eta = -0.2 + 0.9 * x1 - 0.4 * (year - 2008.0)
    b = (rng.random(rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return np.column_stack([x1, year, g, b])


def tables(targets: tuple[str, ...], *, chained: bool) -> tuple[Table, dict[str, Table]]:
    """Central (120 rows) and two sites; each target missing in about a fifth of the rows.
    For a one-target family central's predictors stay complete where its target is missing."""
    rng = np.random.default_rng(5)
    data = {"central": values(1, 120), "north": values(2, 150), "south": values(3, 180)}
    for v in data.values():
        for name in targets:
            v[rng.random(v.shape[0]) < 0.2, COLUMNS.index(name)] = np.nan
    if not chained:
        assert len(targets) == 1
    made = {name: table(name, COLUMNS, v) for name, v in data.items()}
    central = made.pop("central")
    return central, made


def transformed(source: Table, column: int, forward: Callable[[np.ndarray], np.ndarray]) -> Table:
    moved = source.values.copy()
    moved[:, column] = forward(moved[:, column])
    return table(source.label, COLUMNS, moved)


CASES = [
    # (algorithm, targets, the column transformed)
    *[(a, ("g",), c) for a in ("SIMI", "IMI", "AVGMMI", "CSLMI") for c in ("g", "x1", "year")],
    *[(a, ("b",), c) for a in ("SIMI", "IMI", "AVGMMI", "CSLMI") for c in ("x1", "year")],
    *[("SIMICE", ("g", "b"), c) for c in ("g", "x1", "year")],
]


def job(
    algorithm: str,
    targets: tuple[str, ...],
    forward: Callable[[np.ndarray], np.ndarray] | None,
    index: int,
) -> tuple[Table, JobResult]:
    """Central's table and the job's result, on the original data (``forward`` None) or with
    column ``index`` transformed by ``forward`` at every participant; the same seed either way."""
    chained = algorithm.endswith("CE")
    central, sites = tables(targets, chained=chained)
    if algorithm in ("IMI", "IMICE"):
        sites = {}
    if forward is not None:
        central = transformed(central, index, forward)
        sites = {name: transformed(site, index, forward) for name, site in sites.items()}
    params: dict[str, Any] = {"imputations": 3}
    if chained:
        params.update(iteration_before_first_imputation=3, iteration_between_imputations=1)
    kinds = {"g": "gaussian", "b": "logistic"}
    chosen = [(t, kinds[t]) for t in targets]
    return central, run(algorithm, central, sites, chosen, seed=9, **params)


@functools.cache
def original(algorithm: str, targets: tuple[str, ...]) -> tuple[Table, JobResult]:
    """The run on the original data: the same for every column and transform, so run once per
    family and targets and shared (read only: ``dataset`` returns a copy)."""
    return job(algorithm, targets, None, 0)


def deviation(algorithm: str, targets: tuple[str, ...], column: str, how: str) -> float:
    """The largest difference, in standard deviations of its column, between an imputed cell
    of the run on the original data and the same cell of the run on the transformed data
    (the transformed column's cells transformed back)."""
    forward, backward = TRANSFORMS[how]
    index = COLUMNS.index(column)
    central, before = original(algorithm, targets)
    _, after = job(algorithm, targets, forward, index)

    missing = before.missing
    worst = 0.0
    for m in range(1, 4):
        old, new = before.dataset(m), after.dataset(m)
        new[:, index] = backward(new[:, index])
        for c in range(len(COLUMNS)):
            cells = missing[:, c]
            if not cells.any():
                continue
            sd = float(np.nanstd(central.values[:, c])) or 1.0
            worst = max(worst, float(np.max(np.abs(new[cells, c] - old[cells, c]))) / sd)
    return worst


@pytest.mark.parametrize("how", list(TRANSFORMS))
@pytest.mark.parametrize(("algorithm", "targets", "column"), CASES)
def test_shifting_or_rescaling_a_column_moves_only_its_own_imputations(
    algorithm: str, targets: tuple[str, ...], column: str, how: str
) -> None:
    assert deviation(algorithm, targets, column, how) <= TOLERANCE
