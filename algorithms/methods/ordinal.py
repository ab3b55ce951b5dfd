"""ordinal: an ordered target of K >= 3 levels (mice's polr), proportional odds as R's
MASS::polr, fitted by distributed Newton; imputed as one of its levels."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from algorithms import _newton
from algorithms._stats import Fit, draw_parameters, linear_predictor
from algorithms.methods._level_method import LevelMethod
from algorithms.methods._newton_method import newton_replies
from federation.errors import FitError

REDRAWS = 1000


def proportional_odds(eta: np.ndarray, zeta: np.ndarray) -> np.ndarray:
    """(m, K) level probabilities: P(y <= k) = sigmoid(zeta_k - eta)."""
    below = expit(zeta[None, :] - eta[:, None])
    ones = np.ones((eta.size, 1))
    cumulative = np.concatenate([np.zeros((eta.size, 1)), below, ones], axis=1)
    result: np.ndarray = np.diff(cumulative, axis=1)
    return result


class Ordinal(LevelMethod):
    name = "ordinal"
    label = "ordered"
    mice = "polr"
    r_class = "ordered"
    when = "3 or more ordered categories coded as integers (a stage, a grade, a Likert score)"
    family = _newton.ORDINAL
    replies = newton_replies("ordinal", dims="t", levels=True, extra={"saturated": "count"})

    def draw(self, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
        """Normal(theta_hat, H^-1); a draw whose thresholds do not increase is redrawn."""
        p = fit.moments.mean.size
        for _ in range(REDRAWS):
            drawn = draw_parameters(fit, rng)
            if self.family.in_model(drawn["alpha"], p):
                return drawn
        raise FitError(
            f"target '{target}': {REDRAWS} draws of the thresholds were not increasing; "
            "a level is too rare to impute it"
        )

    def probabilities(
        self, z: np.ndarray, mask: np.ndarray, column: int, theta: np.ndarray, count: int
    ) -> np.ndarray:
        """Proportional odds: the slopes, then the K - 1 thresholds."""
        slopes = z.shape[1] - 2  # the design's width without the intercept
        coef = np.append(theta[:slopes], 0.0)
        eta = linear_predictor(z, mask, column, coef)
        return proportional_odds(eta, theta[slopes:])

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Levels 1..4 of a latent logistic around ``eta``."""
        latent = eta + rng.logistic(size=eta.size)
        values: np.ndarray = np.digitize(latent, [-0.5, 0.5, 1.5]).astype(np.float64) + 1.0
        return values


ORDINAL = Ordinal()
