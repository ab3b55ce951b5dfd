"""The categorical, ordinal and Poisson fits (``algorithms/_glm``'s site statistics, fitted by
the one Newton of ``algorithms/_newton``) do what ALGORITHMS.md revision 2 says, checked without
a network and without R. Their draws and imputations are tested through the engine in
``test_new_methods.py``.

The references are independent of the code under test: derivatives by finite differences of
Q; the penalised optimum by scipy's BFGS on a log-likelihood written here from the model's
definition (scipy's log_softmax, the logistic cdf, the Poisson pmf) with the penalty
lambda * sum_j C_j beta_j^2 / 2, C_j the pooled sum of squared deviations of predictor j.
The fits against R (lambda = 0) are in ``test_glm_r.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy import optimize, special, stats

from algorithms import _glm, _newton
from algorithms._stats import Fit, augment
from federation.errors import FitError, SiteRefused

FAMILIES = {"categorical": 4, "ordinal": 4, "poisson": 0}
NEWTON_ATOL = 1.5e-5


# ---------------------------------------------------------------- data and fits


def simulate(family: str, rows: int, seed: int, *, scale: float = 1.0) -> np.ndarray:
    """Columns x1 ~ N(0, 1), x2 ~ N(50, 10) and the target, drawn from the family's model."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=rows), rng.normal(50.0, 10.0, size=rows)])
    centred = x - [0.0, 50.0]
    if family == "categorical":
        eta = scale * centred @ np.array([[1.0, -0.5, 0.3], [0.05, 0.02, -0.08]])
        eta += [0.3, -0.2, 0.5]
        cumulative = np.cumsum(_glm.softmax_with_reference(eta), axis=1)
        y = (cumulative[:, :-1] < rng.random(rows)[:, None]).sum(axis=1)
    elif family == "ordinal":
        latent = scale * centred @ np.array([0.9, 0.06]) + rng.logistic(size=rows)
        y = np.digitize(latent, [-1.2, 0.0, 1.3])
    else:
        y = rng.poisson(np.exp(0.4 + scale * centred @ np.array([0.5, 0.03])))
    return np.column_stack([x, y.astype(np.float64)])


def fit(
    family: str,
    sites: list[np.ndarray],
    *,
    ridge: float = 1e-5,
    max_iter: int = 100,
    pseudo_rows: bool = True,  # noqa: ARG001 - augmentation is automatic now
) -> Fit:
    """The pooled fit over participants holding ``sites`` (values, target last)."""
    levels = FAMILIES[family]
    column = sites[0].shape[1] - 1
    tables = [augment(values) for values in sites]

    async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
        family_ = _newton.Family(family)
        return {
            f"site{k}": family_.stats(z, None, column, theta, levels=values, moments=first)
            for k, z in enumerate(tables)
        }

    values = tuple(float(v) for v in range(levels))
    return asyncio.run(
        _newton.fit_pooled(
            _newton.Family(family),
            evaluate,
            start=None,
            ridge=ridge,
            max_iter=max_iter,
            names=["x1", "x2", "(intercept)"],
            target="y",
            levels=values,
        )
    )


def design_rows(family: str, values: np.ndarray) -> np.ndarray:
    """The design of ``values``' rows (predictors, then ones unless ordinal)."""
    z = augment(values)
    return z[:, _glm.design(z, values.shape[1] - 1, family)]


