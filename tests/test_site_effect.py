"""The site term (option ``site_effect`` of SIMI and SIMICE, ALGORITHMS.md "Conventions").

With ``site_effect=intercept`` every remote site adds a 0/1 column for itself to the design, so
the pooled fit is the fit of the row-wise concatenation of every site's rows with one dummy per
remote site (central's rows: all 0). The references are plain numpy on that concatenation, with
the same ridge: the site columns are predictors like any other, penalised by lambda times their
sum of squared deviations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from algorithms._stats import Fit
from federation.errors import InputError
from tests.helpers import builtin, run, table
from tests.test_exactness import (
    COLUMNS,
    RIDGE,
    B,
    G,
    assert_gaussian_fit,
    assert_logistic_beta,
    coefficients,
    gaussian_reference,
    logistic_fits,  # noqa: F401 (a fixture)
    logistic_hessian,
    simi_data,
    split,
)

SIZES = [150, 200, 250]


def dummy_design(
    central: np.ndarray, sites: dict[str, np.ndarray], target: int
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) over every complete row: the other columns, one 0/1 column per remote site (in
    the job's order; central's rows 0), then ones."""
    blocks = []
    for k, values in enumerate([central, *sites.values()]):
        dummies = np.zeros((values.shape[0], len(sites)))
        if k:
            dummies[:, k - 1] = 1.0
        blocks.append(np.column_stack([values, dummies]))
    rows = np.vstack(blocks)
    c = central.shape[1]
    rows = rows[~np.isnan(rows[:, :c]).any(axis=1)]
    others = [j for j in range(c) if j != target - 1]
    x = np.column_stack([rows[:, others], rows[:, c:], np.ones(rows.shape[0])])
    return x, rows[:, target - 1]


def _sites(remote: np.ndarray) -> dict[str, np.ndarray]:
    return {name: t.values for name, t in split(remote, SIZES).items()}


def test_simi_gaussian_with_site_intercepts_equals_dummy_fit() -> None:
    central, remote = simi_data(31, G)
    remote[:150, G - 1] += 3.0  # site0's mean is shifted: its own intercept takes it
    sites = _sites(remote)
    x, y = dummy_design(central, sites, G)

    result = run(
        "SIMI",
        table("central", COLUMNS, central),
        split(remote, SIZES),
        [("g", "gaussian")],
        site_effect="intercept",
    )

    (fit,) = result.report["fits"]
    names = [c for c in COLUMNS if c != "g"] + [f"(site {s})" for s in sites] + ["(intercept)"]
    assert list(fit["coefficients"]) == names
    assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))
    assert fit["coefficients"]["(site site0)"] == pytest.approx(3.0, abs=0.4)


def test_simi_logistic_with_site_intercepts_equals_dummy_fit(logistic_fits: list[Fit]) -> None:  # noqa: F811
    central, remote = simi_data(32, B)
    sites = _sites(remote)
    x, y = dummy_design(central, sites, B)

    result = run(
        "SIMI",
        table("central", COLUMNS, central),
        split(remote, SIZES),
        [("b", "logistic")],
        site_effect="intercept",
    )

    (fit,) = result.report["fits"]
    (captured,) = logistic_fits
    beta = coefficients(fit)
    assert beta.size == x.shape[1] == len(COLUMNS) + len(SIZES)
    assert_logistic_beta(beta, x, y, RIDGE)
    np.testing.assert_allclose(captured.matrix, logistic_hessian(x, beta, RIDGE), rtol=1e-9)


def test_simi_secure_aggregation_with_site_intercepts_equals_dummy_fit() -> None:
    """Masked Gram matrices with site columns still sum to the pooled one."""
    central, remote = simi_data(33, G)
    sites = _sites(remote)
    x, y = dummy_design(central, sites, G)

    result = run(
        "SIMI",
        table("central", COLUMNS, central),
        split(remote, SIZES),
        [("g", "gaussian")],
        site_effect="intercept",
        secure_aggregation=True,
    )

    (fit,) = result.report["fits"]
    assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))


