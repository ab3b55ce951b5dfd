"""Draws and imputation of the categorical, ordinal and Poisson targets from a pooled fit
(``_glm_fit.GlmFit``), at central or at a site.

Draw: theta~ = theta_hat + U^-T z with U U' = H, U upper triangular (the Cholesky factor of H
taken from the last row up), z standard normal: theta~ ~ Normal(theta_hat, H^-1). The upper
factor makes the draw equivariant: shifting or (positively) rescaling a predictor maps theta by
a triangular matrix whose rows for the intercepts (and thresholds) lie below the slopes', which
maps U to the upper factor of the new H; so the same seed gives the same drawn probabilities
and the same imputations. (A lower factor would not.)
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import expit

from algorithms._glm import softmax_with_reference
from algorithms._glm_fit import GlmFit, in_model, split
from federation.errors import FitError

_REDRAWS = 1000


def draw_parameters(fit: GlmFit, rng: np.random.Generator, *, target: str) -> np.ndarray:
    """theta~ ~ Normal(theta_hat, H^-1); ordinal draws whose thresholds do not increase are
    redrawn (a refusal naming the target if that keeps happening)."""
    for _ in range(_REDRAWS):
        z = rng.standard_normal(fit.theta.size)
        drawn: np.ndarray = fit.theta + solve_triangular(fit.upper.T, z, lower=True)
        if in_model(fit.family, drawn, fit.p):
            return drawn
    raise FitError(
        f"target '{target}': {_REDRAWS} draws of the thresholds were not increasing; "
        "a level is too rare to impute it"
    )


def linear_predictors(fit: GlmFit, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x'beta (poisson, ordinal) or X B, (m, K-1) (categorical), for design rows ``x``."""
    coef, _ = split(theta, family=fit.family, p=fit.p, levels=fit.levels)
    result: np.ndarray = x @ coef
    return result


def probabilities(fit: GlmFit, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(m, K) level probabilities of categorical or ordinal design rows ``x`` at ``theta``."""
    eta = linear_predictors(fit, theta, x)
    if fit.family == "categorical":
        return softmax_with_reference(eta)
    _, zeta = split(theta, family=fit.family, p=fit.p, levels=fit.levels)
    assert zeta is not None
    below = expit(zeta[None, :] - eta[:, None])  # P(y <= k), k = 0..K-2
    cumulative = np.concatenate([np.zeros((eta.size, 1)), below, np.ones((eta.size, 1))], 1)
    result: np.ndarray = np.diff(cumulative, axis=1)
    return result


def impute(
    fit: GlmFit, theta: np.ndarray, x: np.ndarray, rng: np.random.Generator, *, target: str
) -> np.ndarray:
    """One imputed value per design row of ``x``: a level index (categorical, ordinal: one
    uniform per row, inverted through the cumulative probabilities) or a count (poisson)."""
    if fit.family == "poisson":
        eta = linear_predictors(fit, theta, x)
        if eta.size and float(eta.max()) > 40.0:
            raise FitError(
                f"target '{target}': a drawn Poisson mean passes exp(40); the fit is unstable"
            )
        counts: np.ndarray = rng.poisson(np.exp(eta)).astype(np.float64)
        return counts
    prob = probabilities(fit, theta, x)
    cumulative = np.cumsum(prob, axis=1)
    uniform = np.asarray(rng.random(x.shape[0]))
    drawn: np.ndarray = (cumulative[:, :-1] < uniform[:, None]).sum(axis=1).astype(np.float64)
    return drawn
