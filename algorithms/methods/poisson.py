"""poisson: a count target (log link), fitted by distributed Newton; imputed as counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from algorithms import _newton
from algorithms.methods._method import Observed
from algorithms.methods._newton_method import NewtonMethod, newton_replies
from federation.errors import FitError

LOG_MEAN_LIMIT = 40.0
"""A drawn mean above exp(40) is a fit gone unstable, not a count."""


class Poisson(NewtonMethod):
    name = "poisson"
    label = "count"
    mice = "poisson"  # mice has no count method; "poisson" is the countimp package's
    when = "a count of events (visits, lesions); pmm is safer when counts are overdispersed"
    expects = "counts (whole numbers >= 0)"
    family = _newton.POISSON
    replies = newton_replies("poisson", dims="p", levels=False, extra={"overflow": "count"})

    def takes(self, observed: Observed) -> bool:
        return observed.whole and not observed.negative

    def invalid(self, cells: np.ndarray, levels: Sequence[float] = ()) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            mask: np.ndarray = ~np.isnan(cells) & ((cells < 0) | (np.round(cells) != cells))
        return mask

    def impute_eta(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        if eta.size and float(eta.max()) > LOG_MEAN_LIMIT:
            raise FitError("a drawn Poisson mean passes exp(40); the fit is unstable")
        counts: np.ndarray = rng.poisson(np.exp(eta)).astype(np.float64)
        return counts

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts: np.ndarray = rng.poisson(np.exp(0.5 * eta)).astype(np.float64)
        return counts


POISSON = Poisson()