def test_simice_fits_carry_site_intercepts_and_central_keeps_its_columns() -> None:
    """Every SIMICE fit has a site term per remote site; the datasets are central's columns
    only; site_effect=none leaves the default fits as they were (no site term)."""
    central, remote = simi_data(34, G)
    remote[np.random.default_rng(0).random(remote.shape[0]) < 0.1, 0] = np.nan
    central[np.random.default_rng(1).random(central.shape[0]) < 0.1, 0] = np.nan
    targets = [("x1", "gaussian"), ("g", "gaussian")]
    params: dict[str, Any] = {"imputations": 2, "iteration_before_first_imputation": 2}

    with_term = run(
        "SIMICE",
        table("central", COLUMNS, central),
        split(remote, SIZES),
        targets,
        site_effect="intercept",
        **params,
    )
    without = run(
        "SIMICE", table("central", COLUMNS, central), split(remote, SIZES), targets, **params
    )

    for fit in with_term.report["fits"]:
        assert [n for n in fit["coefficients"] if n.startswith("(site ")] == [
            "(site site0)",
            "(site site1)",
            "(site site2)",
        ]
    assert not any("(site " in n for f in without.report["fits"] for n in f["coefficients"])
    assert len(with_term.imputed_cells) == 2
    for m in (1, 2):
        dataset = with_term.dataset(m)
        observed = ~np.isnan(central)
        assert np.array_equal(dataset[observed], central[observed])
        assert not np.isnan(dataset).any()


# ---------------------------------------------------------------- option errors


def test_site_effect_with_imi_is_refused_naming_the_field() -> None:
    central, remote = simi_data(35, G)
    with pytest.raises(InputError, match="unknown parameter 'site_effect'"):
        run(
            "IMI",
            table("central", COLUMNS, central),
            {},
            [("g", "gaussian")],
            site_effect="intercept",
        )


def test_bad_site_effect_value_is_refused_naming_the_field() -> None:
    central, remote = simi_data(36, G)
    with pytest.raises(InputError, match=r"parameter 'site_effect': 'slope' is not one of"):
        run(
            "SIMI",
            table("central", COLUMNS, central),
            split(remote, SIZES),
            [("g", "gaussian")],
            site_effect="slope",
        )


def test_central_without_observed_target_is_refused_with_site_intercepts() -> None:
    """Central's own intercept needs central's rows observing the target."""
    central, remote = simi_data(37, G)
    central[np.isnan(central)] = 0.0
    central[:, G - 1] = np.nan
    with pytest.raises(Exception, match="site_effect=intercept imputes central's cells of 'g'"):
        run(
            "SIMI",
            table("central", COLUMNS, central),
            split(remote, SIZES),
            [("g", "gaussian")],
            site_effect="intercept",
        )


def test_site_effect_is_declared_by_the_pooled_families_only() -> None:
    for name in ("SIMI", "SIMICE"):
        prop = builtin(name).schema["properties"]["site_effect"]
        assert prop["enum"] == ["none", "intercept"] and prop["default"] == "none"
    for name in ("IMI", "IMICE", "AVGMMI", "AVGMMICE", "CSLMI", "CSLMICE"):
        assert "site_effect" not in builtin(name).schema["properties"]


# ---------------------------------------------------------------- Monte Carlo (slow)
# Two designs of issue #12, central (200 rows) and two sites (400 rows each), y missing
# completely at random in 30% of central's rows:
# - effect heterogeneity: y = b x1 + 0.5 x2 + e with b = 1.0 at central and 0.4 at the sites;
# - intercept shift: y = x1 + 0.5 x2 + s + e with s = 0 at central, 1.5 at north, 0.5 at south.

DESIGN_COLUMNS = ("x1", "x2", "y")
DESIGN_ROWS = {"central": 200, "north": 400, "south": 400}


