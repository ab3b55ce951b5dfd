"""Central side of the categorical, ordinal and Poisson fits: the pooled penalised Newton fit
over summed site statistics (``_glm``); the draw and the imputation are in ``_glm_draw``.

Penalty (ALGORITHMS.md revision 2): P = lambda * diag(C), C = X'X - n xbar xbar' per design
column, from the n, column sums and sums of squares every site sends with its first
evaluation. The ones column has C = 0, so intercepts (and the ordinal thresholds) are not
penalised; every slope is penalised by lambda times its predictor's pooled sum of squared
deviations, so units and offsets do not change the fit.

Newton: d = H^-1 g, m = d'g; backtracking from step 1, halving, accepting when
Q(theta + t d) - Q(theta) >= 1e-4 t m; stop when max|delta theta| < 1e-5 or after max_iter.

The fit carries U, upper triangular with U U' = H (the Cholesky factor of H taken from the last
row up), which the draw uses (see ``_glm_draw``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular

from algorithms._augmentation import pseudo_rows, pseudo_stats
from algorithms._glm import FAMILIES, parameter_count
from federation.errors import FitError

TOLERANCE = 1e-5
"""Newton stops when no parameter moves by this much."""

ARMIJO = 1e-4
"""A step t is accepted when Q gains at least ARMIJO * t * d'g."""

DEFAULT_RIDGE = 1e-5

DIVERGED = 15.0
"""A slope whose effect over one standard deviation of its predictor passes this (on the logit
or log scale: odds multiplied by 3e6) is taken as diverging: the fit separates."""

_MIN_STEP = 2.0**-40

Sums = Mapping[str, Any]


