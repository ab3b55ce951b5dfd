"""The categorical, ordinal, Poisson and PMM targets through the engine (ALGORITHMS.md revision
2): every SIMI and SIMICE fit equals an independent fit on the pooled rows with the same
penalty, whatever the split; imputations are values the column may hold (levels, counts, values
observed at the imputing site); they do not depend on a predictor's unit or offset; and the
column checks name the column.

The reference fits are written here from each model's definition (scipy's log_softmax, the
logistic cdf, the Poisson pmf) and maximised by scipy's BFGS: nothing of ``algorithms`` is used.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from scipy import optimize, special, stats

from federation.errors import FipError, InputError
from federation.job import make_targets
from tests.helpers import run, table
from tests.test_exactness import Harness, Snapshot, snapshot_on_fit

COLUMNS = ("x1", "x2", "c", "o", "n", "g")
X1, X2, C, ORD, N, G = range(1, 7)  # 1-based column indices
TARGETS = [("c", "categorical"), ("o", "ordinal"), ("n", "poisson"), ("g", "pmm")]
RIDGE = 1e-3
ATOL = 1e-4
"""Newton stops within 1e-5 SD of the optimum and BFGS within its gtol: both far below this."""
LEVELS = {C: (1.0, 2.0, 3.0), ORD: (1.0, 2.0, 3.0, 4.0)}


def values_of(seed: int, rows: int, *, missing: bool = True) -> np.ndarray:
    """x1, x2 normal; c in 1..3 (multinomial), o in 1..4 (proportional odds), n a count, g
    continuous, each depending on x1 and x2; each target missing in about a fifth of rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    eta = x @ np.array([0.8, -0.6])
    c = 1.0 + (
        np.cumsum(special.softmax(np.column_stack([0 * eta, eta, -eta]), 1), 1)
        < rng.random(rows)[:, None]
    ).sum(1)
    o = 1.0 + np.digitize(eta + rng.logistic(size=rows), [-0.8, 0.2, 1.2])
    n = rng.poisson(np.exp(0.3 + 0.5 * eta)).astype(np.float64)
    g = 2.0 + x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=rows)
    values = np.column_stack([x, c, o, n, g])
    if missing:
        for column in (C, ORD, N, G):
            values[rng.random(rows) < 0.2, column - 1] = np.nan
    return values


def network(seed: int) -> tuple[Any, dict[str, Any]]:
    central = table("central", COLUMNS, values_of(seed, 200))
    sites = {
        "north": table("north", COLUMNS, values_of(seed + 1, 300)),
        "south": table("south", COLUMNS, values_of(seed + 2, 250)),
    }
    return central, sites


# ---------------------------------------------------------------- independent reference fits


