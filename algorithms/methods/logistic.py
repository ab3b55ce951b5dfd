"""logistic: a binary 0/1 target (mice's logreg), fitted by distributed Newton."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from algorithms._newton import fit_logistic, fit_own_logistic
from algorithms._stats import Fit, draw_parameters, logistic_stats
from algorithms.methods._method import Ask, Method, SiteStatistics

_STATS = {"n": "rows", "h": "float[p,p]", "g": "float[p]", "q": "float"}


def _start_statistics(
    z: np.ndarray, rows: np.ndarray | None, column: int, beta: np.ndarray
) -> dict[str, Any]:
    """A Newton fit's first evaluation: H, g, Q and the design's column sums and squares."""
    return logistic_stats(z, rows, column, beta, moments=True)


class Logistic(Method):
    name = "logistic"
    label = "binary"
    when = "a yes/no column coded 0 and 1 (a diagnosis, a smoker)"
    expects = "0 or 1"
    residual_variance = False
    fitting = "Newton"
    replies = {
        "logistic_start": {**_STATS, "sums": "float[p]", "squares": "float[p]"},
        "logistic_stats": _STATS,
    }

    def invalid(self, cells: np.ndarray) -> np.ndarray:
        mask: np.ndarray = ~np.isnan(cells) & (cells != 0) & (cells != 1)
        return mask

    def site_statistics(self) -> Mapping[str, SiteStatistics]:
        return {"logistic_start": _start_statistics, "logistic_stats": logistic_stats}

    async def fit_pooled(
        self,
        ask: Ask,
        *,
        start: np.ndarray | None,
        ridge: float,
        max_iter: int,
        names: Sequence[str],
        target: str,
    ) -> Fit:
        async def evaluate(beta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
            return await ask("logistic_start" if first else "logistic_stats", beta=beta)

        return await fit_logistic(
            evaluate,
            start=np.zeros(len(names)) if start is None else start,
            ridge=ridge,
            max_iter=max_iter,
            names=names,
            target=target,
        )

    def fit_own(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        *,
        ridge: float,
        max_iter: int,
        names: Sequence[str],
        target: str,
        start: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> Fit:
        return fit_own_logistic(
            z,
            rows,
            column,
            ridge=ridge,
            max_iter=max_iter,
            names=names,
            target=target,
            start=start,
            offset=offset,
        )

    def score(
        self, z: np.ndarray, rows: np.ndarray | None, column: int, beta: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """X'(y - p)."""
        stats = logistic_stats(z, rows, column, beta)
        return int(stats["n"]), stats["g"]

    def draw(self, fit: Fit, rng: np.random.Generator) -> dict[str, Any]:
        return draw_parameters(fit, rng)

    def impute(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        values: np.ndarray = (rng.random(eta.size) < expit(eta)).astype(np.float64)
        return values

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.impute(eta, rng)


LOGISTIC = Logistic()
