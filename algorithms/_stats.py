"""The maths of the built-in algorithms, as plain numpy functions.

Site side: aggregates over a site's rows (X'X, X'y, y'y; or X'WX, X'(y - p), log-likelihood),
computed in fixed-size row blocks so that no message copies the site's whole data. Central
side: pooled fits with ridge, parameter draws, and imputation of rows. See ALGORITHMS.md.

Layout: a site keeps its data as ``Z``, an (n, c + 1) matrix of its c columns followed by a
column of ones. The design of target column j is every other column, then the intercept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.special import expit

from federation.errors import FitError

BLOCK_ROWS = 65_536
"""Rows per block in site aggregates: bounds the temporary memory of one message."""

TOLERANCE = 1e-5
"""Newton stops when no coefficient moves by this much."""

_MIN_STEP = 2.0**-40


# ---------------------------------------------------------------- site side


def augment(values: np.ndarray) -> np.ndarray:
    """Copy ``values`` into a C-ordered matrix with a trailing column of ones (``Z``)."""
    z = np.empty((values.shape[0], values.shape[1] + 1), dtype=np.float64)
    z[:, :-1] = values
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
    z: np.ndarray, rows: np.ndarray | None, column: int, beta: np.ndarray
) -> dict[str, Any]:
    """n, X'WX, X'(y - p) and the log-likelihood at ``beta``, over the selected rows."""
    cols = design(z, column)
    p = cols.size
    h = np.zeros((p, p))
    g = np.zeros(p)
    q = 0.0
    n = 0
    for x, y in _blocks(z, rows, cols, column):
        eta = x @ beta
        mu = expit(eta)
        h += (x * (mu * (1.0 - mu))[:, None]).T @ x
        g += x.T @ (y - mu)
        q += float(y @ eta - np.logaddexp(0.0, eta).sum())
        n += y.size
    return {"n": n, "h": h, "g": g, "q": q}


def linear_predictor(z: np.ndarray, rows: np.ndarray, column: int, coef: np.ndarray) -> np.ndarray:
    """X @ coef for the selected rows of target ``column``'s design, block by block."""
    cols = design(z, column)
    parts = [x @ coef for x, _ in _blocks(z, rows, cols, column)]
    return np.concatenate(parts) if parts else np.zeros(0)


def draw_values(
    eta: np.ndarray, kind: str, sigma: float | None, rng: np.random.Generator
) -> np.ndarray:
    """Imputed values: Normal(eta, sigma^2) or Bernoulli(sigmoid(eta)), one per row."""
    if kind == "gaussian":
        assert sigma is not None
        drawn: np.ndarray = eta + sigma * rng.standard_normal(eta.size)
    else:
        drawn = (rng.random(eta.size) < expit(eta)).astype(np.float64)
    return drawn


# ---------------------------------------------------------------- central side


@dataclass(frozen=True)
class Fit:
    """A pooled fit: coefficients, the penalised Gram/Hessian and its Cholesky factor."""

    kind: str
    n: int
    beta: np.ndarray
    matrix: np.ndarray
    chol: np.ndarray
    sse: float | None = None
    iterations: int | None = None
    converged: bool = True


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
    """beta = G^-1 X'y with G = X'X + ridge*N*I, and the SSE, from the participants' sums.

    ``offset`` is a linear term added to the objective (CSL's gradient correction): then
    beta = G^-1 (X'y + offset), and the SSE is still the residual sum of squares at beta.
    """
    n = int(total(replies, "n"))
    if n == 0:
        raise FitError(f"target '{target}': no row has it and every predictor observed")
    xtx = np.asarray(total(replies, "xtx"), dtype=np.float64)
    xty = np.asarray(total(replies, "xty"), dtype=np.float64)
    yty = float(total(replies, "yty"))
    gram = xtx + ridge * n * np.eye(xtx.shape[0])
    chol = _cholesky(gram, names=names, target=target)
    beta = cho_solve((chol, True), xty if offset is None else xty + offset)
    sse = yty - 2.0 * beta @ xty + beta @ xtx @ beta
    return Fit(kind="gaussian", n=n, beta=beta, matrix=gram, chol=chol, sse=float(sse))


