"""Are the sites alike? The test of equal coefficients across sites and the check of central's
covariate means (``federation.site_checks``), in the reports of the methods that see what they
need, in the comparison, and their warnings.

The references are written independently: for two sites the joint statistic is the Wald
statistic of their difference, (theta_1 - theta_2)'(V_1 + V_2)^-1 (theta_1 - theta_2), and a
coefficient's Cochran's Q is the textbook sum of inverse-variance weighted squared deviations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2

from federation import site_checks
from federation.compare import comparison_report, format_table
from federation.data import Table
from tests.helpers import run, table

NAMES = ["x1", "x2", "(intercept)"]
COLUMNS = ("x1", "x2", "y")


def _covariance(rng: np.random.Generator, scale: float) -> np.ndarray:
    a = rng.normal(size=(3, 3))
    return scale * (a @ a.T + 3 * np.eye(3))


def test_two_sites_give_the_wald_statistic_of_their_difference() -> None:
    rng = np.random.default_rng(1)
    t1, t2 = rng.normal(size=3), rng.normal(size=3)
    v1, v2 = _covariance(rng, 0.1), _covariance(rng, 0.3)

    result = site_checks.equal_coefficients("y", NAMES, {"a": (t1, v1), "b": (t2, v2)})

    d = t1 - t2
    wald = float(d @ np.linalg.solve(v1 + v2, d))
    assert result["statistic"] == pytest.approx(wald, rel=1e-10)
    assert result["df"] == 3
    assert result["p_value"] == pytest.approx(chi2.sf(wald, 3), rel=1e-10)


def test_each_coefficient_has_its_cochran_q() -> None:
    rng = np.random.default_rng(2)
    fits = {s: (rng.normal(size=3), _covariance(rng, 0.2)) for s in ("a", "b", "c")}

    result = site_checks.equal_coefficients("y", NAMES, fits)

    for j, entry in enumerate(result["coefficients"]):
        w = np.array([1 / v[j, j] for _, v in fits.values()])
        t = np.array([theta[j] for theta, _ in fits.values()])
        q = float(np.sum(w * (t - np.sum(w * t) / np.sum(w)) ** 2))
        assert entry["name"] == NAMES[j]
        assert entry["q"] == pytest.approx(q, rel=1e-10) and entry["df"] == 2
        assert entry["p_value"] == pytest.approx(chi2.sf(q, 2), rel=1e-10)
        assert entry["estimates"] == {s: pytest.approx(theta[j]) for s, (theta, _) in fits.items()}


def test_a_coefficient_a_site_left_out_is_compared_among_the_others() -> None:
    """A site whose own fit left x2 out (zero variance) is compared on x1 and the intercept."""
    rng = np.random.default_rng(3)
    fits = {s: (rng.normal(size=3), _covariance(rng, 0.2)) for s in ("a", "b", "c")}
    theta, cov = fits["c"]
    cov = cov.copy()
    cov[1, :] = cov[:, 1] = 0.0
    fits["c"] = (theta, cov)

    result = site_checks.equal_coefficients("y", NAMES, fits)

    assert result["df"] == 3 + 3 + 2 - 3
    assert list(result["coefficients"][1]["estimates"]) == ["a", "b"]
    assert result["coefficients"][1]["df"] == 1


def test_fewer_than_two_sites_have_nothing_to_compare() -> None:
    result = site_checks.equal_coefficients("y", NAMES, {"a": (np.zeros(3), np.eye(3))})
    assert result["p_value"] is None and not result["rejects"] and result["warning"] is None


def test_the_warning_names_the_effect_that_differs() -> None:
    v = np.diag([0.001, 0.001, 0.001])
    fits = {"central": (np.array([1.0, 0.5, 0.0]), v), "north": (np.array([0.4, 0.5, 0.0]), v)}

    result = site_checks.equal_coefficients("y", NAMES, fits)

    assert result["rejects"]
    assert result["warning"] == (
        "the effect of x1 on y seems to differ between sites (p < 0.001); consider "
        "site_effect=intercept, or analyse sites separately"
    )
    shifted = {"central": (np.array([0.5, 0.5, 0.0]), v), "north": (np.array([0.5, 0.5, 0.2]), v)}
    assert site_checks.equal_coefficients("y", NAMES, shifted)["warning"].startswith(
        "the level of y (its intercept, given the predictors) seems to differ between sites"
    )


def test_central_covariate_means_beyond_a_quarter_sd_warn() -> None:
    names = ["x1", "x2", "(intercept)"]
    # pooled: n = 100, x1 mean 0 SD 1, x2 mean 0 SD 2; central: 20 rows, x1 mean 0.5, x2 0.2
    result = site_checks.covariate_means(
        "y",
        names,
        central_n=20,
        central_sums=np.array([10.0, 4.0, 20.0]),
        n=100,
        sums=np.array([0.0, 0.0, 100.0]),
        squares=np.array([100.0, 400.0, 100.0]),
        algorithm="CSLMI",
    )

    assert [p["standardised_difference"] for p in result["predictors"]] == pytest.approx([0.5, 0.1])
    assert result["shifted"] == ["x1"]
    assert result["warning"].startswith(
        "target 'y': central's mean of x1 (+0.50 SD) differs from the pooled mean by more "
        "than 0.25 pooled SD; CSLMI corrects central's own fit only to first order"
    )


# ---------------------------------------------------------------- in the jobs


def _sites_data(
    seed: int, *, effects: Mapping[str, float], shift: Mapping[str, float] | None = None
) -> dict[str, Table]:
    """y = effect * x1 + 0.5 x2 + noise at each site; central misses y in a fifth of its rows;
    ``shift`` moves a site's x1."""
    rng = np.random.default_rng(seed)
    tables = {}
    for name, effect in effects.items():
        rows = 300
        x1 = rng.normal(size=rows) + (shift or {}).get(name, 0.0)
        x2 = rng.normal(size=rows)
        y = effect * x1 + 0.5 * x2 + rng.normal(size=rows)
        if name == "central":
            y[rng.random(rows) < 0.2] = np.nan
        tables[name] = table(name, COLUMNS, np.column_stack([x1, x2, y]))
    return tables


