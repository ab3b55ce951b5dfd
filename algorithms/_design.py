"""The pooled moments of a fit's design, and what follows from them: the ridge penalty, the
predictors left out of the fit, and the centred coordinates in which fits are solved and drawn.

ALGORITHMS.md (Conventions, "Ridge"): for a fit on rows with design X (predictors, then the
intercept column of ones, last), n the pooled count, xbar the pooled column means and
C = X'X - n xbar xbar', the penalty is P = lambda * diag(C) with 0 for the intercept. Every slope
is penalised by lambda times its predictor's pooled sum of squared deviations, so the unit or the
offset of a predictor does not change the fit. A predictor constant over the fit's rows is left
out of the fit (mice's loggedEvents).

Centred coordinates: X_c = X A, where A is the identity except A[intercept, j] = -xbar_j, so that
X beta = X_c beta_c with beta = A beta_c. In them the Gram (or Hessian) has no unit-dependent
mixing between a predictor and the intercept, the penalty is the same diagonal, and a draw
beta_c + R_c^-1 z (R_c'R_c the centred matrix) is the same draw whatever a predictor's offset,
and is rescaled with a predictor's unit: that is what makes imputations exactly invariant to a
column's offset and unit, not just equal in distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONSTANT = 1e-13
"""A predictor whose sum of squared deviations is below this fraction of its sum of squares is
constant over the fit's rows (rounding of an exactly constant column stays near 1e-16)."""


@dataclass(frozen=True)
class Moments:
    """n, the column means and the sums of squared deviations of a fit's design (intercept last),
    pooled over everyone who fits; which design columns the fit keeps."""

    n: int
    mean: np.ndarray
    """Column means; the intercept's entry is 0 (it is not centred)."""
    ssd: np.ndarray
    """Sums of squared deviations C_jj; the intercept's entry is 0 (it is not penalised)."""
    kept: np.ndarray
    """Indices of the design columns in the fit: the non-constant predictors and the intercept."""
    dropped: tuple[str, ...]
    """Names of the predictors left out as constant over the fit's rows."""

    @classmethod
    def of(cls, n: int, sums: np.ndarray, squares: np.ndarray, names: Sequence[str]) -> Moments:
        """From the pooled count, column sums and sums of squares of the design."""
        sums = np.asarray(sums, dtype=np.float64)
        squares = np.asarray(squares, dtype=np.float64)
        mean = sums / max(n, 1)
        ssd = np.maximum(squares - sums * mean, 0.0)
        mean[-1] = 0.0
        ssd[-1] = 0.0
        constant = ssd <= CONSTANT * squares
        constant[-1] = False
        return cls(
            n=n,
            mean=mean,
            ssd=ssd,
            kept=np.flatnonzero(~constant),
            dropped=tuple(names[int(j)] for j in np.flatnonzero(constant)),
        )

    @classmethod
    def of_gram(cls, n: int, gram: np.ndarray, names: Sequence[str]) -> Moments:
        """From the pooled X'X (its intercept row holds the column sums)."""
        gram = np.asarray(gram, dtype=np.float64)
        return cls.of(n, gram[-1], np.diag(gram).copy(), names)

    @property
    def sd(self) -> np.ndarray:
        """Predictors' pooled standard deviations (divisor n); 1 for the intercept."""
        sd = np.sqrt(self.ssd / max(self.n, 1))
        sd[-1] = 1.0
        return sd

    def penalty(self, ridge: float) -> np.ndarray:
        """diag(P) over the kept columns: lambda * C_jj, 0 for the intercept."""
        diagonal: np.ndarray = ridge * self.ssd[self.kept]
        return diagonal

    def full_penalty(self, ridge: float) -> np.ndarray:
        """diag(P) over every design column (0 for the dropped ones and the intercept)."""
        diagonal = np.zeros(self.mean.size)
        diagonal[self.kept] = ridge * self.ssd[self.kept]
        return diagonal

    def centring(self) -> np.ndarray:
        """A: original coefficients = A @ centred coefficients (full design width)."""
        a = np.eye(self.mean.size)
        a[-1, :-1] = -self.mean[:-1]
        return a

    def to_centred(self, beta: np.ndarray) -> np.ndarray:
        """The kept centred coefficients of ``beta``: a constant predictor's term goes into the
        intercept, since it is the same in every row of the fit."""
        centred = np.array(beta, dtype=np.float64)
        centred[-1] = beta[-1] + float(self.mean[:-1] @ beta[:-1])
        result: np.ndarray = centred[self.kept]
        return result

    def to_original(self, centred: np.ndarray) -> np.ndarray:
        """Full original coefficients from the kept centred ones (0 for dropped predictors)."""
        beta = np.zeros(self.mean.size)
        beta[self.kept] = centred
        beta[-1] -= float(self.mean[:-1] @ beta[:-1])
        return beta

    def centre_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """A' M A over the kept columns, for a Gram or a Hessian M in original coordinates."""
        a = self.centring()[:, self.kept]
        centred: np.ndarray = a.T @ np.asarray(matrix, dtype=np.float64) @ a
        symmetric: np.ndarray = (centred + centred.T) / 2.0
        return symmetric

    def centre_vector(self, vector: np.ndarray) -> np.ndarray:
        """A' v over the kept columns, for a gradient or X'y in original coordinates."""
        a = self.centring()[:, self.kept]
        result: np.ndarray = a.T @ np.asarray(vector, dtype=np.float64)
        return result