def design(
    seed: int, *, effects: dict[str, float], shifts: dict[str, float]
) -> tuple[dict[str, Any], np.ndarray]:
    """The tables (central's first) and central's true y."""
    rng = np.random.default_rng(seed)
    tables = {}
    truth = np.empty(0)
    for name, rows in DESIGN_ROWS.items():
        x1, x2, e = rng.normal(size=(3, rows))
        y = effects[name] * x1 + 0.5 * x2 + shifts[name] + e
        if name == "central":
            truth = y.copy()
            y[rng.random(rows) < 0.3] = np.nan
        tables[name] = table(name, DESIGN_COLUMNS, np.column_stack([x1, x2, y]))
    return tables, truth


def heterogeneous_effect(seed: int) -> tuple[dict[str, Any], np.ndarray]:
    return design(
        seed,
        effects={"central": 1.0, "north": 0.4, "south": 0.4},
        shifts=dict.fromkeys(DESIGN_ROWS, 0.0),
    )


def shifted_intercepts(seed: int) -> tuple[dict[str, Any], np.ndarray]:
    return design(
        seed,
        effects=dict.fromkeys(DESIGN_ROWS, 1.0),
        shifts={"central": 0.0, "north": 1.5, "south": 0.5},
    )


def equal_sites(seed: int) -> tuple[dict[str, Any], np.ndarray]:
    return design(
        seed, effects=dict.fromkeys(DESIGN_ROWS, 0.7), shifts=dict.fromkeys(DESIGN_ROWS, 0.0)
    )


def rejection_rate(algorithm: str, make: Any, replications: int) -> float:
    """How often the test of equal coefficients rejects at 5% over replications."""
    rejected = 0
    for seed in range(replications):
        tables, _ = make(seed)
        central = tables.pop("central")
        report = run(algorithm, central, tables, [("y", "gaussian")], imputations=1).report
        rejected += bool(report["site_checks"]["equal_coefficients"]["y"]["rejects"])
    return rejected / replications


def imputed_mean_bias(algorithm: str, site_effect: str, replications: int) -> float:
    """Mean over replications and M = 5 datasets of (mean of central's imputed y - mean of the
    true values of those cells), in the intercept-shift design."""
    biases = []
    for seed in range(replications):
        tables, truth = shifted_intercepts(1000 + seed)
        central = tables.pop("central")
        missing = np.isnan(central.values[:, 2])
        targets = [("y", "gaussian")]
        result = run(algorithm, central, tables, targets, site_effect=site_effect, seed=seed)
        for m in range(1, 6):
            biases.append(result.dataset(m)[missing, 2].mean() - truth[missing].mean())
    return float(np.mean(biases))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["AVGMMI", "SIMI"])
def test_the_test_rejects_when_an_effect_differs_between_sites(algorithm: str) -> None:
    """Effect of x1 1.0 at central, 0.4 at the sites: rejects in at least 95% of 40
    replications (its power is near 1 here: 1.000 over 200 in bench/site_effect.py); with equal
    sites, at most 12% of 100 (the level is 5%, 0.055 measured over 1000 replications; 12% is
    3.2 binomial SDs above 5%)."""
    assert rejection_rate(algorithm, heterogeneous_effect, 40) >= 0.95
    assert rejection_rate(algorithm, equal_sites, 100) <= 0.12


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_site_intercepts_remove_the_bias_of_centrals_imputed_mean(algorithm: str) -> None:
    """Sites' intercepts 1.5 and 0.5 above central's: without a site term central's imputed
    mean is pulled up by the pooled intercept (about 0.8 = (400 * 1.5 + 400 * 0.5) / 1000);
    with site_effect=intercept the bias is gone: within 0.1 of 0 over 30 replications x 5
    datasets, whose Monte Carlo SD is about 0.03 (bench/site_effect.py, 200 replications:
    +0.85 and +0.007 for SIMI, +0.84 and -0.003 for SIMICE)."""
    assert imputed_mean_bias(algorithm, "none", 30) > 0.5
    assert abs(imputed_mean_bias(algorithm, "intercept", 30)) < 0.1