HETEROGENEOUS = {"central": 1.0, "north": 0.4, "south": 0.4}


@pytest.mark.parametrize("algorithm", ["AVGMMI", "SIMI"])
def test_a_report_tests_equal_coefficients_and_warns(algorithm: str) -> None:
    """AVGMMI from the sites' own fits, SIMI from the sums of its Gaussian fit: both reject
    when x1's effect is 1.0 at central and 0.4 elsewhere, and warn in plain words."""
    tables = _sites_data(5, effects=HETEROGENEOUS)
    central = tables.pop("central")

    result = run(algorithm, central, tables, [("y", "gaussian")])

    test = result.report["site_checks"]["equal_coefficients"]["y"]
    assert test["sites"] == ["central", "north", "south"]
    assert test["rejects"] and test["p_value"] < 1e-6
    (warning,) = [w for w in result.report["warnings"] if "differ between sites" in w]
    assert warning.startswith("the effect of x1 on y seems to differ between sites (p ")


def test_no_warning_when_the_sites_are_alike() -> None:
    tables = _sites_data(6, effects={"central": 0.7, "north": 0.7, "south": 0.7})
    central = tables.pop("central")

    result = run("AVGMMI", central, tables, [("y", "gaussian")])

    test = result.report["site_checks"]["equal_coefficients"]["y"]
    assert test["p_value"] > 0.05 and not test["rejects"]
    assert not [w for w in result.report["warnings"] if "differ between sites" in w]


def test_imi_and_secure_aggregation_record_no_test() -> None:
    """IMI sees one participant, secure aggregation hides each site's sums: no test."""
    tables = _sites_data(7, effects=HETEROGENEOUS)
    central = tables.pop("central")
    imi = run("IMI", central, {}, [("y", "gaussian")])
    secure = run("SIMI", central, tables, [("y", "gaussian")], secure_aggregation=True)
    assert "site_checks" not in imi.report and "site_checks" not in secure.report


def _comparison(tables: dict[str, Table], methods: list[str], target: str = "y") -> dict[str, Any]:
    central = tables.pop("central")
    entries = [
        {
            "algorithm": name,
            "status": "completed",
            "report": run(name, central, tables, [(target, "gaussian")]).report,
        }
        for name in methods
    ]
    return comparison_report(entries, reference=methods[0])


