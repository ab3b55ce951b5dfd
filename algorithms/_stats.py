"""The maths of the built-in algorithms, as plain numpy functions.

Site side: aggregates over a site's rows (X'X, X'y, y'y; or X'WX, X'(y - p), log-likelihood),
computed in fixed-size row blocks so that no message copies the site's whole data. Central
side: the Gaussian pooled fit (penalty and centring from ``_design``), fits put together from
parts, and parameter draws; Newton fits are in ``_newton``, the methods in ``methods``. See
ALGORITHMS.md.

Layout: a site keeps its data as ``Z``, an (n, c + 1) matrix of its c columns followed by a
column of ones. The design of target column j is every other column, then the intercept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.special import expit

from algorithms._design import Layout, Moments
from federation.errors import FitError

BLOCK_ROWS = 65_536
"""Rows per block in site aggregates: bounds the temporary memory of one message."""


# ---------------------------------------------------------------- site side


def augment(values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Copy ``values`` (only its ``rows``, a boolean mask, when given) into a C-ordered matrix
    with a trailing column of ones (``Z``). The rows are copied a block at a time: no
    intermediate copy of the selection as large as ``Z`` itself."""
    if rows is None:
        z = np.empty((values.shape[0], values.shape[1] + 1), dtype=np.float64)
        z[:, :-1] = values
    else:
        z = np.empty((int(np.count_nonzero(rows)), values.shape[1] + 1), dtype=np.float64)
        at = 0
        for start in range(0, values.shape[0], BLOCK_ROWS):
            block = values[start : start + BLOCK_ROWS][rows[start : start + BLOCK_ROWS]]
            z[at : at + block.shape[0], :-1] = block
            at += block.shape[0]
    z[:, -1] = 1.0
    return z


def design(z: np.ndarray, column: int) -> np.ndarray:
    """Column indices of the design for target ``column``: the others, then the ones."""
    return np.array([c for c in range(z.shape[1]) if c != column], dtype=np.intp)


def _blocks(z: np.ndarray, rows: np.ndarray | None, cols: np.ndarray, column: int):  # type: ignore[no-untyped-def]
    """Yield (X, y) for each block of the selected rows: design columns and target."""
    for start in range(0, z.shape[0], BLOCK_ROWS):
        block = z[start : start + BLOCK_ROWS]
        if rows is not None:
            block = block[rows[start : start + BLOCK_ROWS]]
        if block.shape[0]:
            yield block[:, cols], block[:, column]


def gaussian_stats(z: np.ndarray, rows: np.ndarray | None, column: int) -> dict[str, Any]:
    """n, X'X, X'y and y'y of target ``column`` over the selected rows (all when None)."""
    cols = design(z, column)
    gram = np.zeros((z.shape[1], z.shape[1]))
    n = 0
    for start in range(0, z.shape[0], BLOCK_ROWS):
        block = z[start : start + BLOCK_ROWS]
        if rows is not None:
            block = block[rows[start : start + BLOCK_ROWS]]
        gram += block.T @ block  # one product gives X'X, X'y and y'y, with no column copy
        n += block.shape[0]
    return {
        "n": n,
        "xtx": gram[np.ix_(cols, cols)],
        "xty": gram[cols, column],
        "yty": float(gram[column, column]),
    }


def logistic_stats(
    z: np.ndarray, rows: np.ndarray | None, column: int, beta: np.ndarray, *, moments: bool = False
) -> dict[str, Any]:
    """n, X'WX, X'(y - p) and the log-likelihood at ``beta``, over the selected rows; with
    ``moments`` (a fit's first evaluation) also the design's column sums and sums of squares,
    from which central sets the penalty (``_design``)."""
    cols = design(z, column)
    p = cols.size
    h = np.zeros((p, p))
    g = np.zeros(p)
    sums = np.zeros(p)
    squares = np.zeros(p)
    q = 0.0
    n = 0
    for x, y in _blocks(z, rows, cols, column):
        eta = x @ beta
        mu = expit(eta)
        h += (x * (mu * (1.0 - mu))[:, None]).T @ x
        g += x.T @ (y - mu)
        q += float(y @ eta - np.logaddexp(0.0, eta).sum())
        n += y.size
        if moments:
            sums += x.sum(axis=0)
            squares += np.einsum("ij,ij->j", x, x)
    result: dict[str, Any] = {"n": n, "h": h, "g": g, "q": q}
    if moments:
        result.update(sums=sums, squares=squares)
    return result


def logistic_loglik(
    z: np.ndarray, rows: np.ndarray | None, column: int, betas: np.ndarray
) -> np.ndarray:
    """The log-likelihood of :func:`logistic_stats` at every row of ``betas`` (a line search's
    candidates) in one pass over the rows; equal to its Q up to the order of the sums."""
    cols = design(z, column)
    q = np.zeros(betas.shape[0])
    for x, y in _blocks(z, rows, cols, column):
        eta = x @ betas.T
        q += y @ eta - np.logaddexp(0.0, eta).sum(axis=0)
    return q


