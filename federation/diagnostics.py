"""Diagnostics of an imputation: convergence of chains (R-hat) and the missing-data pattern.

R-hat is the rank-normalised split R-hat of Vehtari, Gelman, Simpson, Carpenter and Bürkner
(2021), "Rank-normalization, folding, and localization: an improved R-hat", as ``rstan::Rhat``
computes it and R mice's ``convergence()`` reports it (it calls ``rstan::Rhat`` on the chain
means, iterations x imputations): each chain is split in half (an odd middle draw left out), the
draws are replaced by the normal scores of their ranks over all chains, (r - 1/2) / S, and the
classic R-hat of Gelman and Rubin is taken; the same on the draws folded about their median
(|x - median|) catches chains that differ in spread. R-hat is the larger of the two. Values
above 1.1 say the chains have not mixed. (The ``posterior`` package uses Blom's offset
(r - 3/8) / (S + 1/4) instead: its values differ slightly.)

The missing-data pattern is R mice's ``md.pattern``: columns ordered by their number of missing
cells (fewest first, ties in table order), one row per distinct pattern in the order of its
0/1 string (missing = 1), each with its count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from federation.errors import InputError

RHAT_LIMIT = 1.1
"""R-hat above this flags a target whose chains have not mixed (Vehtari et al. 2021 suggest
1.01 for MCMC; mice's users read 1.1, the classic threshold)."""


def rhat(chains: np.ndarray) -> float:
    """Rank-normalised split R-hat of one quantity: ``chains`` is (chains, iterations).

    NaN when a draw is not finite or a split chain would hold fewer than two draws; 1 when every
    draw is the same.
    """
    draws = np.asarray(chains, dtype=np.float64)
    if draws.ndim != 2 or draws.size == 0:
        raise InputError(f"R-hat takes an array of chains x iterations, got shape {draws.shape}")
    if not np.all(np.isfinite(draws)):
        return math.nan
    bulk = _classic_rhat(_normal_scores(_split(draws)))
    folded = np.abs(draws - np.median(draws))
    tail = _classic_rhat(_normal_scores(_split(folded)))
    return max(bulk, tail)


def rhat_by_iteration(chains: np.ndarray) -> np.ndarray:
    """R-hat of the first i iterations, for i = 1..T, as mice's ``convergence()`` reports it per
    iteration. NaN while a split chain holds fewer than two draws (i < 4); there mice 3.15 shows
    numbers, because R drops a one-row matrix to a vector and ``rstan::Rhat`` then reads the
    chains as one chain's draws. From i = 4 on the values are mice's (checked to 1e-14)."""
    draws = np.asarray(chains, dtype=np.float64)
    return np.array([rhat(draws[:, :i]) for i in range(1, draws.shape[1] + 1)])


def _split(draws: np.ndarray) -> np.ndarray:
    """Each chain's first and second half as separate chains; an odd middle draw is left out."""
    n = draws.shape[1]
    if n == 1:
        return draws
    half = n / 2
    return np.vstack([draws[:, : math.floor(half)], draws[:, math.ceil(half) :]])


def _normal_scores(draws: np.ndarray) -> np.ndarray:
    """Average ranks over all draws, mapped to normal quantiles (r - 1/2) / S."""
    ranks = _average_ranks(draws.ravel()).reshape(draws.shape)
    scores: np.ndarray = ndtri((ranks - 0.5) / draws.size)
    return scores


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given the mean of their ranks (scipy's ``rankdata(method="average")``,
    the same numbers: numpy and scipy.special keep ``fip simulate`` from importing scipy.stats,
    seconds of start-up); NaN everywhere if any value is NaN, as scipy's."""
    if np.isnan(values).any():
        return np.full(values.shape, np.nan)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(first)
    bounds = np.flatnonzero(np.concatenate((first, [True])))
    ranks = np.empty(values.size)
    ranks[order] = 0.5 * (bounds[group] + bounds[group - 1] + 1)
    return ranks


def _classic_rhat(draws: np.ndarray) -> float:
    """Gelman and Rubin's R-hat of chains (rows) of equal length."""
    if np.ptp(draws) < np.finfo(np.float64).eps:
        return 1.0
    n = draws.shape[1]
    if n < 2 or draws.shape[0] < 2:
        return math.nan
    between = n * float(np.var(draws.mean(axis=1), ddof=1))
    within = float(np.mean(np.var(draws, axis=1, ddof=1)))
    if within == 0.0:  # every chain constant, but not all at one value: they never mix
        return math.inf
    return math.sqrt((between / within + n - 1) / n)


@dataclass(frozen=True)
class MissingPattern:
    """mice's ``md.pattern``: ``columns`` ordered by missing count, then per distinct pattern its
    count and which columns are observed (True) in it."""

    columns: tuple[str, ...]
    counts: tuple[int, ...]
    observed: np.ndarray
    """(patterns, columns) booleans, True where the pattern's cells are observed."""
    missing_per_column: tuple[int, ...]

    @property
    def missing_per_pattern(self) -> tuple[int, ...]:
        return tuple(int(v) for v in (~self.observed).sum(axis=1))

    @property
    def total_missing(self) -> int:
        return sum(self.missing_per_column)

    @property
    def rows(self) -> int:
        return sum(self.counts)

    def most_frequent(self, limit: int) -> tuple[MissingPattern, int, int]:
        """The ``limit`` most frequent patterns (ties: md.pattern's order), still in md.pattern's
        order, and how many patterns and rows are left out."""
        if len(self.counts) <= limit:
            return self, 0, 0
        by_count = sorted(range(len(self.counts)), key=lambda k: -self.counts[k])
        kept = sorted(by_count[:limit])
        shown = MissingPattern(
            columns=self.columns,
            counts=tuple(self.counts[k] for k in kept),
            observed=self.observed[kept],
            missing_per_column=self.missing_per_column,
        )
        return shown, len(self.counts) - limit, self.rows - shown.rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "patterns": [
                {"count": count, "observed": [bool(v) for v in row], "missing": missing}
                for count, row, missing in zip(
                    self.counts, self.observed, self.missing_per_pattern, strict=True
                )
            ],
            "missing_per_column": list(self.missing_per_column),
            "total_missing": self.total_missing,
        }


