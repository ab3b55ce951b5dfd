"""The part the methods of a target with levels share (categorical, ordinal): a Newton fit
whose column takes one of the job's K >= 3 levels, imputed as a level drawn from each row's
level probabilities. Such a method is a :class:`LevelMethod` with its family, its replies and
its :meth:`LevelMethod.probabilities`."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from algorithms.methods._method import Rows, chosen
from algorithms.methods._newton_method import NewtonMethod


def draw_levels(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One level index per row of (m, K) ``probabilities``: one uniform per row, inverted
    through the cumulative probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    uniform = np.asarray(rng.random(probabilities.shape[0]))
    drawn: np.ndarray = (cumulative[:, :-1] < uniform[:, None]).sum(axis=1)
    return drawn


class LevelMethod(NewtonMethod):
    """A Newton method whose column takes one of the job's levels (``Method.invalid`` refuses
    any other cell)."""

    expects = "one of the job's levels"
    levels = True
    min_levels = 3

    @abstractmethod
    def probabilities(
        self, z: np.ndarray, mask: np.ndarray, column: int, theta: np.ndarray, count: int
    ) -> np.ndarray:
        """(m, K) level probabilities of the ``mask`` rows of ``z`` under parameters ``theta``
        (K = ``count`` levels)."""

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
        z, mask = chosen(missing)
        if not mask.any():  # no row to impute
            return np.zeros(0)
        theta = np.asarray(drawn["alpha"])
        index = draw_levels(self.probabilities(z, mask, column, theta, len(levels)), rng)
        values: np.ndarray = np.asarray(levels, dtype=np.float64)[index]
        return values