def test_the_comparison_carries_the_test_and_cslmis_covariate_warning() -> None:
    """Central's x1 sits 1 SD above the other sites': CSLMI's row warns; the test of equal
    coefficients comes from the reference SIMI's sums."""
    tables = _sites_data(8, effects=HETEROGENEOUS, shift={"central": 1.0})

    comparison = _comparison(tables, ["SIMI", "CSLMI", "IMI"])

    (target,) = comparison["targets"]
    assert target["equal_coefficients"]["from"] == "SIMI"
    assert target["equal_coefficients"]["rejects"]
    shift = target["methods"]["CSLMI"]["covariate_means"]
    assert shift["shifted"] == ["x1"]
    assert shift["predictors"][0]["standardised_difference"] == pytest.approx(0.8, abs=0.2)
    assert "covariate_means" not in target["methods"]["SIMI"]
    text = format_table(comparison)
    assert "equal coefficients across sites (from SIMI's per-site fits): Q = " in text
    assert "warning: the effect of x1 on y seems to differ between sites (p " in text
    assert "warning (CSLMI): target 'y': central's mean of x1 (+0." in text


def _logistic_tables(seed: int, effects: Mapping[str, float]) -> dict[str, Table]:
    rng = np.random.default_rng(seed)
    tables = {}
    for name, effect in effects.items():
        x = rng.normal(size=(400, 2))
        y = (rng.random(400) < 1 / (1 + np.exp(-(effect * x[:, 0] + 0.5 * x[:, 1])))).astype(float)
        if name == "central":
            y[:60] = np.nan
        tables[name] = table(name, COLUMNS, np.column_stack([x, y]))
    return tables


def _own_logistic(values: np.ndarray) -> np.ndarray:
    """A site's own (unpenalised) logistic fit by plain Newton."""
    rows = values[~np.isnan(values).any(axis=1)]
    x = np.column_stack([rows[:, :2], np.ones(len(rows))])
    y = rows[:, 2]
    beta = np.zeros(3)
    for _ in range(50):
        mu = 1 / (1 + np.exp(-x @ beta))
        beta = beta + np.linalg.solve((x * (mu * (1 - mu))[:, None]).T @ x, x.T @ (y - mu))
    return beta


def test_a_pooled_newton_fit_tests_from_one_step_estimates() -> None:
    """SIMI's logistic fit: where the sites are alike, each site's one-step estimate from the
    pooled fit (its H_k, g_k) is near its own fit and the test does not reject; when x1's
    effect is 1.5 at central and 0 at the sites it rejects (the one-step estimates then lie
    between the pooled fit and the sites' own, so the test understates a large difference but
    still finds it). With secure aggregation central sees no site's H_k, and a comparison says
    what would test it."""
    alike = _logistic_tables(12, {"central": 0.8, "north": 0.8, "south": 0.8})
    own = {name: _own_logistic(t.values) for name, t in alike.items()}
    central = alike.pop("central")
    report = run("SIMI", central, alike, [("y", "logistic")]).report
    test = report["site_checks"]["equal_coefficients"]["y"]
    assert test["sites"] == ["central", "north", "south"]
    for j, entry in enumerate(test["coefficients"]):
        for site, estimate in entry["estimates"].items():
            assert estimate == pytest.approx(own[site][j], abs=0.03)
    assert not test["rejects"]

    tables = _logistic_tables(11, {"central": 1.5, "north": 0.0, "south": 0.0})
    central = tables.pop("central")
    report = run("SIMI", central, tables, [("y", "logistic")]).report
    test = report["site_checks"]["equal_coefficients"]["y"]
    assert test["rejects"]
    assert test["warning"].startswith("the effect of x1 on y seems to differ between sites (p ")

    secure = run("SIMI", central, tables, [("y", "logistic")], secure_aggregation=True).report
    imi = run("IMI", central, tables, [("y", "logistic")]).report
    entries = [
        {"algorithm": name, "status": "completed", "report": r}
        for name, r in (("SIMI", secure), ("IMI", imi))
    ]
    (target,) = comparison_report(entries, reference="SIMI")["targets"]
    assert target["equal_coefficients"]["from"] is None
    assert "add AVGMMI or AVGMMICE" in target["equal_coefficients"]["note"]


