"""The round trips each method costs, as ``docs/algorithms.md`` ("Round trips per fit") gives
them: a job is open + its fits + close; a Gaussian or pmm fit is one round trip; a Newton fit
(logistic, categorical, ordinal, Poisson) is 1 + its iterations when every full step is
accepted (the start, then one line search per iteration carrying every candidate's Q and H, g
at the full step), and one more for each iteration that accepts a shorter step."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from algorithms import _newton
from algorithms._stats import Fit
from tests.test_exactness import Harness
from tests.test_new_methods import COLUMNS, values_of

FAMILY = {"c": "categorical", "o": "ordinal", "n": "poisson", "b": "logistic"}
LEVELS = {"c": (1.0, 2.0, 3.0), "o": (1.0, 2.0, 3.0, 4.0)}


def with_binary(values: np.ndarray, seed: int) -> np.ndarray:
    """values_of's columns and b, a binary column depending on x1 (missing like the others)."""
    rng = np.random.default_rng(seed)
    b = (rng.random(values.shape[0]) < 1.0 / (1.0 + np.exp(-values[:, 0]))).astype(np.float64)
    b[rng.random(values.shape[0]) < 0.2] = np.nan
    return np.column_stack([values, b])


def harness(algorithm: str, *targets: str) -> Harness:
    """Central and two sites; every column but the ``targets`` complete."""
    tables = {}
    for label, seed, rows in (("central", 21, 200), ("north", 22, 300), ("south", 23, 250)):
        values = with_binary(values_of(seed, rows), seed + 100)
        keep = [(*COLUMNS, "b").index(target) for target in targets]
        for j in range(2, values.shape[1]):
            if j not in keep:
                values[:, j] = np.nan_to_num(values[:, j], nan=2.0 if j < 6 else 1.0)
        tables[label] = values
    from tests.helpers import table

    columns = (*COLUMNS, "b")
    central = table("central", columns, tables.pop("central"))
    return Harness(algorithm, central, {k: table(k, columns, v) for k, v in tables.items()})


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("g", "gaussian"),
        ("g", "pmm"),
        ("b", "logistic"),
        ("c", "categorical"),
        ("o", "ordinal"),
        ("n", "poisson"),
    ],
)
def test_simi_round_trips_per_method_are_as_documented(name: str, kind: str) -> None:
    job = harness("SIMI", name)

    result = job.run([(name, kind)], imputations=2, ridge=1e-3)

    (fit,) = result.report["fits"]
    operations = job.transport.operations()
    if kind in ("gaussian", "pmm"):
        assert operations == [["fip.open"], ["gaussian_stats"], ["fip.close"]]
        assert result.report["round_trips"] == 3
        return
    iterations = int(fit["iterations"])
    assert iterations >= 2
    family = FAMILY[name]
    assert operations == [
        ["fip.open"],
        [f"{family}_start"],
        *[[f"{family}_search"]] * iterations,
        ["fip.close"],
    ]
    assert result.report["round_trips"] == 2 + 1 + iterations


def test_simice_round_trips_are_open_close_and_every_fit() -> None:
    """2 + the sum over fits of 1 (Gaussian) or 1 + iterations (Newton), every full step
    being accepted in this job."""
    job = harness("SIMICE", "g", "b", "c")

    result = job.run(
        [("g", "gaussian"), ("b", "logistic"), ("c", "categorical")],
        imputations=2,
        iteration_before_first_imputation=2,
        iteration_between_imputations=1,
        ridge=1e-3,
        chains="single",
    )

    fits = result.report["fits"]
    assert len(fits) == 9
    expected = 2 + sum(1 if f["target"] == "g" else 1 + int(f["iterations"]) for f in fits)
    assert result.report["round_trips"] == expected


def pooled(start: np.ndarray, batch: int) -> tuple[Fit, list[int]]:
    """A logistic fit over two participants from ``start``; the candidates of each request."""
    rng = np.random.default_rng(5)
    sites = []
    for rows in (400, 300):
        x = rng.normal(size=(rows, 2))
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(0.5 + x @ [1.0, -0.7])))).astype(float)
        sites.append(np.column_stack([x, y, np.ones(rows)]))
    asked: list[int] = []

    async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
        asked.append(1 if theta.ndim == 1 else theta.shape[0])
        if theta.ndim == 2:
            return {
                f"s{k}": _newton.search(_newton.LOGISTIC, z, None, 2, theta)
                for k, z in enumerate(sites)
            }
        return {
            f"s{k}": _newton.LOGISTIC.stats(z, None, 2, theta, moments=first)
            for k, z in enumerate(sites)
        }

    fit = asyncio.run(
        _newton.fit_pooled(
            _newton.LOGISTIC,
            evaluate,
            start=start,
            ridge=1e-5,
            max_iter=100,
            names=["x1", "x2", "(intercept)"],
            target="y",
            batch=batch,
        )
    )
    return fit, asked


def test_a_line_search_in_one_request_takes_the_same_steps_in_fewer_round_trips() -> None:
    """From a start far off, full steps are refused: one evaluation per halving one at a time,
    one request for all of them with the search; the fit is the same to the bit."""
    start = np.array([6.0, 6.0, -6.0])
    one, asked_one = pooled(start, 1)
    searched, asked = pooled(start, _newton.SEARCH)

    np.testing.assert_array_equal(searched.beta, one.beta)
    np.testing.assert_array_equal(searched.matrix, one.matrix)
    iterations = int(searched.iterations or 0)
    assert iterations == one.iterations
    halvings = len(asked_one) - 1 - iterations
    assert halvings > 0, "the start should be far enough for full steps to be refused"
    # one search per iteration (and the last, which finds no ascent), one more request for H
    # and g when a search accepts a shorter step
    searches = sum(1 for n in asked[1:] if n > 1)
    assert iterations <= searches <= iterations + 1
    assert len(asked) <= 1 + searches + iterations
    assert len(asked) < len(asked_one)
    assert all(1 <= n <= _newton.SEARCH for n in asked)
