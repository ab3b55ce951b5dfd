"""R-hat against an independent computation in R on mice's own chains, and on synthetic chains
that mix or do not; the missing-data pattern against R mice's ``md.pattern``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.diagnostics import RHAT_LIMIT, md_pattern, rhat, rhat_by_iteration, trend_rhat
from federation.errors import InputError
from tests.r_reference import run_r

# ---------------------------------------------------------------- R-hat

R_RHAT = r"""
suppressMessages(library(mice))
imp <- mice(nhanes2, m = 5, maxit = 12, seed = 3, printFlag = FALSE)
# Written from Vehtari et al. (2021), section 4: split, rank-normalise, classic R-hat; the same on
# the draws folded about their median; the larger of the two. sims: iterations x chains.
classic <- function(sims) {
  if (max(sims) - min(sims) < .Machine$double.eps) return(1)
  n <- nrow(sims)
  means <- colMeans(sims)
  within <- mean(apply(sims, 2, var))
  sqrt((n * var(means) / within + n - 1) / n)
}
halves <- function(sims) {
  n <- nrow(sims)
  if (n == 1) return(sims)
  cbind(sims[seq_len(n %/% 2), , drop = FALSE], sims[(n - n %/% 2 + 1):n, , drop = FALSE])
}
scores <- function(sims) {
  matrix(qnorm((rank(sims, ties.method = "average") - 0.5) / length(sims)), nrow(sims))
}
rank_rhat <- function(sims) {
  max(classic(scores(halves(sims))), classic(scores(halves(abs(sims - median(sims))))))
}
rows <- list()
for (v in c("bmi", "hyp", "chl")) {
  for (what in c("mean", "sd")) {
    trace <- if (what == "mean") imp$chainMean[v, , ] else sqrt(imp$chainVar[v, , ])
    for (i in 1:imp$iteration) {
      value <- if (i == 1) NA else rank_rhat(trace[1:i, , drop = FALSE])
      rows[[length(rows) + 1]] <- data.frame(vrb = v, what = what, it = i,
                                             rhat = sprintf("%.17g", value))
    }
    write.csv(data.frame(apply(trace, 2, function(x) sprintf("%.17g", x))),
              paste0("trace_", v, "_", what, ".csv"), row.names = FALSE)
  }
}
write.csv(do.call(rbind, rows), "rhat.csv", row.names = FALSE)
"""


@pytest.mark.slow
def test_rhat_equals_an_independent_r_computation_on_mice_chains(tmp_path: Path) -> None:
    """mice's chain means and SDs of nhanes2 (5 chains, 12 iterations), R-hat of the first i
    iterations for every i, as mice's convergence() reports it (its rstan::Rhat is what the R
    code here writes out from the paper)."""
    run_r(R_RHAT, cwd=tmp_path)
    expected = pd.read_csv(tmp_path / "rhat.csv")
    for (variable, what), rows in expected.groupby(["vrb", "what"], sort=False):
        trace = pd.read_csv(tmp_path / f"trace_{variable}_{what}.csv").to_numpy(dtype=float)
        got = rhat_by_iteration(trace.T)
        want = rows.sort_values("it")["rhat"].to_numpy(dtype=float)
        assert math.isnan(got[0]) and math.isnan(want[0])
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-12, err_msg=f"{variable} {what}")


def test_well_mixed_chains_pass_and_stuck_ones_are_flagged() -> None:
    rng = np.random.default_rng(4)
    mixed = rng.normal(size=(5, 200))
    assert rhat(mixed) < 1.02
    shifted = mixed + np.arange(5)[:, None] * 0.8  # chains stuck at different levels
    assert rhat(shifted) > RHAT_LIMIT
    spread = mixed * np.array([0.3, 0.3, 1.0, 3.0, 3.0])[:, None]  # same centre, other spreads
    assert rhat(spread) > RHAT_LIMIT
    trending = mixed + np.linspace(0, 3, 200)[None, :]  # every chain still drifting
    assert rhat(trending) > RHAT_LIMIT


def test_ar1_chains_settle_with_length() -> None:
    """Autocorrelated chains from dispersed starts: short runs flagged, long ones not."""
    rng = np.random.default_rng(8)
    chains, length = 5, 2000
    draws = np.empty((chains, length))
    draws[:, 0] = np.linspace(-10, 10, chains)
    for t in range(1, length):
        draws[:, t] = 0.9 * draws[:, t - 1] + rng.normal(size=chains) * math.sqrt(1 - 0.81)
    assert rhat(draws[:, :10]) > RHAT_LIMIT
    assert rhat(draws[:, 1000:]) < 1.05


def test_rhat_edge_cases() -> None:
    assert rhat(np.full((3, 6), 2.5)) == 1.0
    assert math.isnan(rhat(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]])))
    assert math.isnan(rhat(np.array([[1.0], [2.0]])))
    with pytest.raises(InputError, match="chains x iterations"):
        rhat(np.zeros(5))


def test_chains_each_constant_at_different_values_never_mixed() -> None:
    """A trace that stays at one value in each half but moves between them (an ordinal
    target's imputed mean can) has no within-chain variance: R-hat is infinite, not an error,
    and the trend check flags it (it failed the whole SIMICE job on boys before)."""
    halves = np.array([[2.0, 2.0, 2.0, 3.0, 3.0, 3.0]])
    assert rhat(halves) == math.inf
    assert trend_rhat(np.array([1.0, 1.5, 1.0, 1.5, 2.0, 2.0, 3.0, 3.0])) == math.inf


# ---------------------------------------------------------------- md.pattern

R_PATTERN = r"""
suppressMessages(library(mice))
for (name in c("nhanes2", "boys")) {
  r <- md.pattern(get(name), plot = FALSE)
  write.csv(r, paste0(name, "_pattern.csv"))
  write.csv(is.na(get(name)), paste0(name, "_missing.csv"), row.names = FALSE)
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nhanes2", "boys"])
def test_md_pattern_equals_mice(tmp_path: Path, name: str) -> None:
    """Same column order, patterns, counts and margins as md.pattern(data, plot = FALSE)."""
    run_r(R_PATTERN, cwd=tmp_path)
    missing = pd.read_csv(tmp_path / f"{name}_missing.csv")
    pattern = md_pattern(tuple(missing.columns), missing.to_numpy(dtype=bool))
    expected = pd.read_csv(tmp_path / f"{name}_pattern.csv")
    columns = list(expected.columns[1:-1])
    assert list(pattern.columns) == columns
    body = expected.iloc[:-1]
    assert list(pattern.counts) == [int(c) for c in body.iloc[:, 0]]
    np.testing.assert_array_equal(pattern.observed, body[columns].to_numpy(dtype=int) == 1)
    assert list(pattern.missing_per_pattern) == [int(v) for v in body.iloc[:, -1]]
    margin = expected.iloc[-1]
    assert list(pattern.missing_per_column) == [int(margin[c]) for c in columns]
    assert pattern.total_missing == int(margin.iloc[-1])


def test_md_pattern_by_hand() -> None:
    """Columns a (1 missing), b (0), c (2): order b, a, c; patterns sorted by their 0/1 text."""
    missing = np.array(
        [
            [False, False, False],
            [True, False, True],
            [False, False, True],
            [False, False, False],
        ]
    )
    pattern = md_pattern(("a", "b", "c"), missing)
    assert pattern.columns == ("b", "a", "c")
    assert pattern.counts == (2, 1, 1)
    assert pattern.observed.tolist() == [
        [True, True, True],
        [True, True, False],
        [True, False, False],
    ]
    assert pattern.missing_per_column == (0, 1, 2)
    assert pattern.to_dict()["patterns"][2] == {
        "count": 1,
        "observed": [True, False, False],
        "missing": 2,
    }
    with pytest.raises(InputError, match="rows x 3 mask"):
        md_pattern(("a", "b", "c"), np.zeros((2, 2), dtype=bool))
