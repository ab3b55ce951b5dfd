"""categorical: a nominal target of K >= 3 levels (mice's polyreg), multinomial logit with the
first level as reference, fitted by distributed Newton; imputed as one of its levels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from algorithms import _glm, _newton
from algorithms._stats import linear_predictor
from algorithms.methods import _levels
from algorithms.methods._method import Rows
from algorithms.methods._newton_method import NewtonMethod, newton_replies


def draw_levels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One level index per row of (m, K) ``probabilities``: one uniform per row, inverted
    through the cumulative probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    uniform = np.asarray(rng.random(probabilities.shape[0]))
    drawn: np.ndarray = (cumulative[:, :-1] < uniform[:, None]).sum(axis=1)
    return drawn


class Categorical(NewtonMethod):
    name = "categorical"
    label = "nominal"
    mice = "polyreg"
    r_class = "factor"
    when = "a column of 3 or more unordered categories coded as integers (a region, a blood group)"
    expects = "one of the job's levels"
    family = _newton.CATEGORICAL
    levels = True
    min_levels = 3
    replies = newton_replies("categorical", dims="t", levels=True, extra={"saturated": "count"})

    def invalid(self, cells: np.ndarray, levels: Sequence[float] = ()) -> np.ndarray:
        return _levels.outside(cells, levels)

    def impute(
        self,
        missing: Rows,
        donors: Rows,
        column: int,
        rng: np.random.Generator,
        *,
        target: str,
        levels: Sequence[float] = (),
        **drawn: Any,
    ) -> np.ndarray:
        z, rows = missing
        mask = np.ones(z.shape[0], dtype=bool) if rows is None else rows
        theta = np.asarray(drawn["alpha"])
        p = z.shape[1] - 1
        eta = linear_predictor(z, mask, column, theta.reshape(len(levels) - 1, p).T)
        if eta.ndim == 1:  # no row to impute
            return np.zeros(0)
        index = draw_levels(_glm.softmax_with_reference(eta), rng)
        values: np.ndarray = np.asarray(levels, dtype=np.float64)[index]
        return values

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Levels 1, 2, 3: level 2 more likely as eta grows, level 3 less."""
        linear = np.column_stack([eta, -eta])
        index = draw_levels(_glm.softmax_with_reference(linear), rng)
        values: np.ndarray = index.astype(np.float64) + 1.0
        return values


CATEGORICAL = Categorical()