@pytest.mark.slow
def test_every_target_type_takes_site_terms_and_secure_aggregation_changes_nothing() -> None:
    """SIMICE with a categorical, an ordinal, a Poisson and a pmm target: every fit has its
    site terms (one per non-reference level for categorical), and the masked run's fits equal
    the clear run's to 1e-9, in both parallel chains (every chain's sums masked in one
    request)."""
    rng = np.random.default_rng(0)
    columns = ("x", "c", "o", "n", "p")
    tables = {}
    for name, shift in (("central", 0), ("a", 1), ("b", -1)):
        x = rng.normal(size=200)
        c = rng.integers(1, 4, size=200).astype(float)
        o = np.clip(np.round(x + shift + rng.normal(size=200)), -1, 1) + 2
        n = rng.poisson(np.exp(0.3 * x + 0.2 * shift)).astype(float)
        p = x + shift + rng.normal(size=200)
        values = np.column_stack([x, c, o, n, p])
        for j in range(1, 5):
            values[rng.random(200) < 0.15, j] = np.nan
        tables[name] = table(name, columns, values)
    central = tables.pop("central")
    targets = [("c", "categorical"), ("o", "ordinal"), ("n", "poisson"), ("p", "pmm")]
    options: dict[str, Any] = {
        "levels": {"c": [1, 2, 3], "o": [1, 2, 3]},
        "site_effect": "intercept",
        "imputations": 2,
        "iteration_before_first_imputation": 2,
    }

    clear = run("SIMICE", central, tables, targets, **options).report["fits"]
    masked = run("SIMICE", central, tables, targets, secure_aggregation=True, **options)

    assert {f.get("chain") for f in clear} == {1, 2}
    terms = {f["target"]: [k for k in f["coefficients"] if "(site " in k] for f in clear}
    assert terms == {
        "c": ["(site a)[2]", "(site b)[2]", "(site a)[3]", "(site b)[3]"],
        "o": ["(site a)", "(site b)"],
        "n": ["(site a)", "(site b)"],
        "p": ["(site a)", "(site b)"],
    }
    ordinal = [f for f in clear if f["target"] == "o"][-1]["coefficients"]
    assert ordinal["(site a)"] > 0.5 and ordinal["(site b)"] < -0.5  # their levels' shifts
    for a, b in zip(clear, masked.report["fits"], strict=True):
        np.testing.assert_allclose(
            list(a["coefficients"].values()), list(b["coefficients"].values()), rtol=1e-9, atol=1e-9
        )


def test_site_intercepts_join_a_predictor_list() -> None:
    """A target with its own predictor list (a design other than the data matrix itself)
    keeps the site columns: the fit equals the dummy fit on the listed predictors alone."""
    central, remote = simi_data(35, G)
    remote[:150, G - 1] += 3.0
    sites = _sites(remote)
    listed = ["x1", "x2"]
    blocks = []
    for k, values in enumerate([central, *sites.values()]):
        dummies = np.zeros((values.shape[0], len(sites)))
        if k:
            dummies[:, k - 1] = 1.0
        used = values[:, [COLUMNS.index(c) for c in (*listed, "g")]]
        blocks.append(np.column_stack([used, dummies])[~np.isnan(used).any(axis=1)])
    rows = np.vstack(blocks)
    x = np.column_stack([rows[:, :2], rows[:, 3:], np.ones(rows.shape[0])])
    y = rows[:, 2]

    result = run(
        "SIMI",
        table("central", COLUMNS, central),
        split(remote, SIZES),
        [("g", "gaussian")],
        predictors={"g": listed},
        site_effect="intercept",
    )

    (fit,) = result.report["fits"]
    assert list(fit["coefficients"]) == [
        *listed,
        *(f"(site {s})" for s in sites),
        "(intercept)",
    ]
    assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))