def reference(kind: str, x: np.ndarray, y: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """The penalised maximum likelihood on design ``x`` (predictors, then ones), in the
    engine's layout: categorical level by level (x..., intercept); ordinal slopes then
    thresholds; Poisson and Gaussian one per design column."""
    n = x.shape[0]
    slopes_x = x[:, :-1]
    deviations = n * slopes_x.var(axis=0)
    q = slopes_x.shape[1]
    if kind in ("gaussian", "pmm"):
        gram = x.T @ x + np.diag([*(RIDGE * deviations), 0.0])
        # the intercept's column is not centred in x: solve the penalised normal equations with
        # the penalty on the centred slopes, as lambda * C_j does
        centred = np.column_stack([slopes_x - slopes_x.mean(axis=0), np.ones(n)])
        gram = centred.T @ centred + np.diag([*(RIDGE * deviations), 0.0])
        beta_c = np.linalg.solve(gram, centred.T @ y)
        beta = beta_c.copy()
        beta[-1] = beta_c[-1] - slopes_x.mean(axis=0) @ beta_c[:-1]
        return beta
    index = np.searchsorted(np.asarray(levels), y) if levels else y.astype(int)
    k = len(levels)

    def objective(theta: np.ndarray) -> float:
        if kind == "categorical":
            b = theta.reshape(k - 1, q + 1)
            logp = special.log_softmax(np.column_stack([np.zeros(n), x @ b.T]), axis=1)
            loglik = logp[np.arange(n), index].sum()
            slopes = b[:, :q]
        elif kind == "ordinal":
            beta, zeta = theta[:q], theta[q:]
            if np.any(np.diff(zeta) <= 0):
                return float("inf")
            cut = np.concatenate([[-np.inf], zeta, [np.inf]])
            eta = slopes_x @ beta
            upper, lower = cut[index + 1] - eta, cut[index] - eta
            with np.errstate(divide="ignore"):
                loglik = np.log(special.expit(upper) - special.expit(lower)).sum()
            slopes = beta[None, :]
        else:
            loglik = stats.poisson.logpmf(y, np.exp(x @ theta)).sum()
            slopes = theta[None, :q]
        return float(-loglik + RIDGE * (slopes**2 * deviations).sum() / 2.0)

    def gradient(theta: np.ndarray) -> np.ndarray:
        unit = np.eye(theta.size) * 1e-6
        return np.array([(objective(theta + e) - objective(theta - e)) / 2e-6 for e in unit])

    if kind == "categorical":
        start = np.zeros((k - 1) * (q + 1))
    elif kind == "ordinal":
        shares = np.arange(1, k) / k
        start = np.concatenate([np.zeros(q), np.log(shares / (1 - shares))])
    else:
        start = np.zeros(q + 1)
    found = optimize.minimize(objective, start, jac=gradient, method="BFGS", options={"gtol": 1e-9})
    result: np.ndarray = found.x
    return result


def design(
    values: np.ndarray, target: int, *, dummies: Mapping[int, Sequence[float]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every other column, then ones; a column in ``dummies`` (a categorical or ordinal target
    of the job, with its levels) as a 0/1 column per level but the first (mice's treatment
    coding of a factor)."""
    columns = []
    for c in range(1, values.shape[1] + 1):
        if c == target:
            continue
        levels = (dummies or {}).get(c, ())
        columns += [values[:, c - 1] == v for v in levels[1:]] if levels else [values[:, c - 1]]
    return np.column_stack([*columns, np.ones(values.shape[0])]), values[:, target - 1]


def assert_fit(
    fit: Mapping[str, Any],
    values: np.ndarray,
    target: int,
    *,
    dummies: Mapping[int, Sequence[float]] | None = None,
) -> None:
    x, y = design(values, target, dummies=dummies)
    assert fit["n"] == y.size
    expected = reference(fit["type"], x, y, LEVELS.get(target, ()))
    ours = np.array(list(fit["coefficients"].values()))
    np.testing.assert_allclose(ours, expected, atol=ATOL, rtol=1e-6)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize(("name", "kind"), TARGETS)
def test_simi_fit_equals_the_pooled_fit_for_any_split(name: str, kind: str) -> None:
    """SIMI's fit equals the reference on the concatenated complete rows, and moving rows
    between participants changes nothing."""
    target = COLUMNS.index(name) + 1
    everything = np.vstack([values_of(3, 220), values_of(4, 330), values_of(5, 250)])
    for column in (C, ORD, N, G):  # SIMI: one incomplete column, the target
        if column != target:
            everything[:, column - 1] = np.nan_to_num(everything[:, column - 1], nan=2.0)
    for cut in ((200, 500), (50, 700)):
        parts = np.split(everything, cut)
        central = table("central", COLUMNS, parts[0])
        sites = {f"s{k}": table(f"s{k}", COLUMNS, part) for k, part in enumerate(parts[1:])}

        result = run("SIMI", central, sites, [(name, kind)], imputations=1, ridge=RIDGE)

        (fit,) = result.report["fits"]
        complete = everything[~np.isnan(everything).any(axis=1)]
        assert_fit(fit, complete, target)


def test_simice_every_cycle_equals_the_pooled_fit_of_current_data() -> None:
    """In every cycle each fit equals the reference on the concatenation of every
    participant's current data, on the rows where its target was observed; and the sites
    impute their own cells between fits: levels stay levels, counts counts, and pmm takes
    values observed at that site."""
    central, sites = network(11)
    harness = Harness("SIMICE", central, sites)
    snapshots: list[Snapshot] = []

    result = harness.run(
        TARGETS,
        on_event=snapshot_on_fit(harness, snapshots),
        imputations=1,
        iteration_before_first_imputation=2,
        ridge=RIDGE,
    )

    fits = result.report["fits"]
    assert [(f["cycle"], f["target"]) for f in fits] == [(c, t) for c in (1, 2) for t, _ in TARGETS]
    originals = [central, *sites.values()]
    for fit, snap in zip(fits, snapshots, strict=True):
        target = COLUMNS.index(fit["target"]) + 1
        current = np.vstack([z[:, :-1] for z in snap.z])
        rows = np.concatenate([observed[target] for observed in snap.observed])
        assert_fit(fit, current[rows], target, dummies=LEVELS)
    last = snapshots[-1]  # cycle 2's last fit: every participant has imputed c, o, n at least once
    for data, z in zip(originals, last.z, strict=True):
        kept = data.values[~np.isnan(data.values[:, :2]).any(axis=1)]
        for column in (C, ORD):
            assert set(np.unique(z[:, column - 1])) <= set(LEVELS[column])
        counts = z[:, N - 1]
        assert (counts >= 0).all() and (counts == np.round(counts)).all()
        own = kept[~np.isnan(kept[:, G - 1]), G - 1]
        assert np.isin(z[:, G - 1], own).all(), "pmm: only values observed at this site"


@pytest.mark.parametrize("secure", [False, True])
def test_simice_gaussian_fit_takes_a_categorical_target_as_treatment_dummies(secure: bool) -> None:
    """A categorical target predicts the other targets as mice's factor does: one 0/1 column
    per level but the first, in the job's level order. In every cycle the Gaussian fit equals
    the penalised least squares on the pooled current rows with c so expanded (to 1e-9), its
    coefficients named ``c=2``, ``c=3``; masked sums give the same fits as clear ones."""
    central, sites = network(31)
    for data in (central, *sites.values()):  # o and n complete: numeric predictors
        data.values[:, [ORD - 1, N - 1]] = np.nan_to_num(data.values[:, [ORD - 1, N - 1]], nan=2.0)
    targets = [("c", "categorical"), ("g", "gaussian")]
    harness = Harness("SIMICE", central, sites)
    snapshots: list[Snapshot] = []

    result = harness.run(
        targets,
        on_event=snapshot_on_fit(harness, snapshots),
        imputations=1,
        iteration_before_first_imputation=2,
        ridge=RIDGE,
        secure_aggregation=secure,
    )

    fits = result.report["fits"]
    assert [(f["cycle"], f["target"]) for f in fits] == [(1, "c"), (1, "g"), (2, "c"), (2, "g")]
    for fit, snap in zip(fits, snapshots, strict=True):
        if fit["target"] != "g":
            continue
        assert list(fit["coefficients"]) == ["x1", "x2", "c=2", "c=3", "o", "n", "(intercept)"]
        current = np.vstack([z[:, :-1] for z in snap.z])
        rows = np.concatenate([observed[G] for observed in snap.observed])
        x, y = design(current[rows], G, dummies={C: LEVELS[C]})
        assert x.shape[1] == 7 and fit["n"] == y.size
        expected = reference("gaussian", x, y, ())
        ours = np.array(list(fit["coefficients"].values()))
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE", "IMI", "IMICE"])
def test_imputations_are_values_the_column_may_hold(algorithm: str) -> None:
    central, sites = network(21)
    if algorithm in ("SIMI", "IMI"):
        complete = central.values.copy()
        for column in (ORD, N, G):
            complete[:, column - 1] = np.nan_to_num(complete[:, column - 1], nan=1.0)
        central = table("central", COLUMNS, complete)
        targets = [("c", "categorical")]
    else:
        targets = TARGETS

    cycles: dict[str, Any] = {"iteration_before_first_imputation": 3} if "CE" in algorithm else {}
    result = run(algorithm, central, sites, targets, imputations=3, **cycles)

    observed = central.values
    for name, kind in targets:
        column = COLUMNS.index(name)
        missing = result.missing[:, column]
        assert missing.any()
        own = observed[~np.isnan(observed[:, column]), column]
        for m in (1, 2, 3):
            imputed = result.dataset(m)[missing, column]
            if kind in ("categorical", "ordinal"):
                assert set(np.unique(imputed)) <= set(LEVELS[column + 1])
            elif kind == "poisson":
                assert (imputed >= 0).all() and (imputed == np.round(imputed)).all()
            else:
                assert np.isin(imputed, own).all()
    assert {t["name"]: t["type"] for t in result.report["targets"]} == dict(targets)
    named = {t["name"]: t.get("levels") for t in result.report["targets"]}
    assert named["c"] == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- invariance


def simice(central: Any, sites: dict[str, Any]) -> Any:
    return run(
        "SIMICE",
        central,
        sites,
        TARGETS,
        imputations=2,
        iteration_before_first_imputation=2,
        iteration_between_imputations=1,
        seed=5,
    )


@functools.cache
def simice_of_network(seed: int) -> Any:
    """The unmoved network's SIMICE job, run once and shared by the tests that compare a moved
    copy against it (they only read it)."""
    return simice(*network(seed))


def moved(tables: tuple[Any, dict[str, Any]], column: int, scale: float, shift: float) -> Any:
    central, sites = tables

    def change(t: Any) -> Any:
        values = t.values.copy()
        values[:, column - 1] = values[:, column - 1] * scale + shift
        return table(t.label, COLUMNS, values)

    return change(central), {name: change(t) for name, t in sites.items()}


@pytest.mark.parametrize(("scale", "shift"), [(1.0, 1000.0), (1000.0, 0.0), (1e-3, 0.0)])
def test_a_predictor_s_unit_or_offset_changes_no_imputation(scale: float, shift: float) -> None:
    tables = network(31)
    before = simice_of_network(31)
    after = simice(*moved(tables, X2, scale, shift))
    for m in (1, 2):
        for column in (C, ORD, N, G):
            np.testing.assert_array_equal(
                after.dataset(m)[:, column - 1], before.dataset(m)[:, column - 1]
            )


@pytest.mark.parametrize(("scale", "shift"), [(1.0, 1000.0), (1000.0, 0.0), (1e-3, 0.0)])
def test_a_pmm_target_s_imputations_move_with_it_exactly(scale: float, shift: float) -> None:
    tables = network(32)
    before = simice_of_network(32)
    after = simice(*moved(tables, G, scale, shift))
    for m in (1, 2):
        np.testing.assert_allclose(
            after.dataset(m)[:, G - 1], before.dataset(m)[:, G - 1] * scale + shift, rtol=1e-12
        )
        for column in (C, ORD, N):
            np.testing.assert_array_equal(
                after.dataset(m)[:, column - 1], before.dataset(m)[:, column - 1]
            )


# ---------------------------------------------------------------- checks that name the column


def test_a_level_outside_the_job_s_list_at_a_site_is_refused_naming_column_and_count() -> None:
    central, sites = network(41)
    values = sites["north"].values.copy()
    values[:3, C - 1] = 7.0
    sites["north"] = table("north", COLUMNS, values)

    with pytest.raises(FipError) as raised:
        run("SIMICE", central, sites, TARGETS, imputations=1)

    message = str(raised.value)
    assert "north" in message and "column 'c'" in message and "3 cell(s)" in message
    assert "7" not in message.split("column 'c'")[1]  # the value stays at the site


def test_a_column_of_two_levels_is_refused_for_categorical() -> None:
    values = values_of(42, 50)
    values[:, C - 1] = np.where(values[:, C - 1] > 1, 2.0, 1.0)
    with pytest.raises(
        InputError,
        match="column 'c' has 2 level\\(s\\); categorical needs at least 3 \\(use logistic\\)",
    ):
        make_targets(COLUMNS, [("c", "categorical")], label="central.csv", values=values)


def test_negative_counts_are_refused_naming_the_column() -> None:
    central, sites = network(43)
    values = central.values.copy()
    values[0, N - 1] = -2.0
    with pytest.raises(FipError) as raised:
        run("SIMICE", table("central", COLUMNS, values), sites, TARGETS, imputations=1)
    assert "column 'n'" in str(raised.value) and "poisson" in str(raised.value)


def test_the_job_s_levels_may_hold_a_level_central_never_observes() -> None:
    """A level only sites hold is given in the job; central's imputations may take it."""
    central, sites = network(44)
    values = central.values.copy()
    values[values[:, C - 1] == 3.0, C - 1] = np.nan
    central = table("central", COLUMNS, values)

    with pytest.raises(FipError, match="column 'c' has 2 level"):  # central's own levels
        run("SIMICE", central, sites, TARGETS, imputations=1)
    levels = {"c": (1.0, 2.0, 3.0)}
    result = run(
        "SIMICE",
        central,
        sites,
        TARGETS,
        imputations=2,
        iteration_before_first_imputation=3,
        levels=levels,
    )
    drawn = np.concatenate([result.dataset(m)[result.missing[:, C - 1], C - 1] for m in (1, 2)])
    assert 3.0 in drawn


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_central_with_fewer_donors_than_asked_refuses_naming_the_target(algorithm: str) -> None:
    """pmm imputes from the imputing participant's own rows: central observing 3 values of g
    cannot draw among 5 donors, and says so before any fit."""
    central, sites = network(45)
    values = central.values.copy()
    values[:, :2] = np.nan_to_num(values[:, :2])
    for column in (C, ORD, N):
        values[:, column - 1] = np.nan_to_num(values[:, column - 1], nan=1.0)
    observed = np.flatnonzero(~np.isnan(values[:, G - 1]))
    values[observed[3:], G - 1] = np.nan
    central = table("central", COLUMNS, values)

    with pytest.raises(FipError) as raised:
        run(algorithm, central, sites, [("g", "pmm")], imputations=1)

    message = str(raised.value)
    assert "target 'g'" in message and "pmm" in message and "observes 3" in message


@pytest.mark.parametrize("algorithm", ["AVGMMI", "CSLMI", "AVGMMICE", "CSLMICE"])
def test_the_one_shot_families_impute_counts_and_matched_values(algorithm: str) -> None:
    """AVGMMI(CE) and CSLMI(CE) offer poisson and pmm (one coefficient per design column)."""
    central, sites = network(46)

    def complete(t: Any, columns: Sequence[int]) -> Any:
        values = t.values.copy()
        for column in columns:
            values[:, column - 1] = np.nan_to_num(values[:, column - 1], nan=1.0)
        return table(t.label, COLUMNS, values)

    chained = algorithm.endswith("CE")
    targets = [("n", "poisson"), ("g", "pmm")] if chained else [("n", "poisson")]
    fixed = (C, ORD) if chained else (C, ORD, G)
    central = complete(central, fixed)
    sites = {name: complete(t, fixed) for name, t in sites.items()}

    result = run(algorithm, central, sites, targets, imputations=2)

    observed_g = central.values[~np.isnan(central.values[:, G - 1]), G - 1]
    for m in (1, 2):
        data = result.dataset(m)
        counts = data[result.missing[:, N - 1], N - 1]
        assert counts.size and (counts >= 0).all() and (counts == np.round(counts)).all()
        if chained:
            assert np.isin(data[result.missing[:, G - 1], G - 1], observed_g).all()


@pytest.mark.parametrize("name", ["categorical", "ordinal"])
def test_imputed_levels_follow_the_model_probabilities(name: str) -> None:
    """At fixed parameters, the imputed levels of many identical rows have the model's level
    probabilities, written here from the model's definition."""
    from algorithms.methods import METHODS

    method = METHODS[name]
    rows = 200_000
    z = np.tile([0.7, -1.2, np.nan, 1.0], (rows, 1))  # x1, x2, the target, the ones
    levels = (2.0, 5.0, 9.0)
    if name == "categorical":
        theta = np.array([0.5, 0.3, -0.2, -1.0, 0.4, 0.1])  # level 5 then 9: x1, x2, intercept
        eta = np.array([0.0, *(theta.reshape(2, 3) @ [0.7, -1.2, 1.0])])
        expected = special.softmax(eta)
    else:
        theta = np.array([0.8, 0.5, -0.3, 0.9])  # slopes x1, x2; thresholds
        cumulative = special.expit(theta[2:] - theta[:2] @ [0.7, -1.2])
        expected = np.diff(np.concatenate([[0.0], cumulative, [1.0]]))
    imputed = method.impute(
        (z, None), (z, None), 2, np.random.default_rng(3), target="t", levels=levels, alpha=theta
    )
    shares = np.array([np.mean(imputed == level) for level in levels])
    assert set(np.unique(imputed)) <= set(levels)
    np.testing.assert_allclose(shares, expected, atol=4 * np.sqrt(0.25 / rows))


def test_ordinal_draws_with_crossing_thresholds_are_redrawn() -> None:
    """A draw whose thresholds do not increase lies outside the model: it is redrawn."""
    from dataclasses import replace

    from algorithms import _newton
    from algorithms._stats import augment, draw_parameters
    from algorithms.methods import METHODS

    values = values_of(47, 400, missing=False)[:, [0, 1, ORD - 1]]
    fit = _newton.fit_own(
        _newton.ORDINAL,
        augment(values),
        None,
        2,
        ridge=1e-5,
        max_iter=100,
        names=["x1", "x2", "(intercept)"],
        target="o",
        levels=LEVELS[ORD],
    )
    loose = replace(fit, chol=fit.chol / 3.0)  # draws with 9 times the variance: some cross
    raw = [draw_parameters(loose, np.random.default_rng(k))["alpha"] for k in range(200)]
    assert any(np.any(np.diff(theta[2:]) <= 0) for theta in raw), "some raw draws cross"
    rng = np.random.default_rng(8)
    for _ in range(200):
        drawn = METHODS["ordinal"].draw(loose, rng, target="o")["alpha"]
        assert np.all(np.diff(drawn[2:]) > 0)
