"""Penalised Newton for a binary target, pooled or on one participant's rows (ALGORITHMS.md,
"Newton fits"), with the handling of separation.

The steps are a generator without I/O: it yields each beta to evaluate and is sent the sums at
it (n, H = X'WX, g = X'(y - p), Q the log-likelihood; at the first beta also the design's column
sums and sums of squares, which set the penalty). The same steps serve a pooled fit (each
evaluation one ask of every participant) and a site's own fit (a local computation).

Steps are taken in the centred coordinates of ``_design``, where the penalty is diagonal and the
convergence test (no coefficient moves by ``TOLERANCE`` in units of its predictor's standard
deviation) does not depend on the data's units. Backtracking halves the step from 1 until the
Armijo condition Q(beta + t d) - Q(beta) >= 1e-4 t d'g holds.

Separation: when the coefficients run off (a predictor's log-odds over one standard deviation
beyond ``SEPARATED``, or the Hessian vanishing on the way there), the fit is redone with the
pseudo-rows of White, Daniel and Royston (2010), as mice's logreg uses: for every kept
predictor, rows at its mean plus and minus half its standard deviation (the others at their
means), once with y = 0 and once with y = 1, each of weight (p + 1) / (4p) for p predictors.
They are built from the pooled means and standard deviations of the fit's rows (aggregates;
mice also clips them to each predictor's range, which would need the sites' minima and maxima)
and added by central; the fit says it was augmented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve
from scipy.special import expit

from algorithms._design import Moments
from algorithms._stats import Fit, _cholesky, logistic_stats, total
from federation.errors import FitError

TOLERANCE = 1e-5
"""Newton stops when no coefficient would move by this much (in its predictor's SD units)."""
ARMIJO = 1e-4
SEPARATED = 10.0
"""A slope beyond this many log-odds per standard deviation of its predictor is separation."""
_MIN_STEP = 2.0**-40

Sums = Mapping[str, Any]
"""n, h (X'WX), g (X'(y - p)) and q (log-likelihood) at one beta, summed over whoever fits."""


class _Separation(Exception):
    """The unaugmented fit ran off: its Hessian vanished along the way."""


@dataclass(frozen=True)
class _Point:
    beta_c: np.ndarray
    h: np.ndarray
    g: np.ndarray
    q: float
    h_raw: np.ndarray


@dataclass(frozen=True)
class _Pseudo:
    """The augmentation's rows in centred coordinates (over the kept columns), y and weight."""

    x: np.ndarray
    y: np.ndarray
    weight: float


def pseudo_rows(moments: Moments) -> _Pseudo | None:
    """White, Daniel and Royston's rows from the pooled means and SDs (None: no predictor)."""
    slopes = moments.kept[:-1]
    p = slopes.size
    if p == 0:
        return None
    sd = moments.sd[slopes]
    rows = []
    ys = []
    for position in range(p):
        for y in (0.0, 1.0):
            for sign in (0.5, -0.5):
                row = np.zeros(p + 1)
                row[position] = sign * sd[position]
                row[-1] = 1.0
                rows.append(row)
                ys.append(y)
    return _Pseudo(x=np.array(rows), y=np.array(ys), weight=(p + 1) / (4.0 * p))


def _pseudo_sums(pseudo: _Pseudo, beta_c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    eta = pseudo.x @ beta_c
    mu = expit(eta)
    w = pseudo.weight
    h = w * (pseudo.x * (mu * (1.0 - mu))[:, None]).T @ pseudo.x
    g = w * pseudo.x.T @ (pseudo.y - mu)
    q = w * float(pseudo.y @ eta - np.logaddexp(0.0, eta).sum())
    return h, g, q


def newton(
    *, start: np.ndarray, ridge: float, max_iter: int, names: Sequence[str], target: str
) -> Generator[np.ndarray, Sums, Fit]:
    """Penalised Newton with backtracking; yields each beta to evaluate, returns the fit (see
    the module's docstring). The first beta's sums must carry ``sums`` and ``squares``."""
    start = np.array(start, dtype=np.float64)
    first = yield start
    n = int(first["n"])
    if n == 0:
        raise FitError(f"target '{target}': no row has it and every predictor observed")
    moments = Moments.of(n, first["sums"], first["squares"], names)
    kept_names = [names[int(j)] for j in moments.kept]
    penalty = moments.penalty(ridge)
    scale = moments.sd[moments.kept]

    def point(beta_c: np.ndarray, sums: Sums, pseudo: _Pseudo | None) -> _Point:
        if int(sums["n"]) != n:
            raise FitError(f"target '{target}': the rows changed during the fit")
        h_raw = np.asarray(sums["h"], dtype=np.float64)
        h = moments.centre_matrix(h_raw)
        g = moments.centre_vector(sums["g"])
        q = float(sums["q"])
        if pseudo is not None:
            h_aug, g_aug, q_aug = _pseudo_sums(pseudo, beta_c)
            h, g, q = h + h_aug, g + g_aug, q + q_aug
        return _Point(
            beta_c=beta_c,
            h=h + np.diag(penalty),
            g=g - penalty * beta_c,
            q=q - float(penalty @ beta_c**2) / 2.0,
            h_raw=h_raw,
        )

    def climb(
        current: _Point, pseudo: _Pseudo | None
    ) -> Generator[np.ndarray, Sums, tuple[_Point, int, bool]]:
        iterations = 0
        while iterations < max_iter:
            try:
                chol = _cholesky(current.h, names=kept_names, target=target)
            except FitError:
                if pseudo is None and iterations > 0:
                    raise _Separation from None
                raise
            direction = cho_solve((chol, True), current.g)
            # The Newton step is the estimated distance to the optimum: stop when it is small.
            # (H and g at the accepted point came with it, so this costs no evaluation.)
            if np.max(np.abs(direction) * scale) < TOLERANCE:
                return current, iterations, True
            slope = float(direction @ current.g)
            # Q sums thousands of terms: gains below its rounding error cannot be seen, so they
            # count as met (else a step that is right would be halved for no reason).
            rounding = 1e-12 * (1.0 + abs(current.q))
            step = 1.0
            while True:
                beta_c = current.beta_c + step * direction
                candidate = point(beta_c, (yield moments.to_original(beta_c)), pseudo)
                if candidate.q - current.q >= ARMIJO * slope * step - rounding:
                    break
                step /= 2.0
                if step < _MIN_STEP or np.max(np.abs(step * direction) * scale) < TOLERANCE:
                    return current, iterations, False  # no ascent found: not converged
            iterations += 1
            current = candidate
            if pseudo is None and _runs_off(current.beta_c, scale):
                raise _Separation
        return current, iterations, False

    final: _Point | None = None
    try:
        initial = point(moments.to_centred(start), first, None)
        try:
            final, iterations, converged = yield from climb(initial, None)
        except FitError:
            if not np.any(start):
                raise  # singular at beta = 0: collinear predictors, a clear error
            # Singular at a warm start (the last cycle's separated optimum): start again at 0.
            zero = np.zeros(moments.kept.size)
            initial = point(zero, (yield moments.to_original(zero)), None)
            final, iterations, converged = yield from climb(initial, None)
        separated = _runs_off(final.beta_c, scale)
    except _Separation:
        separated = True
    pseudo = pseudo_rows(moments) if separated else None
    if pseudo is not None:
        zero = np.zeros(moments.kept.size)
        initial = point(zero, (yield moments.to_original(zero)), pseudo)
        final, iterations, converged = yield from climb(initial, pseudo)
    if final is None:
        raise FitError(
            f"target '{target}': the fit diverges: no predictor separates the rows, so one value "
            "of the target is (nearly) never observed"
        )
    chol = _cholesky(final.h, names=kept_names, target=target)
    beta = moments.to_original(final.beta_c)
    matrix = final.h_raw + np.diag(moments.full_penalty(ridge))
    return Fit(
        kind="logistic",
        n=n,
        beta=beta,
        matrix=matrix,
        chol=chol,
        moments=moments,
        iterations=iterations,
        converged=converged,
        augmented=pseudo is not None,
    )


def _runs_off(beta_c: np.ndarray, scale: np.ndarray) -> bool:
    """A slope beyond ``SEPARATED`` log-odds per SD of its predictor."""
    return bool(np.max(np.abs(beta_c[:-1] * scale[:-1]), initial=0.0) > SEPARATED)


async def fit_logistic(
    evaluate: Callable[[np.ndarray, bool], Awaitable[Mapping[str, Mapping[str, Any]]]],
    *,
    start: np.ndarray,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
) -> Fit:
    """The pooled logistic fit: each evaluation is one ask of every participant, the first one
    asking for the design's moments too (``evaluate(beta, moments)``).

    A site evaluates a candidate and returns H, g and Q together, so an accepted step costs one
    round trip.
    """
    steps = newton(start=start, ridge=ridge, max_iter=max_iter, names=names, target=target)
    beta = next(steps)
    first = True
    while True:
        replies = await evaluate(beta, first)
        keys = ("n", "h", "g", "q", "sums", "squares") if first else ("n", "h", "g", "q")
        first = False
        sums = {key: total(replies, key) for key in keys}
        try:
            beta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit


def fit_own_logistic(
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
    """A logistic fit on one participant's rows alone, with the penalty of its own rows.

    ``offset`` adds a linear term offset'beta to the log-likelihood (the gradient correction
    of a surrogate likelihood); ``start`` warm-starts Newton.
    """
    steps = newton(
        start=np.zeros(z.shape[1] - 1) if start is None else start,
        ridge=ridge,
        max_iter=max_iter,
        names=names,
        target=target,
    )
    beta = next(steps)
    first = True
    while True:
        sums = logistic_stats(z, rows, column, beta, moments=first)
        first = False
        if offset is not None:
            sums = {**sums, "g": sums["g"] + offset, "q": sums["q"] + float(offset @ beta)}
        try:
            beta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit
