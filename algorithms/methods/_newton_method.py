"""The part every Newton method shares: its site operations, its pooled and own fits by the one
Newton of ``algorithms._newton``, its score and its draw. A Newton method is a
:class:`NewtonMethod` with its family, its replies and its imputation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from algorithms import _newton
from algorithms._stats import Fit, draw_parameters
from algorithms.methods._method import Ask, FitOptions, Method, SiteStatistics


def newton_replies(
    operation: str,
    *,
    dims: str,
    levels: bool,
    extra: Mapping[str, str],
) -> dict:  # type: ignore[type-arg]
    """The declared replies of a Newton method's operations: ``<name>_start`` (the first
    evaluation, with the design's moments and, with levels, the rows per level),
    ``<name>_stats``, ``<name>_search`` (a line search's candidates) and ``<name>_warm`` (a warm
    start's first evaluation: ``_start``'s and the third derivatives, t x u numbers for the t
    parameters and their u = t(t+1)/2 pairs)."""
    stats = {"n": "rows", "h": f"float[{dims},{dims}]", "g": f"float[{dims}]", "q": "float"}
    stats.update(extra)
    start = {**stats, "sums": "float[p]", "squares": "float[p]"}
    if levels:
        start["counts"] = "count[l]"
    candidates = f"{_newton.SEARCH}"
    search = {**stats, "qs": f"float[{candidates}]", "unusable": f"count[{candidates}]"}
    return {
        f"{operation}_start": start,
        f"{operation}_warm": {**start, "third": "float[t,u]"},
        f"{operation}_stats": stats,
        f"{operation}_search": search,
    }


class NewtonMethod(Method):
    """A method fitted by penalised Newton over every participant's H, g and Q."""

    family: _newton.Family
    fitting = "Newton"
    residual_variance = False

    def parameters(self, p: int, levels: int) -> int:
        return self.family.size(p, levels)

    def parameter_names(self, names: Sequence[str], levels: Sequence[float]) -> list[str]:
        return self.family.names(names, levels)

    def site_statistics(self) -> Mapping[str, SiteStatistics]:
        family = self.family

        def start(
            z: np.ndarray,
            rows: np.ndarray | None,
            column: int,
            theta: np.ndarray,
            levels: Sequence[float] = (),
        ) -> dict[str, Any]:
            """A Newton fit's first evaluation: H, g, Q and the design's column sums and
            squares (and the rows at each level)."""
            return family.stats(z, rows, column, theta, levels=levels, moments=True)

        def stats(
            z: np.ndarray,
            rows: np.ndarray | None,
            column: int,
            theta: np.ndarray,
            levels: Sequence[float] = (),
        ) -> dict[str, Any]:
            """n, the information H, the gradient g and the log-likelihood Q at theta."""
            return family.stats(z, rows, column, theta, levels=levels)

        def search(
            z: np.ndarray,
            rows: np.ndarray | None,
            column: int,
            theta: np.ndarray,
            levels: Sequence[float] = (),
        ) -> dict[str, Any]:
            """A line search: H, g and Q at the first candidate (a row of theta), and Q at every
            candidate with whether it is unusable (overflow or not finite)."""
            return _newton.search(family, z, rows, column, np.asarray(theta), levels=levels)

        def warm(
            z: np.ndarray,
            rows: np.ndarray | None,
            column: int,
            theta: np.ndarray,
            levels: Sequence[float] = (),
        ) -> dict[str, Any]:
            """A warm fit's first evaluation: what ``_start`` answers and the third derivatives
            of the log-likelihood there (``_newton.third_derivatives``)."""
            result = start(z, rows, column, theta, levels)
            result["third"] = _newton.third_derivatives(
                family, z, rows, column, theta, levels=levels
            )
            return result

        return {
            f"{family.name}_start": start,
            f"{family.name}_warm": warm,
            f"{family.name}_stats": stats,
            f"{family.name}_search": search,
        }

    async def fit_pooled(self, ask: Ask, options: FitOptions, *, start: np.ndarray | None) -> Fit:
        name = self.family.name
        warm = _newton.third_order(self.family, start, options.names, options.levels)
        opening = f"{name}_warm" if warm else f"{name}_start"

        async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
            if first:
                return await ask(opening, theta=theta)
            return await ask(f"{name}_search" if theta.ndim == 2 else f"{name}_stats", theta=theta)

        return await _newton.fit_pooled(
            self.family, evaluate, start=start, batch=_newton.SEARCH, **options.keywords()
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
        return _newton.fit_own(
            self.family, z, rows, column, start=start, offset=offset, **options.keywords()
        )

    def score(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        beta: np.ndarray,
        levels: Sequence[float] = (),
    ) -> tuple[int, np.ndarray]:
        stats = self.family.stats(z, rows, column, beta, levels=levels)
        return int(stats["n"]), stats["g"]

    def draw(self, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
        return draw_parameters(fit, rng)