@dataclass(frozen=True)
class Layout:
    """Where each entry of a fit's parameter vector theta sits, and the centred coordinates of
    theta that follow from the design's :class:`Moments`.

    ``column[i]`` is the design column that entry i multiplies (the intercept's: the last), or
    -1 for an ordinal threshold; ``group[i]`` ties slopes to the intercept (or thresholds) of
    the same linear predictor: one group for logistic, Poisson and Gaussian, one per non-reference
    level for categorical. An intercept is centred as b0 = b0_c - xbar'b (its predictor is
    x'b + b0), a threshold as zeta = zeta_c + xbar'b (its predictor is zeta - x'b), so that
    theta = T theta_c with T the identity but for those entries. Kept entries: slopes of the
    kept (non-constant) design columns, every intercept and threshold.
    """

    moments: Moments
    column: np.ndarray
    group: np.ndarray

    @classmethod
    def linear(cls, moments: Moments, groups: int = 1) -> Layout:
        """``groups`` linear predictors over the whole design (categorical: K - 1 of them)."""
        p = moments.mean.size
        return cls(
            moments=moments,
            column=np.tile(np.arange(p), groups),
            group=np.repeat(np.arange(groups), p),
        )

    @classmethod
    def ordinal(cls, moments: Moments, thresholds: int) -> Layout:
        """Slopes of the design without its intercept, then ``thresholds`` thresholds."""
        p = moments.mean.size
        return cls(
            moments=moments,
            column=np.concatenate([np.arange(p - 1), np.full(thresholds, -1)]),
            group=np.zeros(p - 1 + thresholds, dtype=np.intp),
        )

    @property
    def _intercept(self) -> np.ndarray:
        intercept = self.moments.mean.size - 1
        mask: np.ndarray = (self.column == intercept) | (self.column < 0)
        return mask

    @property
    def kept(self) -> np.ndarray:
        """Indices of theta in the fit: intercepts, thresholds, slopes of kept columns."""
        kept_columns = np.zeros(self.moments.mean.size, dtype=bool)
        kept_columns[self.moments.kept] = True
        keep = self._intercept | kept_columns[np.maximum(self.column, 0)]
        return np.flatnonzero(keep)

    def transform(self) -> np.ndarray:
        """T (full width): theta = T theta_c."""
        size = self.column.size
        t = np.eye(size)
        intercept = self._intercept
        slopes = ~intercept
        for i in np.flatnonzero(intercept):
            sign = 1.0 if self.column[i] < 0 else -1.0
            same = np.flatnonzero(slopes & (self.group == self.group[i]))
            t[i, same] = sign * self.moments.mean[self.column[same]]
        return t

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        """The kept centred entries of ``theta`` (a constant predictor's term goes into its
        intercept, the same in every row of the fit)."""
        inverse = 2.0 * np.eye(self.column.size) - self.transform()  # T - I is nilpotent
        result: np.ndarray = (inverse @ np.asarray(theta, dtype=np.float64))[self.kept]
        return result

    def to_original(self, centred: np.ndarray) -> np.ndarray:
        """Full theta (0 for dropped slopes) from the kept centred entries."""
        result: np.ndarray = self.transform()[:, self.kept] @ centred
        return result

    def centre_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """T'MT over the kept entries, for a Hessian M in original coordinates."""
        t = self.transform()[:, self.kept]
        centred = t.T @ np.asarray(matrix, dtype=np.float64) @ t
        symmetric: np.ndarray = (centred + centred.T) / 2.0
        return symmetric

    def centre_vector(self, vector: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.transform()[:, self.kept].T @ np.asarray(vector, np.float64)
        return result

    def full_penalty(self, ridge: float) -> np.ndarray:
        """diag(P) over every entry: lambda * C of its column for slopes, 0 otherwise."""
        diagonal = ridge * self.moments.ssd[np.maximum(self.column, 0)]
        diagonal[self._intercept] = 0.0
        result: np.ndarray = diagonal
        return result

    def penalty(self, ridge: float) -> np.ndarray:
        result: np.ndarray = self.full_penalty(ridge)[self.kept]
        return result

    def scale(self) -> np.ndarray:
        """Each kept entry's unit: its predictor's SD for a slope, 1 otherwise."""
        scale = self.moments.sd[np.maximum(self.column, 0)]
        scale[self._intercept] = 1.0
        result: np.ndarray = scale[self.kept]
        return result

    def slopes(self) -> np.ndarray:
        """Mask over the kept entries: which are slopes."""
        result: np.ndarray = ~self._intercept[self.kept]
        return result
