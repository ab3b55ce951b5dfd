"""What a target method is: one object with every part the engine, the sites and the portals
ask of it. See ``algorithms.methods`` for the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from algorithms._stats import Fit

Ask = Callable[..., Awaitable[Mapping[str, Mapping[str, Any]]]]
"""``await ask(operation, **args)``: the operation's replies of every participant, by name."""

SiteStatistics = Callable[..., dict[str, Any]]
"""``statistics(z, rows, column, **args)``: a site's aggregates for one fit (see ``_stats``)."""


class Method(ABC):
    """A target method: how a target's column is checked, fitted, drawn from and imputed."""

    name: ClassVar[str]
    """As jobs, the API, ``--target NAME:METHOD`` and reports spell it."""
    label: ClassVar[str]
    """A person's name for the kind of column, e.g. "continuous"."""
    when: ClassVar[str]
    """One line: when to choose it."""
    expects: ClassVar[str]
    """The values its column may hold, as a message says it, e.g. "0 or 1"."""
    fitting: ClassVar[str]
    """How central fits it: "one round trip" (sums) or "Newton" (one round trip a step)."""
    residual_variance: ClassVar[bool]
    """Its fit has a residual sum of squares and its draw a sigma (the normal linear model)."""
    replies: ClassVar[Mapping[str, Mapping[str, str]]]
    """The site operations it asks for and the declared shape of their replies (params.json)."""

    def invalid(self, cells: np.ndarray) -> np.ndarray:
        """Mask of the observed cells (NaN: missing) its column may not hold."""
        return np.zeros(cells.shape, dtype=bool)

    @abstractmethod
    def site_statistics(self) -> Mapping[str, SiteStatistics]:
        """The functions that answer its site operations, by operation name."""

    @abstractmethod
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
        """The exact fit over every participant's rows, from their aggregates."""

    @abstractmethod
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
        """A fit on one participant's rows alone (AVGMMI, CSLMI), same penalty."""

    @abstractmethod
    def score(
        self, z: np.ndarray, rows: np.ndarray | None, column: int, beta: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """n and the gradient of the log-likelihood at ``beta`` over the rows (CSLMI)."""

    @abstractmethod
    def draw(self, fit: Fit, rng: np.random.Generator) -> dict[str, Any]:
        """One posterior draw of the parameters, as the imputation takes them."""

    @abstractmethod
    def impute(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        """Imputed values for rows with linear predictor ``eta`` under drawn parameters."""

    @abstractmethod
    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A synthetic column around ``eta`` (smoke tests and the registry-wide test)."""
