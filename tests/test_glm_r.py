"""The categorical, ordinal and Poisson fits equal R's on mice's ``boys`` data, pooled.

R fits the pooled rows: ``nnet::multinom`` (region, 5 levels), ``MASS::polr`` (Tanner stages
``gen``, 5 levels, and ``phb``, 6 levels) and ``glm(family = poisson)`` (testicular volume
``tv``), all unpenalised, with their optimisers run to full precision. The federated fit runs
with ridge 0 over the same rows split at random among three participants, each evaluation
summing their statistics. theta must equal R's coefficients to the Newton tolerance, and the
log-likelihood R reports must equal ours at the optimum.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from algorithms import _newton
from algorithms._stats import Fit, augment
from tests.r_reference import run_r

pytestmark = pytest.mark.slow

# Newton stops when no parameter moves by 1e-5, so it is within ~1e-5 of the optimum; R's
# optimisers are run to a relative tolerance of 1e-15 but BFGS (multinom, polr) stops on the
# objective, which is flat to second order: 2e-5 absolute leaves room for both.
ATOL = 5e-5
"""Newton stops when no step moves a coefficient by 1e-5 standard deviations of its predictor
(``_newton.TOLERANCE``): in the data's units that is up to 1e-5 / SD (phb's predictors)."""

R_SCRIPT = r"""
suppressMessages({library(mice); library(MASS); library(nnet)})
out <- function(d, y, x, name) {
  keep <- complete.cases(d[, c(y, x)])
  frame <- d[keep, c(x, y)]
  frame[[y]] <- as.integer(frame[[y]]) - (if (is.factor(frame[[y]])) 1L else 0L)
  write.csv(frame, paste0(name, ".csv"), row.names = FALSE)
  d[keep, ]
}
save <- function(values, name) write.csv(data.frame(value = values), name, row.names = FALSE)

d <- out(boys, "reg", c("age", "hgt", "wgt"), "categorical")
m <- multinom(reg ~ age + hgt + wgt, data = d, trace = FALSE, maxit = 100000,
              reltol = 1e-15, abstol = 1e-300)
save(as.vector(t(coef(m))), "categorical_coef.csv")  # level by level: (Intercept), age, ...
save(as.numeric(logLik(m)), "categorical_loglik.csv")

for (target in c("gen", "phb")) {
  x <- if (target == "gen") c("age", "hgt") else c("age", "wgt")
  d <- out(boys, target, x, target)
  f <- polr(as.formula(paste(target, "~", paste(x, collapse = " + "))), data = d,
            method = "logistic", control = list(reltol = 1e-15, maxit = 100000))
  save(c(coef(f), f$zeta), paste0(target, "_coef.csv"))
  save(as.numeric(logLik(f)), paste0(target, "_loglik.csv"))
}

d <- out(boys, "tv", c("age", "hgt"), "poisson")
g <- glm(tv ~ age + hgt, family = poisson, data = d,
         control = glm.control(epsilon = 1e-15, maxit = 1000))