@dataclass(frozen=True)
class _Point:
    n: int
    beta: np.ndarray
    h: np.ndarray
    g: np.ndarray
    q: float


Sums = Mapping[str, Any]
"""n, h (X'WX), g (X'(y - p)) and q (log-likelihood) at one beta, summed over whoever fits."""


def newton(
    *, start: np.ndarray, ridge: float, max_iter: int, names: Sequence[str], target: str
) -> Generator[np.ndarray, Sums, Fit]:
    """Penalised Newton with backtracking, without any I/O: it yields each beta to evaluate and
    is sent back the sums at it; it returns the fit. The same steps serve a pooled fit (each
    evaluation one ask of every participant) and a site's own fit (a local computation).

    Stops when the Newton step moves no coefficient by ``TOLERANCE``, or after ``max_iter``.
    """

    def point(beta: np.ndarray, sums: Sums) -> _Point:
        n = int(sums["n"])
        if n == 0:
            raise FitError(f"target '{target}': no row has it and every predictor observed")
        penalty = ridge * n
        h = np.asarray(sums["h"]) + penalty * np.eye(beta.size)
        g = np.asarray(sums["g"]) - penalty * beta
        q = float(sums["q"]) - penalty * float(beta @ beta) / 2.0
        return _Point(n=n, beta=beta, h=h, g=g, q=q)

    beta = np.array(start, dtype=np.float64)
    current = point(beta, (yield beta))
    iterations = 0
    converged = False
    while iterations < max_iter:
        chol = _cholesky(current.h, names=names, target=target)
        direction = cho_solve((chol, True), current.g)
        # The Newton step is the estimated distance to the optimum: stop when it is small.
        # (H and g at the accepted point came with it, so this costs no evaluation.)
        if np.max(np.abs(direction)) < TOLERANCE:
            converged = True
            break
        slope = float(direction @ current.g)
        # Q sums thousands of terms: gains below its rounding error cannot be seen, so they
        # count as met (else a step that is right would be halved for no reason).
        rounding = 1e-12 * (1.0 + abs(current.q))
        step = 1.0
        while True:
            beta = current.beta + step * direction
            candidate = point(beta, (yield beta))
            if candidate.q - current.q > slope * step / 2.0 - rounding:
                break
            step /= 2.0
            if step < _MIN_STEP or np.max(np.abs(step * direction)) < TOLERANCE:
                candidate = current  # no ascent left at this precision: beta is the optimum
                break
        if candidate is current:
            converged = True
            break
        iterations += 1
        current = candidate
    chol = _cholesky(current.h, names=names, target=target)
    return Fit(
        kind="logistic",
        n=current.n,
        beta=current.beta,
        matrix=current.h,
        chol=chol,
        iterations=iterations,
        converged=converged,
    )


async def fit_logistic(
    evaluate: Callable[[np.ndarray], Awaitable[Mapping[str, Mapping[str, Any]]]],
    *,
    start: np.ndarray,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
) -> Fit:
    """The pooled logistic fit: each evaluation is one ask of every participant.

    A site evaluates a candidate and returns H, g and Q together, so an accepted step costs one
    round trip.
    """
    steps = newton(start=start, ridge=ridge, max_iter=max_iter, names=names, target=target)
    beta = next(steps)
    while True:
        replies = await evaluate(beta)
        sums = {key: total(replies, key) for key in ("n", "h", "g", "q")}
        try:
            beta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit


