"""gaussian: the normal linear model (mice's norm), fitted from sums in one round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from algorithms._stats import Fit, draw_parameters, fit_gaussian, gaussian_stats
from algorithms.methods._method import Ask, FitOptions, Method, SiteStatistics
from federation.errors import FitError


class Gaussian(Method):
    name = "gaussian"
    label = "continuous"
    mice = "norm"
    when = "a measurement on a continuous scale (blood pressure, a lab value)"
    expects = "any number"
    residual_variance = True
    fitting = "one round trip"
    replies = {
        "gaussian_stats": {"n": "rows", "xtx": "float[p,p]", "xty": "float[p]", "yty": "float"}
    }

    def site_statistics(self) -> Mapping[str, SiteStatistics]:
        return {"gaussian_stats": gaussian_stats}

    async def fit_pooled(self, ask: Ask, options: FitOptions, *, start: np.ndarray | None) -> Fit:
        replies = await ask("gaussian_stats")
        _check_counts(replies, options.target)
        return fit_gaussian(
            replies, ridge=options.ridge, names=options.names, target=options.target
        )

    def fit_own(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        options: FitOptions,
        *,
        start: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> Fit:
        stats = gaussian_stats(z, rows, column)
        return fit_gaussian(
            {"": stats},
            ridge=options.ridge,
            names=options.names,
            target=options.target,
            offset=offset,
        )

    def score(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        beta: np.ndarray,
        levels: Sequence[float] = (),
    ) -> tuple[int, np.ndarray]:
        """X'(y - X beta): the score up to 1/sigma^2."""
        stats = gaussian_stats(z, rows, column)
        return int(stats["n"]), stats["xty"] - stats["xtx"] @ beta

    def draw(self, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
        return draw_parameters(fit, rng)

    def impute_eta(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        values: np.ndarray = eta + float(drawn["sigma"]) * rng.standard_normal(eta.size)
        return values

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values: np.ndarray = eta + rng.standard_normal(eta.size)
        return values


def _check_counts(replies: Mapping[str, Mapping[str, Any]], target: str) -> None:
    """The intercept's own entry of X'X is the count of rows: a participant whose n disagrees
    with its own sums sent numbers that cannot come from rows."""
    for site, reply in replies.items():
        n, diagonal = int(reply["n"]), float(np.asarray(reply["xtx"])[-1, -1])
        if abs(diagonal - n) > 1e-9 * max(n, 1):
            raise FitError(
                f"target '{target}': {site} sent n = {n} with sums of {diagonal:.0f} rows; "
                "its reply is refused"
            )


GAUSSIAN = Gaussian()
