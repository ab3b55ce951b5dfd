"""The round trips each method costs, as ``docs/algorithms.md`` ("Round trips per fit") gives
them: a job is open + its fits + close; a Gaussian or pmm fit is one round trip; a Newton fit
(logistic, categorical, ordinal, Poisson) is 1 + its iterations when every full step is
accepted (the start, then one line search per iteration carrying every candidate's Q and H, g
at the full step), and one more for each iteration that accepts a shorter step. A warm logistic
or Poisson fit of a narrow design asks for the third derivatives with its start
(``<family>_warm``), so that its first step usually lands: 2 round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from algorithms import _glm, _newton, _stats
from algorithms._stats import Fit
from federation.errors import FitError
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
    being accepted in this job; a Newton fit opens with ``<family>_start`` in the first cycle
    and ``<family>_warm`` (from the last cycle's optimum) after it."""
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
    openings = [
        ops[-1] for ops in job.transport.operations() if ops[0] in ("impute", "fill_unobserved")
    ]
    assert (
        openings
        == ["gaussian_stats", "logistic_start", "categorical_start"]
        + [
            "gaussian_stats",
            "logistic_warm",
            "categorical_warm",
        ]
        * 2
    )


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


# ---------------------------------------------------------------- third-order warm starts

FAMILIES = [_newton.LOGISTIC, _newton.POISSON, _newton.CATEGORICAL, _newton.ORDINAL]
LEVELS_OF = {"categorical": (0.0, 1.0, 2.0), "ordinal": (0.0, 1.0, 2.0, 3.0)}


def outcome(family: _newton.Family, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A target of ``family`` depending on x's three columns."""
    n = x.shape[0]
    eta = x @ [0.8, -0.5, 0.3]
    if family.name == "logistic":
        return (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.3 + eta)))).astype(float)
    if family.name == "poisson":
        return rng.poisson(np.exp(0.2 + 0.5 * eta)).astype(float)
    if family.name == "categorical":
        linear = np.column_stack([np.zeros(n), 0.3 + eta, -0.2 - 0.5 * eta + 0.4 * x[:, 1]])
        probabilities = np.exp(linear) / np.exp(linear).sum(axis=1, keepdims=True)
        uniform = np.asarray(rng.random(n))
        below: np.ndarray = probabilities.cumsum(axis=1) < uniform[:, None]
        levels: np.ndarray = below.sum(axis=1).astype(np.float64)
        return levels
    return np.digitize(eta + rng.logistic(size=n), [-1.0, 0.0, 1.0]).astype(float)


def participants(
    seed: int, rows: tuple[int, ...], family: _newton.Family = _newton.LOGISTIC, shift: float = 0.0
) -> list[np.ndarray]:
    """Each participant's design (x1, x2, x3, y, ones) for a target of ``family`` in column 3;
    ``shift`` moves x1 in a third of the rows, as an imputation of a predictor would."""
    rng = np.random.default_rng(seed)
    sites = []
    for n in rows:
        x = rng.normal(size=(n, 3))
        y = outcome(family, x, rng)
        moved = np.random.default_rng(seed + n).random(n) < 1 / 3
        x[moved, 0] += shift * np.random.default_rng(seed + 2 * n).normal(size=int(moved.sum()))
        sites.append(np.column_stack([x, y, np.ones(n)]))
    return sites


NAMES = ["x1", "x2", "x3", "(intercept)"]


