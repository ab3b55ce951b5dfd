"""logistic: a binary 0/1 target (mice's logreg), fitted by distributed Newton."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from algorithms import _newton
from algorithms.methods._method import Observed
from algorithms.methods._newton_method import NewtonMethod, newton_replies


class Logistic(NewtonMethod):
    name = "logistic"
    label = "binary"
    mice = "logreg"
    r_class = "factor"
    when = "a yes/no column coded 0 and 1 (a diagnosis, a smoker)"
    expects = "0 or 1"
    family = _newton.LOGISTIC
    replies = newton_replies("logistic", dims="p", levels=False, extra={})

    def takes(self, observed: Observed) -> bool:
        return observed.binary

    def invalid(self, cells: np.ndarray, levels: Sequence[float] = ()) -> np.ndarray:
        mask: np.ndarray = ~np.isnan(cells) & (cells != 0) & (cells != 1)
        return mask

    def factor_levels(self, levels: Sequence[float] = ()) -> tuple[float, ...]:
        return (0.0, 1.0)

    def impute_eta(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        values: np.ndarray = (rng.random(eta.size) < expit(eta)).astype(np.float64)
        return values

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.impute_eta(eta, rng)


LOGISTIC = Logistic()