save(coef(g), "poisson_coef.csv")
save(as.numeric(logLik(g)), "poisson_loglik.csv")
"""


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def _values(path: Path) -> np.ndarray:
    return _read(path)[1][:, 0]


def _federated(values: np.ndarray, family: str, levels: int, seed: int) -> tuple[Fit, float]:
    """The fit over a random 3-way split of ``values`` (predictors, then the target), by the
    one Newton of ``_newton``, and the log-likelihood of the pooled rows at it."""
    column = values.shape[1] - 1
    owner = np.random.default_rng(seed).integers(0, 3, size=values.shape[0])
    sites = {f"site{k}": augment(values[owner == k]) for k in range(3)}
    pooled = augment(values)
    kind = _newton.Family(family)
    level_values = tuple(float(v) for v in range(levels))

    async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
        return {
            name: kind.stats(z, None, column, theta, levels=level_values, moments=first)
            for name, z in sites.items()
        }

    names = [*(f"x{j}" for j in range(column)), "(intercept)"]
    fit = asyncio.run(
        _newton.fit_pooled(
            kind,
            evaluate,
            start=None,
            ridge=0.0,
            max_iter=100,
            names=names,
            target="y",
            levels=level_values,
        )
    )
    q = kind.stats(pooled, None, column, fit.beta, levels=level_values)["q"]
    return fit, float(q)


def test_fits_equal_r_on_boys(tmp_path: Path) -> None:
    run_r(R_SCRIPT, cwd=tmp_path)
    deviations = {}

    _, values = _read(tmp_path / "categorical.csv")
    fit, q = _federated(values, "categorical", 5, seed=1)
    r = _values(tmp_path / "categorical_coef.csv").reshape(4, 4)  # level x (intercept, x...)
    ours = fit.beta.reshape(4, -1)  # level x (x..., intercept)
    ours = np.concatenate([ours[:, -1:], ours[:, :-1]], axis=1)
    deviations["categorical (multinom)"] = float(np.max(np.abs(ours - r)))
    assert fit.converged and not fit.augmented
    assert q == pytest.approx(_values(tmp_path / "categorical_loglik.csv")[0], abs=1e-6)

    for target, levels in (("gen", 5), ("phb", 6)):
        _, values = _read(tmp_path / f"{target}.csv")
        fit, q = _federated(values, "ordinal", levels, seed=2)
        r = _values(tmp_path / f"{target}_coef.csv")
        deviations[f"ordinal {target} (polr)"] = float(np.max(np.abs(fit.beta - r)))
        assert fit.converged and not fit.augmented
        assert q == pytest.approx(_values(tmp_path / f"{target}_loglik.csv")[0], abs=1e-6)

    _, values = _read(tmp_path / "poisson.csv")
    fit, q = _federated(values, "poisson", 0, seed=3)
    r = _values(tmp_path / "poisson_coef.csv")
    ours = np.concatenate([fit.beta[-1:], fit.beta[:-1]])
    deviations["poisson (glm)"] = float(np.max(np.abs(ours - r)))
    assert fit.converged
    assert q == pytest.approx(_values(tmp_path / "poisson_loglik.csv")[0], abs=1e-6)

    print("largest |theta - R|:", deviations)
    assert max(deviations.values()) < ATOL, deviations


AUGMENTED_SCRIPT = r"""
suppressMessages({library(mice); library(MASS); library(nnet)})
save <- function(values, name) write.csv(data.frame(value = values), name, row.names = FALSE)
pseudo <- function(d, y, x, name) {
  d <- d[complete.cases(d[, c(y, x)]), ]
  write.csv(data.frame(d[, x], y = as.integer(d[[y]]) - 1L), paste0(name, ".csv"),
            row.names = FALSE)
  n <- nrow(d)
  a <- mice:::augment(d[[y]], rep(TRUE, n), as.matrix(d[, x]), rep(FALSE, n))
  # augment rebuilds an unordered factor with sorted levels: put the job's order back
  target <- factor(as.character(a$y), levels = levels(d[[y]]), ordered = is.ordered(d[[y]]))
  list(data = data.frame(y = target, a$x), w = a$w)
}
a <- pseudo(boys, "reg", c("age", "hgt", "wgt"), "categorical")
m <- multinom(y ~ ., data = a$data, weights = a$w, trace = FALSE, maxit = 100000,
              reltol = 1e-15, abstol = 1e-300)
save(as.vector(t(coef(m))), "categorical_coef.csv")
a <- pseudo(boys, "gen", c("age", "hgt"), "gen")
f <- polr(y ~ ., data = a$data, weights = a$w, method = "logistic",
          control = list(reltol = 1e-15, maxit = 100000))
save(c(coef(f), f$zeta), "gen_coef.csv")
"""