def test_with_site_intercepts_only_the_slopes_are_compared() -> None:
    """Sites whose levels differ but whose slopes agree: SIMI without a site term warns about
    the level and suggests site_effect=intercept; with it, the intercepts are not compared."""
    rng = np.random.default_rng(10)
    tables = {}
    for name, shift in (("central", 0.0), ("north", 1.5), ("south", 0.5)):
        x = rng.normal(size=(300, 2))
        y = x @ [1.0, 0.5] + shift + rng.normal(size=300)
        if name == "central":
            y[:60] = np.nan
        tables[name] = table(name, COLUMNS, np.column_stack([x, y]))
    central = tables.pop("central")

    plain = run("SIMI", central, tables, [("y", "gaussian")]).report
    own = run("SIMI", central, tables, [("y", "gaussian")], site_effect="intercept").report

    test = plain["site_checks"]["equal_coefficients"]["y"]
    assert test["warning"].startswith("the level of y (its intercept, given the predictors)")
    assert test["warning"].endswith("consider site_effect=intercept, or analyse sites separately")
    test = own["site_checks"]["equal_coefficients"]["y"]
    assert [c["name"] for c in test["coefficients"]] == ["x1", "x2"]
    assert test["df"] == 2 * 2 and "slopes compared" in test["note"]
    assert test["p_value"] > 0.05 and test["warning"] is None


# ---------------------------------------------------------------- with parallel chains


def _chained_tables(seed: int) -> tuple[Table, dict[str, Table]]:
    """The heterogeneous design with central missing x2 (a target) in a fifth of its rows and
    y observed everywhere, so that the last fit of y sees central's final data of each chain."""
    tables = _sites_data(seed, effects=HETEROGENEOUS)
    values = tables["central"].values.copy()
    rng = np.random.default_rng(seed)
    values[:, 2] = values[:, 0] + 0.5 * values[:, 1] + rng.normal(size=len(values))
    values[rng.random(len(values)) < 0.2, 1] = np.nan
    return table("central", COLUMNS, values), {k: v for k, v in tables.items() if k != "central"}


def _ols(values: np.ndarray) -> np.ndarray:
    x = np.column_stack([values[:, :2], np.ones(len(values))])
    beta: np.ndarray = np.linalg.lstsq(x, values[:, 2], rcond=None)[0]
    return beta


@pytest.mark.parametrize("algorithm", ["SIMICE", "AVGMMICE"])
def test_parallel_chains_test_from_chain_1s_last_cycle(algorithm: str) -> None:
    """Parallel chains (one request carries every chain's fit): the test of equal coefficients
    uses chain 1's replies of the last cycle. y, fitted last and observed everywhere, is fitted
    on central's final data of each chain, so central's estimates in the test are its own fit
    on dataset 1 (chain 1's) and not on dataset 2's."""
    central, sites = _chained_tables(21)
    targets = [("x2", "gaussian"), ("y", "gaussian")]

    result = run(
        algorithm, central, sites, targets, imputations=2, iteration_before_first_imputation=3
    )

    assert result.report["chains"]["kind"] == "parallel"
    test = result.report["site_checks"]["equal_coefficients"]["y"]
    assert test["sites"] == ["central", "north", "south"] and test["rejects"]
    central_estimates = [c["estimates"]["central"] for c in test["coefficients"]]
    np.testing.assert_allclose(central_estimates, _ols(result.dataset(1)), rtol=1e-4)
    assert not np.allclose(central_estimates, _ols(result.dataset(2)), rtol=1e-4)


def test_parallel_chains_newton_and_surrogate_checks() -> None:
    """SIMICE's logistic fits through the chains' lockstep still give chain 1's one-step test;
    CSLMICE's check of central's covariate means comes from chain 1's sums."""
    tables = _logistic_tables(11, {"central": 1.5, "north": 0.0, "south": 0.0})
    central = tables.pop("central")
    report = run("SIMICE", central, tables, [("y", "logistic")], imputations=2).report
    assert report["chains"] == {"kind": "parallel", "chains": 2, "cycles": 13}
    test = report["site_checks"]["equal_coefficients"]["y"]
    assert test["sites"] == ["central", "north", "south"] and test["rejects"]

    tables = _sites_data(8, effects=HETEROGENEOUS, shift={"central": 1.0})
    central = tables.pop("central")
    report = run("CSLMICE", central, tables, [("y", "gaussian")], imputations=2).report
    shift = report["site_checks"]["covariate_means"]["y"]
    assert shift["shifted"] == ["x1"]
    assert any("central's mean of x1" in w for w in report["warnings"])