def linear_predictor(z: np.ndarray, rows: np.ndarray, column: int, coef: np.ndarray) -> np.ndarray:
    """X @ coef for the selected rows of target ``column``'s design, block by block."""
    cols = design(z, column)
    parts = [x @ coef for x, _ in _blocks(z, rows, cols, column)]
    return np.concatenate(parts) if parts else np.zeros(0)


# ---------------------------------------------------------------- central side


@dataclass(frozen=True)
class Fit:
    """A pooled fit: coefficients in design order (0 for a predictor left out), the penalised
    Gram or Hessian in those coordinates, and what a draw needs: the Cholesky factor of that
    matrix in centred coordinates over the kept columns (``_design``)."""

    kind: str
    n: int
    beta: np.ndarray
    matrix: np.ndarray
    chol: np.ndarray
    moments: Moments
    sse: float | None = None
    iterations: int | None = None
    converged: bool = True
    augmented: bool = False
    """Refitted with pseudo-rows (White, Daniel and Royston 2010) after separation."""
    layout: Layout | None = None
    """Where each entry of ``beta`` (theta) sits, for a Newton fit with more than one linear
    predictor or with thresholds; None: one coefficient per design column."""

    @property
    def coordinates(self) -> Layout:
        """The layout of theta and its centred coordinates (``_design.Layout``)."""
        return self.layout if self.layout is not None else Layout.linear(self.moments)

    @property
    def df(self) -> int:
        """Residual degrees of freedom of a Gaussian fit: max(N - p, 1), p the kept columns."""
        return max(self.n - int(self.moments.kept.size), 1)

    @property
    def dropped(self) -> tuple[str, ...]:
        return self.moments.dropped


def total(replies: Mapping[str, Mapping[str, Any]], key: str) -> Any:
    """Sum one aggregate over participants, in the job's participant order."""
    values = [reply[key] for reply in replies.values()]
    result = values[0]
    for value in values[1:]:
        result = result + value
    return result


def fit_gaussian(
    replies: Mapping[str, Mapping[str, Any]],
    *,
    ridge: float,
    names: Sequence[str],
    target: str,
    offset: np.ndarray | None = None,
) -> Fit:
    """beta = G^-1 X'y with G = X'X + P (P = ridge * diag(C), intercept 0), and the SSE, from
    the participants' sums. Solved in centred coordinates over the non-constant predictors.

    ``offset`` is a linear term added to the objective (CSL's gradient correction): then
    beta = G^-1 (X'y + offset), and the SSE is still the residual sum of squares at beta.
    """
    n = int(total(replies, "n"))
    if n == 0:
        raise FitError(f"target '{target}': no row has it and every predictor observed")
    xtx = np.asarray(total(replies, "xtx"), dtype=np.float64)
    xty = np.asarray(total(replies, "xty"), dtype=np.float64)
    yty = float(total(replies, "yty"))
    moments = Moments.of_gram(n, xtx, names)
    gram_c = moments.centre_matrix(xtx)
    xty_c = moments.centre_vector(xty)
    penalised = gram_c + np.diag(moments.penalty(ridge))
    chol = _cholesky(penalised, names=[names[int(j)] for j in moments.kept], target=target)
    right = xty_c if offset is None else xty_c + moments.centre_vector(offset)
    beta_c = cho_solve((chol, True), right)
    # |y - X beta|^2 in centred coordinates: y'y - 2 beta_c'(A'X'y) + beta_c'(A'X'XA) beta_c
    sse = max(yty - 2.0 * float(beta_c @ xty_c) + float(beta_c @ gram_c @ beta_c), 0.0)
    return Fit(
        kind="gaussian",
        n=n,
        beta=moments.to_original(beta_c),
        matrix=xtx + np.diag(moments.full_penalty(ridge)),
        chol=chol,
        moments=moments,
        sse=sse,
    )