def some_theta(family: str, p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = _newton.Family(family).start(p + (family == "ordinal"), FAMILIES[family] or 2)
    return theta + 0.02 * rng.normal(size=theta.size)


# ---------------------------------------------------------------- site statistics


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_and_information_are_the_derivatives_of_q(family: str) -> None:
    values = simulate(family, 500, seed=1)
    z = augment(values)
    cols = _glm.design(z, 2, family)
    levels = FAMILIES[family]
    theta = some_theta(family, cols.size, seed=2)

    def stats(at: np.ndarray) -> dict[str, Any]:
        return _glm.family_stats(family, z, None, 2, at, cols, levels=levels)

    at = stats(theta)
    step = 1e-6
    unit = np.eye(theta.size)
    dq = np.array([(stats(theta + step * e)["q"] - stats(theta - step * e)["q"]) for e in unit])
    dg = np.array([(stats(theta + step * e)["g"] - stats(theta - step * e)["g"]) for e in unit])
    scale = np.abs(at["h"]).max()
    np.testing.assert_allclose(dq / (2 * step), at["g"], atol=1e-6 * scale)
    np.testing.assert_allclose(-dg / (2 * step), at["h"], atol=1e-6 * scale)
    assert np.all(np.linalg.eigvalsh(at["h"]) > 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sums_over_a_split_of_rows_equal_the_pooled_statistics(family: str) -> None:
    values = simulate(family, 900, seed=3)
    z = augment(values)
    cols = _glm.design(z, 2, family)
    levels = FAMILIES[family]
    theta = some_theta(family, cols.size, seed=4)
    owner = np.random.default_rng(5).integers(0, 3, size=values.shape[0])
    parts = [augment(values[owner == k]) for k in range(3)]

    def everything(table: np.ndarray) -> dict[str, Any]:
        stats = _glm.family_stats(family, table, None, 2, theta, cols, levels=levels)
        return stats | _glm.moments(table, None, 2, cols, family=family, levels=levels)

    pooled = everything(z)
    split = [everything(part) for part in parts]
    assert set(pooled) >= {"n", "h", "g", "q", "sums", "squares"}
    for key, value in pooled.items():
        summed = sum(part[key] for part in split)
        np.testing.assert_allclose(summed, value, rtol=1e-10, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_line_searchs_likelihood_alone_is_the_statistics_q_to_the_bit(family: str) -> None:
    """A line search's further candidates are answered with Q alone (``family_loglik``): the
    very number ``family_stats`` gives, over selected rows and past one block of rows, so a
    search accepts the same step as when every candidate's H and g were computed too."""
    values = simulate(family, 2 * _glm.BLOCK_ROWS + 37, seed=9)
    z = augment(values)
    cols = _glm.design(z, 2, family)
    keep = np.asarray(np.random.default_rng(10).random(values.shape[0]) < 0.7)
    levels = FAMILIES[family]
    for seed in range(3):
        theta = some_theta(family, cols.size, seed=seed)
        stats = _glm.family_stats(family, z, keep, 2, theta, cols, levels=levels)
        q, overflow = _glm.family_loglik(family, z, keep, 2, theta, cols, levels=levels)
        assert (q, overflow) == (stats["q"], stats.get("overflow", 0))
    if family == "poisson":  # a candidate whose means overflow is flagged, as by the stats
        huge = np.full(cols.size, 500.0)
        assert _glm.family_loglik(family, z, None, 2, huge, cols)[1] > 0
        assert _glm.family_stats(family, z, None, 2, huge, cols)["overflow"] > 0


def test_selected_rows_are_the_only_rows_counted() -> None:
    values = simulate("categorical", 300, seed=6)
    z = augment(values)
    cols = _glm.design(z, 2, "categorical")
    keep = np.random.default_rng(7).random(300) < 0.6
    theta = some_theta("categorical", cols.size, seed=8)
    chosen = _glm.categorical_stats(z, keep, 2, theta, cols, levels=4)
    subset = _glm.categorical_stats(augment(values[keep]), None, 2, theta, cols, levels=4)
    assert chosen["n"] == keep.sum()
    np.testing.assert_allclose(chosen["h"], subset["h"], rtol=1e-12)
    assert chosen["q"] == pytest.approx(subset["q"], rel=1e-12)


def test_large_linear_predictors_do_not_overflow() -> None:
    """warnings are errors in this suite, so an overflow in exp or log would fail here."""
    values = simulate("categorical", 200, seed=9)
    z = augment(values)
    cols = _glm.design(z, 2, "categorical")
    huge = np.full(cols.size * 3, 40.0)  # eta near 2000 for every level
    stats = _glm.categorical_stats(z, None, 2, huge, cols, levels=4)
    assert np.isfinite(stats["q"]) and np.all(np.isfinite(stats["h"]))

    values = simulate("ordinal", 200, seed=10)
    z = augment(values)
    cols = _glm.design(z, 2, "ordinal")
    theta = np.array([300.0, 30.0, -5.0, 0.0, 5.0])  # x'beta far beyond every threshold
    stats = _glm.ordinal_stats(z, None, 2, theta, cols, levels=4)
    assert np.all(np.isfinite(stats["g"])) and np.all(np.isfinite(stats["h"]))
    assert stats["q"] < -1e4 and np.isfinite(stats["q"])

    values = simulate("poisson", 200, seed=11)
    z = augment(values)
    cols = _glm.design(z, 2, "poisson")
    stats = _glm.poisson_stats(z, None, 2, np.array([0.0, 20.0, 0.0]), cols)
    assert stats["overflow"] > 0 and stats["q"] == 0.0  # flagged, nothing infinite sent


@pytest.mark.parametrize(
    ("family", "bad", "message"),
    [
        ("categorical", 4.0, "not a level of the job \\(0, 1, 2, 3\\)"),
        ("ordinal", 1.5, "not a level of the job \\(0, 1, 2, 3\\)"),
        ("poisson", -1.0, "not a count"),
    ],
)
def test_values_that_are_not_levels_or_counts_are_refused(
    family: str, bad: float, message: str
) -> None:
    values = simulate(family, 50, seed=12)
    values[[3, 7], 2] = bad
    z = augment(values)
    cols = _glm.design(z, 2, family)
    theta = _newton.Family(family).start(3, FAMILIES[family] or 2)
    with pytest.raises(SiteRefused, match=f"column 3: 2 observed value\\(s\\) are {message}"):
        _glm.family_stats(family, z, None, 2, theta, cols, levels=FAMILIES[family])


# ---------------------------------------------------------------- the pooled fit


def _independent_objective(family: str, values: np.ndarray, ridge: float) -> Any:
    """Minus the penalised log-likelihood, from the model's definition (not from _glm)."""
    x = values[:, :2]
    y = values[:, 2].astype(int)
    n = x.shape[0]
    deviations = n * x.var(axis=0)  # C_j = sum (x_ij - xbar_j)^2
    k = FAMILIES[family]

    def objective(theta: np.ndarray) -> float:
        if family == "categorical":
            b = theta.reshape(k - 1, 3)  # per level: x1, x2, intercept
            eta = x @ b[:, :2].T + b[:, 2]
            logp = special.log_softmax(np.column_stack([np.zeros(n), eta]), axis=1)
            loglik = logp[np.arange(n), y].sum()
            slopes = b[:, :2]
        elif family == "ordinal":
            beta, zeta = theta[:2], theta[2:]
            if np.any(np.diff(zeta) <= 0):
                return float("inf")
            cut = np.concatenate([[-np.inf], zeta, [np.inf]])
            eta = x @ beta
            upper, lower = cut[y + 1] - eta, cut[y] - eta
            # F(b) - F(a), as 1 - F(a) - (1 - F(b)) when both are near 1 (no cancellation)
            with np.errstate(invalid="ignore"):
                prob = np.where(
                    lower > 0,
                    special.expit(-lower) - special.expit(-upper),
                    special.expit(upper) - special.expit(lower),
                )
            with np.errstate(divide="ignore"):  # a far step: log 0 = -inf, rejected by BFGS
                loglik = np.log(prob).sum()
            slopes = beta[None, :]
        else:
            eta = x @ theta[:2] + theta[2]
            loglik = stats.poisson.logpmf(y, np.exp(eta)).sum()
            slopes = theta[None, :2]
        return float(-loglik + ridge * (slopes**2 * deviations).sum() / 2.0)

    return objective


@pytest.mark.parametrize("family", FAMILIES)
def test_penalised_fit_equals_an_independent_optimiser(family: str) -> None:
    values = simulate(family, 300, seed=13)
    ridge = 0.02
    objective = _independent_objective(family, values, ridge)

    def gradient(theta: np.ndarray) -> np.ndarray:
        unit = np.eye(theta.size) * 1e-5
        return np.array([(objective(theta + e) - objective(theta - e)) / 2e-5 for e in unit])

    ours = fit(family, [values[:100], values[100:180], values[180:]], ridge=ridge)
    start = _newton.Family(family).start(3, FAMILIES[family] or 2)
    theirs = optimize.minimize(
        objective, start, jac=gradient, method="BFGS", options={"gtol": 1e-8}
    )
    assert ours.converged and not ours.augmented
    # theirs is laid out as ours: categorical level by level (x1, x2, intercept)
    np.testing.assert_allclose(ours.beta, theirs.x, atol=NEWTON_ATOL)
    unpenalised = fit(family, [values], ridge=0.0)
    assert np.max(np.abs(unpenalised.beta - ours.beta)) > 1e-3  # the penalty mattered
    # Intercepts and thresholds are not penalised: their penalty is 0, the slopes' is not.
    slopes = ours.coordinates.full_penalty(ridge) > 0
    assert slopes.sum() == {"categorical": 6, "ordinal": 2, "poisson": 2}[family]


def test_newton_never_claims_convergence_it_did_not_reach() -> None:
    values = simulate("categorical", 400, seed=16, scale=2.0)
    stopped = fit("categorical", [values], max_iter=1)
    assert stopped.iterations == 1 and not stopped.converged
    done = fit("categorical", [values])
    assert done.converged and done.iterations is not None and 1 < done.iterations < 20


def separated(family: str, seed: int) -> np.ndarray:
    """Data where x1 predicts the target perfectly (categorical: level 3 iff x1 > 0.5;
    ordinal: the level is x1's interval)."""
    values = simulate(family, 300, seed=seed)
    if family == "categorical":
        values[:, 2] = np.where(values[:, 0] > 0.5, 3.0, values[:, 2] % 3)
    else:
        values[:, 2] = np.digitize(values[:, 0], [-1.0, 0.0, 1.0])
    return values


@pytest.mark.parametrize("family", ["categorical", "ordinal"])
@pytest.mark.parametrize("ridge", [1e-5, 0.0])
def test_a_separated_fit_is_reported_and_redone_with_pseudo_rows(family: str, ridge: float) -> None:
    values = separated(family, seed=17)
    result = fit(family, [values[:150], values[150:]], ridge=ridge)
    assert result.augmented and result.converged
    assert np.max(np.abs(result.beta)) < 100.0


def test_a_well_posed_fit_reports_no_separation() -> None:
    for family in FAMILIES:
        result = fit(family, [simulate(family, 400, seed=19)])
        assert not result.augmented


@pytest.mark.parametrize("family", ["categorical", "ordinal"])
def test_augmented_fit_equals_an_independent_fit_with_the_pseudo_rows(family: str) -> None:
    """White, Daniel and Royston's pseudo-rows written here from the paper / mice's description:
    per predictor and level two rows at the means, that predictor +-0.5 SD (divisor n - 1),
    each weighing (q + 1) / (2 q K)."""
    values = separated(family, seed=20)
    ridge = 1e-5
    k = FAMILIES[family]
    x = values[:, :2]
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    pseudo = []
    for j in range(2):
        for level in range(k):
            for sign in (0.5, -0.5):
                row = mean.copy()
                row[j] += sign * sd[j]
                pseudo.append([*row, level])
    pseudo_values = np.array(pseudo)
    weight = 3.0 / (4.0 * k)
    real = _independent_objective(family, values, ridge)
    # the penalty belongs to the real rows only: the pseudo-rows' objective has ridge 0
    extra = _independent_objective(family, pseudo_values, 0.0)

    def objective(theta: np.ndarray) -> float:
        return float(real(theta) + weight * extra(theta))

    def gradient(theta: np.ndarray) -> np.ndarray:
        unit = np.eye(theta.size) * 1e-5
        return np.array([(objective(theta + e) - objective(theta - e)) / 2e-5 for e in unit])

    ours = fit(family, [values[:120], values[120:]], ridge=ridge)
    assert ours.augmented
    start = _newton.Family(family).start(3, k)
    theirs = optimize.minimize(
        objective, start, jac=gradient, method="BFGS", options={"gtol": 1e-8}
    )
    np.testing.assert_allclose(ours.beta, theirs.x, atol=NEWTON_ATOL)


def test_a_level_never_observed_is_refused_by_name() -> None:
    values = simulate("categorical", 200, seed=20)
    values[values[:, 2] == 2, 2] = 1
    with pytest.raises(FitError, match="target 'y': level\\(s\\) 2 never observed"):
        fit("categorical", [values])


def test_fewer_than_three_levels_is_refused() -> None:
    with pytest.raises(FitError, match="needs at least 3 levels, got 2"):
        next(
            _newton.newton(
                _newton.ORDINAL,
                start=None,
                ridge=0.0,
                max_iter=10,
                levels=(0.0, 1.0),
                names=["x1", "x2", "(intercept)"],
                target="y",
            )
        )


# ---------------------------------------------------------------- draws and imputation
