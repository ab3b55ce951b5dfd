"""What a target method is: one object with every part the engine, the sites and the portals
ask of it. See ``algorithms.methods`` for the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from algorithms._stats import Fit, linear_predictor
from algorithms.methods import _levels

Ask = Callable[..., Awaitable[Mapping[str, Mapping[str, Any]]]]
"""``await ask(operation, **args)``: the operation's replies of every participant, by name."""

SiteStatistics = Callable[..., dict[str, Any]]
"""``statistics(z, rows, column, **args)``: a site's aggregates for one fit (see ``_stats``)."""

Rows = tuple[np.ndarray, np.ndarray | None]
"""Rows of a participant as ``_stats`` lays them out (``Z``, ones last) and a mask (None: all)."""


def chosen(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and the mask of its chosen rows (every row when the mask is None)."""
    z, mask = rows
    return z, np.ones(z.shape[0], dtype=bool) if mask is None else mask


@dataclass(frozen=True)
class FitOptions:
    """What every fit of a target takes besides its rows (:meth:`Method.fit_pooled`,
    :meth:`Method.fit_own`): the job's ridge and Newton's step limit, the names of the design's
    columns (intercept last), the target's name (for messages) and its levels."""

    ridge: float
    max_iter: int
    names: Sequence[str]
    target: str
    levels: Sequence[float] = ()

    @classmethod
    def of(
        cls,
        params: Mapping[str, Any],
        *,
        names: Sequence[str],
        target: str,
        levels: Sequence[float],
    ) -> FitOptions:
        """A target's options from the job's parameters (``ridge``, ``max_iter``)."""
        return cls(float(params["ridge"]), int(params["max_iter"]), names, target, levels)

    def keywords(self) -> dict[str, Any]:
        """As the keyword arguments of ``_newton``'s fits."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Observed:
    """What a check of a column against a method reads of it: counts and kinds of its observed
    cells (a header scan has them without holding the column), never the cells themselves."""

    count: int
    """Observed cells."""
    missing: int
    whole: bool = True
    """Every observed value is a whole number."""
    negative: bool = False
    """Some observed value is below 0."""
    binary: bool = True
    """Every observed value is 0 or 1."""
    levels: tuple[float, ...] | None = ()
    """The distinct observed values when they are few whole numbers (at most
    ``_levels.MAX_LEVELS``); None when there are more, or any is not whole."""

    @classmethod
    def of(cls, cells: np.ndarray) -> Observed:
        """The counts of one column's cells (NaN: missing)."""
        seen = cells[~np.isnan(cells)]
        if not seen.size:
            return cls(count=0, missing=int(cells.size))
        distinct = np.unique(seen)
        whole = bool((np.round(distinct) == distinct).all())
        few = whole and distinct.size <= _levels.MAX_LEVELS
        return cls(
            count=int(seen.size),
            missing=int(cells.size - seen.size),
            whole=whole,
            negative=bool(distinct[0] < 0),
            binary=bool(np.isin(distinct, (0.0, 1.0)).all()),
            levels=tuple(float(v) for v in distinct) if few else None,
        )


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
    """The site operations it asks for and the declared shape of their replies (params.json):
    ``p`` the design's width, ``t`` the length of the fit's parameters, ``l`` the levels."""
    levels: ClassVar[bool] = False
    """Its column takes one of the job's levels (``methods._levels``)."""
    min_levels: ClassVar[int] = 0
    mice: ClassVar[str]
    """R mice's name for the same model, as ``imp$method`` shows it in the ``mids`` that
    ``fip_mids.R`` builds (``methods.csv`` of the outputs)."""
    r_class: ClassVar[str] = "numeric"
    """How R holds its column in that ``mids``: "numeric", or "factor" or "ordered" on
    :meth:`factor_levels` (so that mice's plots and models treat it as mice's would)."""

    def factor_levels(self, levels: Sequence[float]) -> tuple[float, ...]:
        """The values its column takes, in order, when R holds it as a factor: the job's."""
        return tuple(levels)

    def invalid(self, cells: np.ndarray, levels: Sequence[float] = ()) -> np.ndarray:
        """Mask of the observed cells (NaN: missing) its column may not hold: with levels, any
        that is not one of the job's ``levels``."""
        if self.levels:
            return _levels.outside(cells, levels)
        return np.zeros(cells.shape, dtype=bool)

    def check(self, observed: Observed, *, column: str, params: Mapping[str, Any]) -> str | None:
        """Why the column (as ``observed`` counts it) cannot be a target of this method, or
        None; ``params`` are the job's. The values' kind, then the levels; a method with more
        to say (donors) adds to it."""
        if not observed.count:
            return None
        if self.levels:
            if observed.levels is None:
                kind = "more than " + str(_levels.MAX_LEVELS) if observed.whole else "non-integer"
                return (
                    f"column '{column}' holds {kind} distinct values; {self.name} takes integer "
                    f"codes of {self.min_levels} to {_levels.MAX_LEVELS} levels (use pmm or "
                    "gaussian for a measurement)"
                )
            return self.level_problem(len(observed.levels), column=column)
        if not self.takes(observed):
            return (
                f"column '{column}' holds values that are not {self.expects}, which {self.name} "
                "needs; choose another method (pmm or gaussian for a measurement)"
            )
        return None

    def takes(self, observed: Observed) -> bool:
        """Its column may hold values of the kinds ``observed`` counts (``invalid`` is the same
        rule cell by cell)."""
        return True

    def level_problem(self, count: int, *, column: str) -> str | None:
        """Why a column with ``count`` levels cannot take this method, or None."""
        if self.levels and count < self.min_levels:
            return (
                f"column '{column}' has {count} level(s); {self.name} needs at least "
                f"{self.min_levels} (use {'logistic' if count == 2 else 'another method'})"
            )
        return None

    def parameters(self, p: int, levels: int) -> int:
        """Length of the fit's parameters for a design of width p and a target of K levels."""
        return p

    def parameter_names(self, names: Sequence[str], levels: Sequence[float]) -> list[str]:
        """A name for each of the fit's parameters (the design's columns, intercept last)."""
        return list(names)

    @abstractmethod
    def site_statistics(self) -> Mapping[str, SiteStatistics]:
        """The functions that answer its site operations, by operation name."""

    @abstractmethod
    async def fit_pooled(self, ask: Ask, options: FitOptions, *, start: np.ndarray | None) -> Fit:
        """The exact fit over every participant's rows, from their aggregates."""

    @abstractmethod
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
        """A fit on one participant's rows alone (AVGMMI, CSLMI), same penalty."""

    @abstractmethod
    def score(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        beta: np.ndarray,
        levels: Sequence[float] = (),
    ) -> tuple[int, np.ndarray]:
        """n and the gradient of the log-likelihood at ``beta`` over the rows (CSLMI)."""

    @abstractmethod
    def draw(self, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
        """One posterior draw of the parameters, as the imputation takes them."""

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
        """Imputed values (in the column's own values) for the ``missing`` rows of a
        participant under drawn parameters; ``donors`` are its rows observing the target."""
        z, mask = chosen(missing)
        eta = linear_predictor(z, mask, column, drawn["alpha"])
        return self.impute_eta(eta, rng, **drawn)

    def impute_eta(self, eta: np.ndarray, rng: np.random.Generator, **drawn: Any) -> np.ndarray:
        """Imputed values for rows with linear predictor ``eta`` (one linear predictor). A method
        that keeps the default :meth:`impute` defines it; one that overrides :meth:`impute`
        (several linear predictors, or donors) never reaches it."""
        raise TypeError(f"method '{self.name}' imputes through its own impute(), not impute_eta()")

    @abstractmethod
    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A synthetic column around ``eta`` (smoke tests and the registry-wide test)."""
