"""Pseudo-rows against separation (White, Daniel and Royston 2010), as mice's ``augment``.

A categorical or ordinal fit that separates is redone with a few weighted pseudo-rows added to
the likelihood: for every predictor j and every level, two rows with every predictor at its
pooled mean except j, at its mean plus and minus half its standard deviation, and the target
at that level. With q predictors and K levels that is 2qK rows, each of weight (q + 1)/(2qK),
so they weigh q + 1 rows in all: enough to keep every coefficient finite, too little to move a
fit that does not separate by much.

The pseudo-rows are built at central from the pooled n, column sums and sums of squares that
every site sends with its first evaluation (``_glm.moments``): they hold no row of any site,
so no site is asked anything more. mice computes the mean and SD over every row of the
predictors and clamps the pseudo-values to the predictors' observed range; here the mean and
SD are those of the rows the fit uses, and there is no clamping (a minimum or maximum is one
row's value, which no site sends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms._glm import family_stats


@dataclass(frozen=True)
class PseudoRows:
    """The design rows, level indices and common weight of the pseudo-rows."""

    x: np.ndarray
    y: np.ndarray
    weight: float


def pseudo_rows(moments: Mapping[str, Any], *, levels: int) -> PseudoRows:
    """The pseudo-rows of a design from its pooled moments (n, sums, squares). A design column
    with no spread (the ones, a constant) keeps its mean and is not a predictor."""
    n = float(moments["n"])
    sums = np.asarray(moments["sums"], dtype=np.float64)
    squares = np.asarray(moments["squares"], dtype=np.float64)
    mean = sums / n
    deviations = np.maximum(squares - sums**2 / n, 0.0)
    sd = np.sqrt(deviations / max(n - 1.0, 1.0))  # mice: R's var, divisor n - 1
    predictors = np.flatnonzero(deviations > 1e-12 * np.maximum(squares, 1.0))
    count = predictors.size
    rows = 2 * count * levels
    x = np.tile(mean, (rows, 1))
    y = np.empty(rows)
    row = 0
    for j in predictors:
        for level in range(levels):
            for sign in (0.5, -0.5):
                x[row, j] += sign * sd[j]
                y[row] = level
                row += 1
    return PseudoRows(x=x, y=y, weight=(count + 1) / rows if rows else 0.0)


def pseudo_stats(
    family: str, pseudo: PseudoRows, theta: np.ndarray, *, levels: int
) -> dict[str, Any]:
    """The weighted H, g and Q of the pseudo-rows at ``theta`` (n and saturated stay those of
    the real rows: pseudo-rows are not rows the fit uses)."""
    p = pseudo.x.shape[1]
    z = np.column_stack([pseudo.x, pseudo.y])
    stats = family_stats(family, z, None, p, theta, np.arange(p), levels=levels)
    return {
        "h": pseudo.weight * stats["h"],
        "g": pseudo.weight * stats["g"],
        "q": pseudo.weight * stats["q"],
    }