@dataclass(frozen=True)
class GlmFit:
    """A pooled fit of one target: theta, the penalised H at it and its upper factor U."""

    family: str
    n: int
    levels: int
    p: int
    theta: np.ndarray
    matrix: np.ndarray
    upper: np.ndarray
    penalty: np.ndarray
    iterations: int
    converged: bool
    separation: str | None
    q: float
    augmented: bool = False

    def coefficients(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Poisson: (beta, None); categorical: (B p x (K-1), None); ordinal: (beta, zeta)."""
        return split(self.theta, family=self.family, p=self.p, levels=self.levels)


def split(
    theta: np.ndarray, *, family: str, p: int, levels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """theta as the family's coefficients: see ``GlmFit.coefficients``."""
    if family == "categorical":
        return theta.reshape(levels - 1, p).T, None
    if family == "ordinal":
        return theta[:p], theta[p:]
    return theta, None


def parameter_names(family: str, names: Sequence[str], levels: Sequence[str]) -> list[str]:
    """A name for every entry of theta, for messages: ``x[level]``, ``threshold a|b``."""
    if family == "categorical":
        return [f"{name}[{level}]" for level in levels[1:] for name in names]
    if family == "ordinal":
        cuts = [f"threshold {a}|{b}" for a, b in zip(levels[:-1], levels[1:], strict=True)]
        return [*names, *cuts]
    return list(names)


def start(family: str, *, p: int, levels: int) -> np.ndarray:
    """The cold start: 0, and for ordinal thresholds at logit(k / K) (equal level shares)."""
    theta = np.zeros(parameter_count(family, p, levels))
    if family == "ordinal":
        shares = np.arange(1, levels) / levels
        theta[p:] = np.log(shares / (1.0 - shares))
    return theta


def penalty_diagonal(
    family: str, sums: Sums, *, ridge: float, p: int, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """lambda * C for every entry of theta (0 for intercepts and thresholds), and each design
    column's pooled standard deviation (0 for a constant column)."""
    n = float(sums["n"])
    column_sums = np.asarray(sums["sums"], dtype=np.float64)
    deviations = np.asarray(sums["squares"], dtype=np.float64) - column_sums**2 / n
    deviations = np.maximum(deviations, 0.0)
    sd = np.sqrt(deviations / n)
    per_column = ridge * deviations
    if family == "categorical":
        return np.tile(per_column, levels - 1), np.tile(sd, levels - 1)
    if family == "ordinal":
        zeros = np.zeros(levels - 1)
        return np.concatenate([per_column, zeros]), np.concatenate([sd, zeros])
    return per_column, sd


def in_model(family: str, theta: np.ndarray, p: int) -> bool:
    """Ordinal thresholds must increase; every other theta is inside the model."""
    return family != "ordinal" or bool(np.all(np.diff(theta[p:]) > 0.0))


def newton(
    family: str,
    *,
    p: int,
    levels: Sequence[str] = (),
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 100,
    names: Sequence[str],
    target: str,
    initial: np.ndarray | None = None,
    augmented: bool = False,
    moments: Sums | None = None,
) -> Generator[np.ndarray, Sums, GlmFit]:
    """Penalised Newton without I/O: yields each theta to evaluate and is sent back the summed
    statistics at it (the first sums also carry the moments, unless ``moments`` gives them);
    returns the fit. ``augmented`` adds the pseudo-rows of ``_augmentation`` to every
    evaluation (computed here: no site is asked for them)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    k = len(levels)
    if family != "poisson" and k < 3:
        raise FitError(f"target '{target}': a {family} target needs at least 3 levels, got {k}")
    labels = parameter_names(family, names, levels)
    theta = start(family, p=p, levels=k) if initial is None else np.array(initial, dtype=float)
    if not in_model(family, theta, p):
        raise FitError(f"target '{target}': the start's thresholds do not increase")

    first = yield theta
    n = int(first["n"])
    if n == 0:
        raise FitError(f"target '{target}': no row has it and every predictor observed")
    if moments is None:
        moments = first
    if family != "poisson":
        counts = np.asarray(moments["counts"])
        empty = [levels[int(i)] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise FitError(
                f"target '{target}': level(s) {', '.join(map(repr, empty))} never observed "
                "among the rows used; the model cannot estimate them: drop the level or merge it"
            )
    penalty, sd = penalty_diagonal(family, moments, ridge=ridge, p=p, levels=k)
    pseudo = pseudo_rows(moments, levels=k) if augmented else None

    def penalised(theta: np.ndarray, sums: Sums) -> tuple[np.ndarray, np.ndarray, float]:
        h = np.asarray(sums["h"], dtype=np.float64) + np.diag(penalty)
        g = np.asarray(sums["g"], dtype=np.float64) - penalty * theta
        q = float(sums["q"]) - float(penalty @ theta**2) / 2.0
        if pseudo is not None:
            extra = pseudo_stats(family, pseudo, theta, levels=k)
            h, g, q = h + extra["h"], g + extra["g"], q + float(extra["q"])
        return h, g, q

    def usable(sums: Sums) -> bool:
        return int(sums.get("overflow", 0)) == 0 and np.isfinite(float(sums["q"]))

    if not usable(first):
        raise FitError(f"target '{target}': the start point overflows; start from 0")
    h, g, q = penalised(theta, first)
    saturated = int(first.get("saturated", 0))
    iterations = 0
    converged = False
    while iterations < max_iter:
        factor = _factor(h, labels, target, saturated)
        direction = solve_triangular(factor.T, solve_triangular(factor, g, lower=False), lower=True)
        if np.max(np.abs(direction)) < TOLERANCE:
            converged = True
            break
        slope = float(direction @ g)
        # Q sums many terms: a gain below its rounding error cannot be seen, so it counts as
        # met (near the optimum the exact gain is below what float64 resolves).
        rounding = 1e-12 * (1.0 + abs(q))
        step = 1.0
        accepted: tuple[np.ndarray, Sums] | None = None
        while step >= _MIN_STEP:
            candidate = theta + step * direction
            if in_model(family, candidate, p):
                sums = yield candidate
                if usable(sums):
                    q_new = penalised(candidate, sums)[2]
                    if q_new - q >= ARMIJO * step * slope - rounding:
                        accepted = (candidate, sums)
                        break
            step /= 2.0
        if accepted is None:
            break  # no ascent along the Newton direction: not converged, and said so
        moved = float(np.max(np.abs(accepted[0] - theta)))
        theta, sums = accepted
        h, g, q = penalised(theta, sums)
        saturated = int(sums.get("saturated", 0))
        iterations += 1
        if moved < TOLERANCE:
            converged = True
            break

    upper = _factor(h, labels, target, saturated)
    return GlmFit(
        family=family,
        n=n,
        levels=k,
        p=p,
        theta=theta,
        matrix=h,
        upper=upper,
        penalty=penalty,
        iterations=iterations,
        converged=converged,
        separation=_separation(family, theta, sd, saturated, labels),
        q=q,
        augmented=augmented,
    )


class Separated(FitError):
    """The fit separates so far that H became singular: the fit cannot be drawn from as it is
    (ALGORITHMS.md: redo it with augmented pseudo-rows)."""


def _factor(h: np.ndarray, labels: Sequence[str], target: str, saturated: int) -> np.ndarray:
    """U of the penalised H; with saturated rows a singular H is separation, said so."""
    try:
        return _upper(h, names=labels, target=target)
    except FitError:
        if saturated:
            raise Separated(
                f"target '{target}': the fit separates ({saturated} row(s) fitted with "
                f"probability 1 for their observed level): {_collinear(h, labels)} "
                "and the information is singular"
            ) from None
        raise


def _separation(
    family: str, theta: np.ndarray, sd: np.ndarray, saturated: int, labels: Sequence[str]
) -> str | None:
    """Why the fit separates (rows fitted with probability ~1, or slopes diverging), or None."""
    if family == "poisson":
        return None
    effect = np.abs(theta) * sd  # 0 for intercepts, thresholds and constant columns
    diverging = [labels[int(i)] for i in np.flatnonzero(effect > DIVERGED)]
    reasons = []
    if saturated:
        reasons.append(f"{saturated} row(s) fitted with probability 1 for their observed level")
    if diverging:
        reasons.append("coefficients diverge: " + ", ".join(diverging))
    return "; ".join(reasons) or None


def total(replies: Mapping[str, Mapping[str, Any]], key: str) -> Any:
    """Sum one statistic over participants, in the job's participant order."""
    values = [reply[key] for reply in replies.values() if key in reply]
    result = values[0]
    for value in values[1:]:
        result = result + value
    return result


async def fit_glm(
    evaluate: Callable[[np.ndarray], Awaitable[Mapping[str, Mapping[str, Any]]]],
    family: str,
    *,
    p: int,
    levels: Sequence[str] = (),
    ridge: float = DEFAULT_RIDGE,
    max_iter: int = 100,
    names: Sequence[str],
    target: str,
    initial: np.ndarray | None = None,
    augment: bool = True,
) -> GlmFit:
    """The pooled fit: each evaluation is one ask of every participant, whose replies (n, h, g,
    q, and saturated / overflow; the first also n, sums, squares and counts) are summed.

    A categorical or ordinal fit that separates is redone from a cold start with the
    pseudo-rows of ``_augmentation`` (unless ``augment`` is False); the result then says
    ``augmented`` and keeps, in ``separation``, why the first fit was redone. The redo asks
    the sites for H, g and Q again, not for the moments.
    """
    options: dict[str, Any] = {
        "p": p,
        "levels": levels,
        "ridge": ridge,
        "max_iter": max_iter,
        "names": names,
        "target": target,
    }
    moments: dict[str, Any] = {}
    try:
        fit = await _drive(evaluate, newton(family, initial=initial, **options), moments)
    except Separated as error:
        if not augment:
            raise
        reason = str(error)
    else:
        if fit.separation is None or not augment or family == "poisson":
            return fit
        reason = fit.separation
    redo = newton(family, augmented=True, moments=moments, **options)
    augmented = await _drive(evaluate, redo, {})
    return replace(augmented, separation=reason)


async def _drive(
    evaluate: Callable[[np.ndarray], Awaitable[Mapping[str, Mapping[str, Any]]]],
    steps: Generator[np.ndarray, Sums, GlmFit],
    first: dict[str, Any],
) -> GlmFit:
    """Run ``steps``, one ask of every participant per theta; ``first`` is filled with the sums
    of the first evaluation."""
    theta = next(steps)
    while True:
        replies = await evaluate(theta)
        keys = {key for reply in replies.values() for key in reply}
        sums = {key: total(replies, key) for key in keys}
        if not first:
            first.update(sums)
        try:
            theta = steps.send(sums)
        except StopIteration as done:
            fit: GlmFit = done.value
            return fit


def _upper(matrix: np.ndarray, *, names: Sequence[str], target: str) -> np.ndarray:
    """U upper triangular with U U' = matrix, or a FitError naming what makes it singular."""
    reverse = matrix[::-1, ::-1]
    try:
        lower = np.linalg.cholesky(reverse)
    except np.linalg.LinAlgError:
        lower = None
    if lower is None or not np.all(np.isfinite(lower)) or _nearly_singular(lower):
        raise FitError(
            f"target '{target}': the system is singular: {_collinear(matrix, names)} "
            "among the rows used; set ridge > 0 or drop a column"
        )
    upper: np.ndarray = lower[::-1, ::-1]
    return upper


def _nearly_singular(chol: np.ndarray) -> bool:
    pivots = np.diag(chol) ** 2
    return bool(pivots.min() <= 1e-13 * pivots.max())


def _collinear(matrix: np.ndarray, names: Sequence[str]) -> str:
    """Name the parameters in the direction of the smallest eigenvalue."""
    _, vectors = np.linalg.eigh(matrix)
    weights = np.abs(vectors[:, 0])
    involved = [names[int(i)] for i in np.flatnonzero(weights > 0.1 * weights.max())]
    return "parameters " + ", ".join(f"'{n}'" for n in involved) + " are collinear or unbounded"
