"""Pseudo-rows against separation (White, Daniel and Royston 2010), as mice's ``augment``: the
one augmentation of every Newton fit that can separate (logistic, categorical, ordinal).

A fit that separates is redone with a few weighted pseudo-rows added to its likelihood: for
every kept predictor j and every level of the target, two rows with every predictor at its
pooled mean except j, at its mean plus and minus half its standard deviation, and the target at
that level. With q predictors and K levels (K = 2 for a binary target) that is 2qK rows, each
of weight (q + 1) / (2qK), so they weigh q + 1 rows in all: enough to keep every coefficient
finite, too little to move a fit that does not separate by much.

The rows are built at central from the pooled n, column sums and sums of squares that every
site sends with a fit's first evaluation (``_design.Moments``): they hold no row of any site,
so no site is asked anything more. mice computes the mean and SD (divisor n - 1, R's ``sd``)
over every row of the predictors and clamps the pseudo-values to the predictors' observed
range; here they are those of the rows the fit uses, and there is no clamping (a minimum or a
maximum is one row's value, which no site sends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms._design import Moments


@dataclass(frozen=True)
class PseudoRows:
    """The pseudo-rows as a site's ``Z`` lays rows out: the design (intercept last), then the
    target's level index 0..K-1 in column ``column``; and their common weight."""

    z: np.ndarray
    column: int
    weight: float


def pseudo_rows(moments: Moments, *, levels: int) -> PseudoRows | None:
    """The pseudo-rows of a design from its pooled moments (None: no predictor to vary)."""
    predictors = moments.kept[:-1]
    count = predictors.size
    if count == 0:
        return None
    sd = np.sqrt(moments.ssd / max(moments.n - 1, 1))
    centre = moments.mean.copy()
    centre[-1] = 1.0
    rows = 2 * count * levels
    x = np.tile(centre, (rows, 1))
    y = np.empty(rows)
    row = 0
    for j in predictors:
        for level in range(levels):
            for sign in (0.5, -0.5):
                x[row, j] += sign * sd[j]
                y[row] = level
                row += 1
    # The target column goes just before the intercept, where a site's Z would have it last
    # among its columns: every family's design is then "every other column, ones last".
    z = np.column_stack([x[:, :-1], y, x[:, -1]])
    return PseudoRows(z=z, column=x.shape[1] - 1, weight=(count + 1) / rows)