def fit_from(
    kind: str,
    *,
    n: int,
    beta: np.ndarray,
    covariance: np.ndarray,
    mean: np.ndarray,
    sse: float | None,
    names: Sequence[str],
    target: str,
) -> Fit:
    """A fit put together at central from parts (an average, a rescaled surrogate): its
    coefficients, their covariance (a predictor every part left out has a zero row) and the
    design's column means, in whose centred coordinates the draw is made."""
    covariance = np.asarray(covariance, dtype=np.float64)
    width = beta.size
    kept = np.flatnonzero(np.diag(covariance) > 0)
    if kept.size == 0 or kept[-1] != width - 1:
        raise FitError(f"target '{target}': the combined fit has no variance for the intercept")
    dropped = tuple(names[j] for j in range(width) if j not in set(kept.tolist()))
    centre = np.array(mean, dtype=np.float64)
    centre[-1] = 0.0
    moments = Moments(n=n, mean=centre, ssd=np.zeros(width), kept=kept, dropped=dropped)
    # beta = A beta_c, so Cov(beta_c) = A^-1 Cov(beta) A^-T, and A^-1 adds xbar'slopes instead.
    a_inverse = np.eye(width)
    a_inverse[-1, :-1] = centre[:-1]
    centred = (a_inverse @ covariance @ a_inverse.T)[np.ix_(kept, kept)]
    kept_names = [names[int(j)] for j in kept]
    precision = inverse((centred + centred.T) / 2.0, names=kept_names, target=target)
    chol = _cholesky(precision, names=kept_names, target=target)
    full = np.zeros((width, width))
    full[np.ix_(kept, kept)] = inverse(
        covariance[np.ix_(kept, kept)], names=kept_names, target=target
    )
    return Fit(kind=kind, n=n, beta=beta, matrix=full, chol=chol, moments=moments, sse=sse)


def inverse(matrix: np.ndarray, *, names: Sequence[str], target: str) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, by its Cholesky factor."""
    chol = _cholesky(matrix, names=names, target=target)
    result: np.ndarray = cho_solve((chol, True), np.eye(matrix.shape[0]))
    symmetric: np.ndarray = (result + result.T) / 2.0
    return symmetric


def covariance(fit: Fit) -> np.ndarray:
    """G^-1 (or H^-1) in original coordinates, zero rows for predictors left out."""
    inv_chol = np.linalg.inv(fit.chol)
    centred = inv_chol.T @ inv_chol
    a = fit.coordinates.transform()[:, fit.coordinates.kept]
    result: np.ndarray = a @ centred @ a.T
    symmetric: np.ndarray = (result + result.T) / 2.0
    return symmetric


def draw_parameters(fit: Fit, rng: np.random.Generator) -> dict[str, Any]:
    """One posterior draw for an imputation: alpha (and sigma for a Gaussian target).

    Gaussian (mice's norm): sigma^2 = SSE / chi2(max(N - p, 1)), then alpha = beta + sigma * d;
    Newton fits: alpha = beta + d; where d = A R_c^-1 z, R_c'R_c the penalised matrix in
    centred coordinates (``_design``), z standard normal: d ~ Normal(0, G^-1) (or H^-1).
    """
    z_scale, sigma = 1.0, None
    if fit.sse is not None:
        sigma = float(np.sqrt(fit.sse / rng.chisquare(fit.df)))
        z_scale = sigma
    layout = fit.coordinates
    z = rng.standard_normal(layout.kept.size)
    step = layout.to_original(solve_triangular(fit.chol.T, z, lower=False))
    drawn: dict[str, Any] = {"alpha": fit.beta + z_scale * step}
    if sigma is not None:
        drawn["sigma"] = sigma
    return drawn


def _cholesky(matrix: np.ndarray, *, names: Sequence[str], target: str) -> np.ndarray:
    """Lower Cholesky factor, or a ``FitError`` naming the columns that make it singular."""
    try:
        chol = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        chol = None
    if chol is None or not np.all(np.isfinite(chol)) or _nearly_singular(chol, matrix):
        raise FitError(
            f"target '{target}': the system is singular: {_collinear(matrix, names)} "
            "among the rows used; set ridge > 0 or drop a column"
        )
    return chol


def _nearly_singular(chol: np.ndarray, matrix: np.ndarray) -> bool:
    """Rounding can let a singular matrix through Cholesky with a tiny pivot: catch that too.
    Each pivot is compared with its own diagonal entry (1 - R^2 of that column on the ones
    before it), so the test does not depend on the columns' units."""
    pivots = np.diag(chol) ** 2 / np.diag(matrix)
    return bool(pivots.min() <= 1e-12)


def _collinear(matrix: np.ndarray, names: Sequence[str]) -> str:
    """Name the columns in the direction of the smallest eigenvalue (of the matrix scaled to
    unit diagonal, so that units do not decide)."""
    diagonal = np.sqrt(np.maximum(np.diag(matrix), np.finfo(float).tiny))
    _, vectors = np.linalg.eigh(matrix / np.outer(diagonal, diagonal))
    weights = np.abs(vectors[:, 0])
    involved = [names[int(i)] for i in np.flatnonzero(weights > 0.1 * weights.max())]
    columns = [n for n in involved if n != "(intercept)"]
    if len(columns) == 1:
        return f"column '{columns[0]}' is constant"
    return "columns " + ", ".join(f"'{n}'" for n in columns or involved) + " are collinear"