def fit_on(
    sites: list[np.ndarray],
    start: np.ndarray | None,
    *,
    third: bool,
    family: _newton.Family = _newton.LOGISTIC,
) -> tuple[Fit, int]:
    """The pooled fit over ``sites`` from ``start``, asking the third derivatives with the
    start when ``third``; the fit and its evaluations (round trips)."""
    asked = []
    levels = LEVELS_OF.get(family.name, ())

    async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
        asked.append(theta)
        replies = {}
        for k, z in enumerate(sites):
            if theta.ndim == 2:
                replies[f"s{k}"] = _newton.search(family, z, None, 3, theta, levels=levels)
                continue
            reply = family.stats(z, None, 3, theta, levels=levels, moments=first)
            if first and third:
                reply["third"] = _newton.third_derivatives(family, z, None, 3, theta, levels=levels)
            replies[f"s{k}"] = reply
        return replies

    fit = asyncio.run(
        _newton.fit_pooled(
            family,
            evaluate,
            start=start,
            ridge=1e-5,
            max_iter=100,
            names=NAMES,
            target="y",
            levels=levels,
            batch=_newton.SEARCH,
        )
    )
    return fit, len(asked)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_warm_fit_with_third_derivatives_lands_in_one_step_where_newton_takes_two(
    family: _newton.Family,
) -> None:
    """From the optimum of the data before a predictor was re-imputed: Newton takes two steps
    (its first misses by O(|d|^2)), the third-order first step one; both stop by the same test,
    so both are the optimum to the tolerance, and so is the pooled Newton step from each."""
    before = participants(3, (1500, 1000), family)
    after = participants(3, (1500, 1000), family, shift=0.3)
    warm, _ = fit_on(before, None, third=False, family=family)

    newton, newton_trips = fit_on(after, warm.beta, third=False, family=family)
    third, third_trips = fit_on(after, warm.beta, third=True, family=family)

    assert newton.converged and third.converged
    assert (newton.iterations, newton_trips) == (2, 3)
    assert (third.iterations, third_trips) == (1, 2)
    np.testing.assert_allclose(third.beta, newton.beta, rtol=0, atol=1e-5)
    pooled = np.concatenate(after)
    levels = LEVELS_OF.get(family.name, ())
    stats = family.stats(pooled, None, 3, third.beta, levels=levels)
    step = np.linalg.solve(third.matrix, stats["g"] - (third.matrix - stats["h"]) @ third.beta)
    assert third.layout is not None
    scale = np.ones(step.size)
    scale[third.layout.kept] = third.layout.scale()
    assert np.max(np.abs(step) * scale) < _newton.TOLERANCE


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_third_derivatives_are_the_derivative_of_the_information(
    family: _newton.Family, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T packed by third_derivatives, contracted with v, is the derivative of H along v
    (central differences of the sites' own H); summed over row blocks of 64 it is the same."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 3))
    levels = LEVELS_OF.get(family.name, ())
    y = outcome(family, x, rng)
    z = np.column_stack([x[:, :2], y, x[:, 2], np.ones(400)])
    size = family.size(4, len(levels))
    theta = family.start(4, len(levels)) + 0.2 * rng.normal(size=size)
    if family.name == "ordinal":
        theta[3:] = [-1.0, 0.1, 1.2]  # thresholds that increase
    v = rng.normal(size=size)
    rows = rng.random(400) < 0.8

    packed = _newton.third_derivatives(family, z, rows, 2, theta, levels=levels)
    eps = 1e-5
    upper = family.stats(z, rows, 2, theta + eps * v, levels=levels)["h"]
    lower = family.stats(z, rows, 2, theta - eps * v, levels=levels)["h"]

    assert packed.shape == (size, size * (size + 1) // 2)
    np.testing.assert_allclose(
        _newton._unpack(packed) @ v, (upper - lower) / (2 * eps), rtol=1e-6, atol=1e-6
    )
    for module in (_glm, _stats):
        monkeypatch.setattr(module, "BLOCK_ROWS", 64)
    blocked = _newton.third_derivatives(family, z, rows, 2, theta, levels=levels)
    np.testing.assert_allclose(blocked, packed, rtol=1e-12, atol=1e-12)


def test_third_derivatives_are_refused_for_a_fit_of_too_many_parameters() -> None:
    width = _newton.THIRD_ORDER_WIDTH
    wide = np.ones((5, width + 2))  # the target and width + 1 design columns
    narrow = np.ones((5, 7))  # the target and 6 design columns: 12 categorical parameters

    with pytest.raises(FitError, match=f"at most {width} parameters; this one has {width + 1}"):
        _newton.third_derivatives(_newton.LOGISTIC, wide, None, 0, np.zeros(width + 1))
    with pytest.raises(FitError, match=f"at most {width} parameters; this one has 18"):
        _newton.third_derivatives(
            _newton.CATEGORICAL, narrow, None, 0, np.zeros(18), levels=(0.0, 1.0, 2.0, 3.0)
        )


def test_a_warm_start_asks_third_derivatives_of_fits_of_few_parameters() -> None:
    start = np.zeros(3)
    narrow = ["a", "b", "(intercept)"]
    width = _newton.THIRD_ORDER_WIDTH
    wide = [f"x{i}" for i in range(width)] + ["(intercept)"]
    three, nine = (0.0, 1.0, 2.0), tuple(float(k) for k in range(9))

    assert _newton.third_order(_newton.LOGISTIC, start, narrow)
    assert _newton.third_order(_newton.POISSON, start, narrow)
    assert _newton.third_order(_newton.CATEGORICAL, start, narrow, three)  # 6 parameters
    assert _newton.third_order(_newton.ORDINAL, start, narrow, nine)  # 2 + 8
    assert not _newton.third_order(_newton.LOGISTIC, None, narrow)  # a cold start
    assert not _newton.third_order(_newton.LOGISTIC, start, wide)
    assert not _newton.third_order(_newton.CATEGORICAL, start, narrow, nine)  # 24
    assert not _newton.third_order(_newton.ORDINAL, start, wide, three)  # width + 2


def peer_values(seed: int, rows: int) -> np.ndarray:
    """x1, x2, x3, g1 (Gaussian) and b (binary, depending on x and g1), as bench/engine.py's
    peer-shaped job has them; g1 and b missing in about a quarter of the rows each."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    g1 = 1.0 + x @ [0.4, 0.0, -0.4] + rng.normal(size=rows)
    b = (rng.random(rows) < 1.0 / (1.0 + np.exp(0.5 - x @ [-0.4, 0.0, 0.4] - 0.5 * g1))) * 1.0
    values = np.column_stack([x, g1, b])
    for column in (3, 4):
        values[rng.random(rows) < 0.25, column] = np.nan
    return values


@pytest.mark.slow
def test_in_the_peer_shaped_job_warm_logistic_fits_land_in_one_step() -> None:
    """The shape of the peer's job (a Gaussian and a logistic target, M = 12, 7 + 6 cycles,
    3 x 3,000 rows): every warm logistic fit but a few lands in one step, so the job costs
    open + close + 1 a Gaussian fit + 2 a warm logistic fit + 1 + iterations the cold one."""
    from tests.helpers import table

    columns = ("x1", "x2", "x3", "g1", "b")
    central, *remote = (
        table(name, columns, peer_values(40 + k, 3000))
        for k, name in enumerate(("central", "north", "south"))
    )
    job = Harness("SIMICE", central, dict(zip(("north", "south"), remote, strict=True)))

    report = job.run(
        [("g1", "gaussian"), ("b", "logistic")],
        imputations=12,
        iteration_before_first_imputation=7,
        iteration_between_imputations=6,
        chains="single",  # the peer's one chain
    ).report

    fits = report["fits"]
    assert len(fits) == 146
    logistic = [int(f["iterations"]) for f in fits if f["target"] == "b"]
    assert sum(1 for i in logistic[1:] if i == 1) >= 0.9 * (len(logistic) - 1)
    assert report["round_trips"] == 2 + 73 + sum(1 + i for i in logistic)


def method_values(seed: int, rows: int, kind: str) -> np.ndarray:
    """peer_values with b replaced by a target of ``kind`` depending on x and g1 (levels coded
    1, 2, 3 and 1..4), missing in about a quarter of the rows."""
    values = peer_values(seed, rows)
    rng = np.random.default_rng(seed + 1000)
    family = {"logistic": _newton.LOGISTIC, "poisson": _newton.POISSON}.get(kind)
    family = family or (_newton.CATEGORICAL if kind == "categorical" else _newton.ORDINAL)
    drivers = np.column_stack([values[:, 0], values[:, 2], np.nan_to_num(values[:, 3]) - 1.0])
    y = outcome(family, drivers, rng)
    values[:, 4] = y + (1.0 if family.has_levels else 0.0)
    values[rng.random(rows) < 0.25, 4] = np.nan
    return values


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logistic", "poisson", "categorical", "ordinal"])
def test_round_trips_per_fit_of_every_newton_method_are_as_documented(kind: str) -> None:
    """docs/algorithms.md, "Round trips per fit": in a SIMICE job of 3 x 3,000 rows (a Gaussian
    target and one of ``kind``), a Gaussian fit costs 1 round trip, the cold first Newton fit
    1 + its iterations, and a warm one 2 (its start with the third derivatives and one line
    search) but for a few; the job 2 more (open, close)."""
    from tests.helpers import table

    columns = ("x1", "x2", "x3", "g1", "t")
    central, *remote = (
        table(name, columns, method_values(40 + k, 3000, kind))
        for k, name in enumerate(("central", "north", "south"))
    )
    job = Harness("SIMICE", central, dict(zip(("north", "south"), remote, strict=True)))

    report = job.run(
        [("g1", "gaussian"), ("t", kind)],
        imputations=3,
        iteration_before_first_imputation=5,
        iteration_between_imputations=3,
        chains="single",
    ).report

    fits = report["fits"]
    newton = [int(f["iterations"]) for f in fits if f["target"] == "t"]
    assert len(newton) == 5 + 2 * 3
    assert newton[0] >= 3  # the cold start
    assert sum(1 for i in newton[1:] if i == 1) >= 0.9 * (len(newton) - 1)
    assert report["round_trips"] == 2 + len(newton) + sum(1 + i for i in newton)
    openings = [
        ops[-1] for ops in job.transport.operations() if ops[-1].endswith(("_start", "_warm"))
    ]
    assert openings == [f"{kind}_start"] + [f"{kind}_warm"] * (len(newton) - 1)
