"""categorical: a nominal target of K >= 3 levels (mice's polyreg), multinomial logit with the
first level as reference, fitted by distributed Newton; imputed as one of its levels."""

from __future__ import annotations

import numpy as np

from algorithms import _glm, _newton
from algorithms._stats import linear_predictor
from algorithms.methods._level_method import LevelMethod, draw_levels
from algorithms.methods._newton_method import newton_replies


class Categorical(LevelMethod):
    name = "categorical"
    label = "nominal"
    mice = "polyreg"
    r_class = "factor"
    when = "a column of 3 or more unordered categories coded as integers (a region, a blood group)"
    family = _newton.CATEGORICAL
    replies = newton_replies("categorical", dims="t", levels=True, extra={"saturated": "count"})

    def probabilities(
        self, z: np.ndarray, mask: np.ndarray, column: int, theta: np.ndarray, count: int
    ) -> np.ndarray:
        """Softmax of one linear predictor per level but the first (the reference)."""
        p = z.shape[1] - 1
        eta = linear_predictor(z, mask, column, theta.reshape(count - 1, p).T)
        return _glm.softmax_with_reference(eta)

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Levels 1, 2, 3: level 2 more likely as eta grows, level 3 less."""
        linear = np.column_stack([eta, -eta])
        index = draw_levels(_glm.softmax_with_reference(linear), rng)
        values: np.ndarray = index.astype(np.float64) + 1.0
        return values


CATEGORICAL = Categorical()