def fit_own(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    kind: str,
    *,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
    start: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> Fit:
    """A fit on one participant's rows alone (ridge scaled by its own row count).

    ``offset`` adds a linear term offset'beta to the log-likelihood (Gaussian: to X'y), the
    gradient correction of a surrogate likelihood; ``start`` warm-starts Newton.
    """
    if kind == "gaussian":
        stats = gaussian_stats(z, rows, column)
        return fit_gaussian({"": stats}, ridge=ridge, names=names, target=target, offset=offset)
    p = z.shape[1] - 1
    steps = newton(
        start=np.zeros(p) if start is None else start,
        ridge=ridge,
        max_iter=max_iter,
        names=names,
        target=target,
    )
    beta = next(steps)
    while True:
        sums = logistic_stats(z, rows, column, beta)
        if offset is not None:
            sums = {**sums, "g": sums["g"] + offset, "q": sums["q"] + float(offset @ beta)}
        try:
            beta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit


def score(z: np.ndarray, rows: np.ndarray | None, column: int, kind: str, beta: np.ndarray) -> Any:
    """n and the gradient of the log-likelihood at ``beta`` (unpenalised, summed over rows).

    Gaussian: X'(y - X beta), the score up to 1/sigma^2; logistic: X'(y - p).
    """
    if kind == "gaussian":
        stats = gaussian_stats(z, rows, column)
        return stats["n"], stats["xty"] - stats["xtx"] @ beta
    stats = logistic_stats(z, rows, column, beta)
    return stats["n"], stats["g"]


def fit_from(
    kind: str,
    *,
    n: int,
    beta: np.ndarray,
    precision: np.ndarray,
    sse: float | None,
    names: Sequence[str],
    target: str,
) -> Fit:
    """A fit put together at central from parts (an average, a rescaled surrogate)."""
    chol = _cholesky(precision, names=names, target=target)
    return Fit(kind=kind, n=n, beta=beta, matrix=precision, chol=chol, sse=sse)


def inverse(matrix: np.ndarray, *, names: Sequence[str], target: str) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, by its Cholesky factor."""
    chol = _cholesky(matrix, names=names, target=target)
    result: np.ndarray = cho_solve((chol, True), np.eye(matrix.shape[0]))
    symmetric: np.ndarray = (result + result.T) / 2.0
    return symmetric


def draw_parameters(fit: Fit, rng: np.random.Generator) -> dict[str, Any]:
    """One posterior draw for an imputation: alpha (and sigma for a Gaussian target).

    Gaussian: sigma^2 = 1 / Gamma(shape=(N+1)/2, rate=(SSE+1)/2), then
    alpha = beta + sigma * R^-1 z with R'R = G. Logistic: alpha = beta + R^-1 z with R'R = H.
    """
    if fit.kind == "gaussian":
        assert fit.sse is not None
        sigma = float(
            np.sqrt(1.0 / rng.gamma(shape=(fit.n + 1) / 2.0, scale=2.0 / (fit.sse + 1.0)))
        )
        z = rng.standard_normal(fit.beta.size)
        alpha = fit.beta + sigma * solve_triangular(fit.chol.T, z, lower=False)
        return {"alpha": alpha, "sigma": sigma}
    z = rng.standard_normal(fit.beta.size)
    return {"alpha": fit.beta + solve_triangular(fit.chol.T, z, lower=False)}


def _cholesky(matrix: np.ndarray, *, names: Sequence[str], target: str) -> np.ndarray:
    """Lower Cholesky factor, or a ``FitError`` naming the columns that make it singular."""
    try:
        chol = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        chol = None
    if chol is None or not np.all(np.isfinite(chol)) or _nearly_singular(chol):
        raise FitError(
            f"target '{target}': the system is singular: {_collinear(matrix, names)} "
            "among the rows used; set ridge > 0 or drop a column"
        )
    return chol


def _nearly_singular(chol: np.ndarray) -> bool:
    """Rounding can let a singular matrix through Cholesky with a tiny pivot: catch that too."""
    pivots = np.diag(chol) ** 2
    return bool(pivots.min() <= 1e-13 * pivots.max())


def _collinear(matrix: np.ndarray, names: Sequence[str]) -> str:
    """Name the columns in the direction of the smallest eigenvalue."""
    _, vectors = np.linalg.eigh(matrix)
    weights = np.abs(vectors[:, 0])
    involved = [names[int(i)] for i in np.flatnonzero(weights > 0.1 * weights.max())]
    columns = [n for n in involved if n != "(intercept)"]
    if len(columns) == 1:
        return f"column '{columns[0]}' is constant"
    return "columns " + ", ".join(f"'{n}'" for n in columns or involved) + " are collinear"