def md_pattern(columns: Sequence[str], missing: np.ndarray) -> MissingPattern:
    """The missing-data pattern of a table: ``missing`` is (rows, columns), True where a cell is
    missing (``np.isnan(table.values)`` for a numeric table)."""
    mask = np.asarray(missing, dtype=bool)
    if mask.ndim != 2 or mask.shape[1] != len(columns) or mask.shape[0] == 0:
        raise InputError(
            f"md_pattern takes a rows x {len(columns)} mask with at least one row, "
            f"got shape {mask.shape}"
        )
    patterns, counts = np.unique(mask, axis=0, return_counts=True)
    return md_pattern_of_counts(columns, patterns, counts)


def md_pattern_of_counts(
    columns: Sequence[str], patterns: np.ndarray, counts: Sequence[int] | np.ndarray
) -> MissingPattern:
    """:func:`md_pattern` from distinct patterns already counted (``patterns`` is (k, columns),
    True where missing; a pattern may come more than once): what a reader that streams a file
    keeps, instead of its rows."""
    mask = np.asarray(patterns, dtype=bool).reshape(-1, len(columns))
    weights = np.asarray(counts, dtype=np.int64)
    if mask.shape[0] == 0 or weights.shape != (mask.shape[0],) or np.any(weights < 0):
        raise InputError(
            f"md_pattern takes at least one pattern of {len(columns)} columns with a count each"
        )
    per_column = (mask * weights[:, None]).sum(axis=0)
    order = np.argsort(per_column, kind="stable")
    ordered = mask[:, order].astype(np.int8)
    unique, inverse = np.unique(ordered, axis=0, return_inverse=True)
    totals = np.bincount(inverse.reshape(-1), weights=weights, minlength=unique.shape[0])
    return MissingPattern(
        columns=tuple(columns[i] for i in order),
        counts=tuple(int(c) for c in totals),
        observed=unique == 0,
        missing_per_column=tuple(int(per_column[i]) for i in order),
    )


def trend_rhat(trace: np.ndarray) -> float:
    """Whether a single chain has settled: the split R-hat of the last half of its trace (the
    two halves of the last half compared, rank-normalised as :func:`rhat`).

    Why this test: it is the multi-chain criterion applied within one chain, so one threshold
    (:data:`RHAT_LIMIT`) reads both; being rank-based it needs no scale and is not thrown by
    one wild cycle; and a chain still drifting has a third quarter unlike its fourth. A
    regression slope against its standard error was the alternative, but consecutive cycles
    are autocorrelated, which makes that standard error too small and flags settled chains.
    NaN when the last half holds fewer than four finite cycles (too short to judge); a ``None``
    (a number central's cells do not define) reads as NaN. Short chains give noisy values: on
    independent normal draws it exceeds 1.1 in 38% of chains of 13 cycles, 15% of 45 and 3%
    of 105 (2000 draws each).
    """
    values = np.asarray(trace, dtype=np.float64)
    last = values[len(values) // 2 :]
    if last.size < 4 or not np.all(np.isfinite(last)):
        return math.nan
    return rhat(last[np.newaxis, :])


def unsettled(value: float) -> bool:
    """A trend R-hat that flags its target: above :data:`RHAT_LIMIT`, or too short to judge."""
    return not value <= RHAT_LIMIT


def unsettled_prefix(target: str) -> str:
    """How the warning for a target that may not have settled begins (pages find it by this)."""
    return f"target '{target}' may not have settled"


def unsettled_sentence(target: str, judged: dict[str, float]) -> str:
    """The plain warning for a target whose single chain may not have settled. On a short chain
    the check also fires on many chains that have settled (docs/algorithms.md gives the rates),
    so the sentence asks for more cycles rather than declaring the datasets wrong."""
    shown = ", ".join(
        f"{quantity} {'too few cycles to judge' if math.isnan(value) else f'{value:.2f}'}"
        for quantity, value in judged.items()
    )
    return (
        f"{unsettled_prefix(target)}: the mean or SD of central's imputed cells moved over the "
        f"last half of the chain (split R-hat of that half: {shown}; above {RHAT_LIMIT} flags). "
        "A short chain cannot tell a slow drift from noise: run more cycles "
        "(iteration_before_first_imputation, iteration_between_imputations) and look at the "
        "trace plot before trusting these datasets"
    )


def unmixed_sentence(target: str, judged: dict[str, float], *, chains: int) -> str:
    """The plain warning for a target whose parallel chains have not mixed: R-hat of the mean
    and SD of central's imputed cells over every cycle above :data:`RHAT_LIMIT` (or too few
    cycles to judge: fewer than 4)."""
    shown = ", ".join(
        f"{quantity} {'too few cycles to judge' if math.isnan(value) else f'{value:.2f}'}"
        for quantity, value in judged.items()
    )
    return (
        f"{unsettled_prefix(target)}: its {chains} chains have not mixed (R-hat of the mean and "
        f"SD of central's imputed cells over the cycles: {shown}; above {RHAT_LIMIT} flags). "
        "Run more cycles (iteration_before_first_imputation) and look at the trace plot before "
        "trusting these datasets"
    )
