"""Separation: a binary target that a predictor separates exactly (ALGORITHMS.md, "Newton
fits"). Unaugmented, with ridge 0, its coefficients run off towards infinity; the old code
reported convergence at beta in the thousands and about a third of its imputations contradicted
the separation. The fit is now redone with White, Daniel and Royston's pseudo-rows, as mice's
logreg does; the report says so; its imputations contradict the separation no more often than
mice's logreg does on the pooled rows (``test_contradictions_match_mice``, slow: R)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from algorithms import _newton
from algorithms._stats import augment
from federation.data import Table
from federation.runtime import JobResult
from tests.helpers import run, table
from tests.r_reference import run_r

COLUMNS = ("x1", "x2", "b")
IMPUTATIONS = 20


def separated(seed: int, rows: int, missing: float) -> np.ndarray:
    """b = 1 exactly when x1 > 0; x2 is noise; b missing in ``missing`` of the rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    values = np.column_stack([x, (x[:, 0] > 0).astype(np.float64)])
    values[rng.random(rows) < missing, 2] = np.nan
    return values


def network() -> tuple[Table, dict[str, Table]]:
    central = table("central", COLUMNS, separated(1, 200, 0.3))
    sites = {
        "north": table("north", COLUMNS, separated(2, 300, 0.1)),
        "south": table("south", COLUMNS, separated(3, 300, 0.1)),
    }
    return central, sites


def contradictions(result: JobResult) -> float:
    """The share of central's imputed b that contradict b = (x1 > 0), over all imputations."""
    missing = result.missing[:, 2]
    rule = (result.table.values[missing, 0] > 0).astype(np.float64)
    drawn = np.concatenate([result.dataset(m)[missing, 2] for m in range(1, IMPUTATIONS + 1)])
    return float(np.mean(drawn != np.tile(rule, IMPUTATIONS)))


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
@pytest.mark.parametrize("ridge", [0.0, 1e-5])
def test_a_separated_target_is_augmented_and_says_so(algorithm: str, ridge: float) -> None:
    """With ridge 0 (and the default ridge) the fit is augmented: finite coefficients, the
    report entry and a warning say so, and few imputations contradict the separation (the old
    code's third is far off; mice's logreg gives 3-4% here, see the slow test)."""
    central, sites = network()
    params: dict[str, Any] = {"ridge": ridge, "imputations": IMPUTATIONS}
    if algorithm == "SIMICE":
        params.update(iteration_before_first_imputation=1, iteration_between_imputations=1)

    result = run(algorithm, central, sites, [("b", "logistic")], seed=4, **params)

    fits = result.report["fits"]
    assert all(f["augmented"] is True for f in fits)
    assert all(abs(v) < 100 for f in fits for v in f["coefficients"].values())
    warned = [w for w in result.report["warnings"] if "augmented pseudo-rows" in w]
    assert len(warned) == 1 and "'b'" in warned[0]
    assert contradictions(result) < 0.08


def test_a_target_that_is_not_separated_is_not_augmented() -> None:
    rng = np.random.default_rng(7)
    values = separated(7, 400, 0.2)
    observed = ~np.isnan(values[:, 2])
    flip = observed & (rng.random(400) < 0.25)
    values[flip, 2] = 1.0 - values[flip, 2]

    result = run("SIMI", table("central", COLUMNS, values), {}, [("b", "logistic")], ridge=0.0)

    (fit,) = result.report["fits"]
    assert "augmented" not in fit
    assert not any("augmented" in w for w in result.report["warnings"])


MICE_SCRIPT = """
suppressMessages(library(mice))
pooled <- read.csv("pooled.csv")
pooled$b <- factor(pooled$b, levels = c(0, 1))
central <- pooled$central == 1
data <- pooled[, c("x1", "x2", "b")]
imp <- mice(data, method = c("", "", "logreg"), m = 50, maxit = 1, seed = 11, printFlag = FALSE)
miss <- which(is.na(data$b) & central)
rule <- as.integer(data$x1[miss] > 0)
rates <- sapply(1:50, function(m) mean(as.integer(as.character(complete(imp, m)$b[miss])) != rule))
cat(sprintf('{"rate": %.6f}', mean(rates)))
"""


@pytest.mark.slow
def test_contradictions_match_mice(tmp_path: Path) -> None:
    """fip's share of imputations contradicting the separation is at most mice's logreg on the
    pooled rows (central's missing cells, 50 imputations), plus two Monte Carlo standard errors
    of the difference."""
    central, sites = network()
    frames = [
        np.column_stack([t.values, np.full(t.rows, float(k == 0))])
        for k, t in enumerate([central, *sites.values()])
    ]
    pooled = np.vstack(frames)
    lines = ["x1,x2,b,central"] + [
        ",".join("NA" if np.isnan(v) else repr(float(v)) for v in row) for row in pooled
    ]
    (tmp_path / "pooled.csv").write_text("\n".join(lines) + "\n")
    mice = json.loads(run_r(MICE_SCRIPT, cwd=tmp_path))["rate"]

    ours = contradictions(
        run("SIMI", central, sites, [("b", "logistic")], seed=4, ridge=0.0, imputations=IMPUTATIONS)
    )

    cells = int(np.isnan(central.values[:, 2]).sum())
    error = 2.0 * np.sqrt(mice * (1 - mice) / (cells * 50) + ours * (1 - ours) / (cells * 20))
    print(f"contradictions: fip {ours:.4f}, mice logreg {mice:.4f} (+- {error:.4f})")
    assert ours <= mice + error, (ours, mice)


def test_a_warm_start_at_a_separated_optimum_still_fits() -> None:
    """SIMICE starts each fit from the last one: a start where the unaugmented Hessian
    vanishes starts again from 0 and is augmented, rather than failing as singular."""
    values = separated(8, 300, 0.0)
    z = augment(values)
    start = np.array([1e5, 0.0, 0.0])

    fit = _newton.fit_own(
        _newton.LOGISTIC,
        z,
        None,
        2,
        ridge=0.0,
        max_iter=100,
        names=["x1", "x2", "(intercept)"],
        target="b",
        start=start,
    )

    assert fit.augmented and fit.converged
    assert np.all(np.abs(fit.beta) < 100)


def test_a_fit_never_claims_convergence_it_did_not_reach() -> None:
    """max_iter = 1 on data that needs several Newton steps: the job warns, and the report's
    iteration count is the limit."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 2))
    b = (rng.random(400) < 1 / (1 + np.exp(-(0.5 + 2 * x[:, 0])))).astype(np.float64)
    values = np.column_stack([x, b])
    values[:40, 2] = np.nan

    result = run("SIMI", table("c", COLUMNS, values), {}, [("b", "logistic")], max_iter=1)

    assert result.report["fits"][0]["iterations"] == 1
    assert any("did not converge" in w for w in result.report["warnings"])
