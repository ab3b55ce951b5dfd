"""The one penalised Newton of every Newton method (logistic, categorical, ordinal, Poisson),
pooled or on one participant's rows (ALGORITHMS.md, "Newton fits"), with separation handled.

The steps are a generator without I/O: it yields each theta to evaluate and is sent the sums at
it (n, H the information, g the gradient, Q the log-likelihood; categorical and ordinal also the
rows fitted with probability ~1, Poisson the rows whose mean overflows; at the first theta also
the design's column sums and sums of squares, which set the penalty, and the rows at each
level). The same steps serve a pooled fit (each evaluation one ask of every participant) and a
site's own fit (a local computation). A :class:`Family` says what differs: the site statistics,
the layout of theta (``_design.Layout``), the cold start and which theta lie in the model.

Steps are taken in the centred coordinates of ``_design``, where the penalty is diagonal and the
convergence test (no parameter moves by ``TOLERANCE`` in units of its predictor's standard
deviation) does not depend on the data's units. The line search takes the first step t of 1,
1/2, 1/4, ... with the Armijo condition Q(theta + t d) - Q(theta) >= 1e-4 t d'g; a candidate
outside the model (ordinal thresholds that do not increase) or whose likelihood overflows is
passed over. With ``batch`` > 1 the generator yields up to ``batch`` candidates at once (one a
row) and is sent :func:`search`'s sums: every candidate's Q and H, g at the first, so a pooled
iteration costs one round trip when the full step is accepted; it then asks for the sums at an
accepted shorter step. The steps taken do not depend on ``batch``.

A warm start's first sums may carry the third derivatives there (``third``, from
:func:`third_derivatives`: every family, fits of at most ``THIRD_ORDER_WIDTH`` parameters); the
first step is then :func:`_third_order_step`'s, which lands within O(|d|^3) of the optimum
instead of Newton's O(|d|^2), so that a fit from the last cycle's optimum usually stops after
one step: its start and one line search, 2 round trips.

Separation (logistic, categorical, ordinal): when a slope runs off (beyond ``SEPARATED`` on the
logit scale per standard deviation of its predictor), the Hessian vanishes on the way there, or
rows are fitted with probability 1 for their level, the fit is redone from 0 with the pseudo-rows
of ``_augmentation`` and says it was augmented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve
from scipy.special import expit

from algorithms import _glm
from algorithms._augmentation import PseudoRows, pseudo_rows
from algorithms._design import Layout, Moments
from algorithms._stats import (
    Fit,
    _blocks,
    _cholesky,
    design,
    logistic_loglik,
    logistic_stats,
    total,
)
from federation.errors import FitError
from federation.replies import PAIRS_WIDTH

TOLERANCE = 1e-5
"""Newton stops when no parameter would move by this much (in its predictor's SD units)."""
ARMIJO = 1e-4
SEPARATED = 10.0
"""A slope beyond this many log-odds per standard deviation of its predictor is separation."""
_MIN_STEP = 2.0**-40
SEARCH = 4
"""Steps of the halving (1, 1/2, 1/4, 1/8) whose Q a pooled fit asks for in one request."""
THIRD_ORDER_WIDTH = PAIRS_WIDTH
"""A warm-started pooled fit of at most this many parameters (t: p for logistic and Poisson,
(K-1)p categorical, p - 1 + K - 1 ordinal) asks, with its first evaluation, for the third
derivatives there (``<family>_warm``, t x t(t+1)/2 numbers), so that its first step lands
within the tolerance of the optimum where a Newton step needs two."""

Sums = Mapping[str, Any]
"""n, h, g and q at one theta (and saturated, overflow, and at the first the moments), summed."""


@dataclass(frozen=True)
class Family:
    """What a Newton method's fit needs to know of its model."""

    name: str
    """logistic, categorical, ordinal or poisson."""

    @property
    def has_levels(self) -> bool:
        return self.name in ("categorical", "ordinal")

    @property
    def separates(self) -> bool:
        return self.name != "poisson"

    def size(self, p: int, levels: int) -> int:
        """Length of theta for a design of p columns (intercept included) and K levels."""
        if self.name == "categorical":
            return p * (levels - 1)
        if self.name == "ordinal":
            return p - 1 + levels - 1
        return p

    def layout(self, moments: Moments, levels: int) -> Layout:
        if self.name == "categorical":
            return Layout.linear(moments, groups=levels - 1)
        if self.name == "ordinal":
            return Layout.ordinal(moments, thresholds=levels - 1)
        return Layout.linear(moments)

    def start(self, p: int, levels: int) -> np.ndarray:
        """The cold start: 0, and ordinal thresholds at logit(k / K) (equal level shares)."""
        theta = np.zeros(self.size(p, levels))
        if self.name == "ordinal":
            shares = np.arange(1, levels) / levels
            theta[p - 1 :] = np.log(shares / (1.0 - shares))
        return theta

    def in_model(self, theta: np.ndarray, p: int) -> bool:
        """Ordinal thresholds must increase; every other theta is inside the model."""
        return self.name != "ordinal" or bool(np.all(np.diff(theta[p - 1 :]) > 0.0))

    def names(self, names: Sequence[str], levels: Sequence[float]) -> list[str]:
        """A name for every entry of theta, for messages: ``x[level]``, ``threshold a|b``."""
        shown = [_level(v) for v in levels]
        if self.name == "categorical":
            return [f"{name}[{level}]" for level in shown[1:] for name in names]
        if self.name == "ordinal":
            cuts = [f"threshold {a}|{b}" for a, b in zip(shown[:-1], shown[1:], strict=True)]
            return [*names[:-1], *cuts]
        return list(names)

    def stats(
        self,
        z: np.ndarray,
        rows: np.ndarray | None,
        column: int,
        theta: np.ndarray,
        *,
        levels: Sequence[float] = (),
        moments: bool = False,
    ) -> dict[str, Any]:
        """A participant's sums at ``theta`` over its selected rows; with ``moments`` (a fit's
        first evaluation) also its design's column sums and squares and rows per level."""
        if self.name == "logistic":
            return logistic_stats(z, rows, column, theta, moments=moments)
        cols = _glm.design(z, column, self.name)
        values = np.asarray(levels, dtype=np.float64)
        result = _glm.family_stats(self.name, z, rows, column, theta, cols, levels=values)
        if moments:
            extra = _glm.moments(
                z, rows, column, design(z, column), family=self.name, levels=values
            )
            result.update(sums=extra["sums"], squares=extra["squares"])
            if "counts" in extra:
                result["counts"] = extra["counts"]
        return result


def third_order(
    family: Family, start: np.ndarray | None, names: Sequence[str], levels: Sequence[float] = ()
) -> bool:
    """Whether a pooled fit from ``start`` asks for the third derivatives there: a warm start
    of a fit of at most ``THIRD_ORDER_WIDTH`` parameters (``names``: the design's columns)."""
    return start is not None and family.size(len(names), len(levels)) <= THIRD_ORDER_WIDTH


def third_derivatives(
    family: Family,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    *,
    levels: Sequence[float] = (),
) -> np.ndarray:
    """A participant's T = -Q''' over its selected rows (Q its log-likelihood), packed as
    T[a, (b, c)] over the pairs b <= c of theta's entries in ``np.triu_indices`` order:
    t x t(t+1)/2 numbers. Logistic and Poisson: T = sum kappa'''(x'theta) x x x; categorical
    and ordinal: ``_glm.family_third``. Zero where not finite (a Poisson mean that overflows:
    such a start is refused anyway)."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.size > THIRD_ORDER_WIDTH:
        raise FitError(
            f"third derivatives are sent for fits of at most {THIRD_ORDER_WIDTH} parameters; "
            f"this one has {theta.size}"
        )
    first, second = np.triu_indices(theta.size)
    if family.has_levels:
        cols = _glm.design(z, column, family.name)
        values = np.asarray(levels, dtype=np.float64)
        full = _glm.family_third(family.name, z, rows, column, theta, cols, levels=values)
        packed = full[:, first, second]
        return packed if np.isfinite(packed).all() else np.zeros_like(packed)
    cols = design(z, column)
    p = cols.size
    packed = np.zeros((p, first.size))
    for x, _ in _blocks(z, rows, cols, column):
        eta = x @ theta
        if family.name == "logistic":
            mu = expit(eta)
            weight = mu * (1.0 - mu) * (1.0 - 2.0 * mu)
        else:
            weight = np.exp(np.minimum(eta, _glm.LOG_MEAN_LIMIT))
        for a in range(p):  # p products the size of H's (one wide one makes BLAS thread)
            packed[a] += ((x * (weight * x[:, a])[:, None]).T @ x)[first, second]
    if not np.isfinite(packed).all():
        return np.zeros_like(packed)
    return packed


def _unpack(packed: np.ndarray) -> np.ndarray:
    """The symmetric p x p x p tensor that :func:`third_derivatives` packed."""
    p = packed.shape[0]
    first, second = np.triu_indices(p)
    full = np.zeros((p, p, p))
    full[:, first, second] = packed
    full[:, second, first] = packed
    return full


LOGISTIC = Family("logistic")
CATEGORICAL = Family("categorical")
ORDINAL = Family("ordinal")
POISSON = Family("poisson")


def _level(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class _Separation(Exception):
    """The unaugmented fit ran off: its Hessian vanished along the way."""


@dataclass(frozen=True)
class _Point:
    theta_c: np.ndarray
    h: np.ndarray
    g: np.ndarray
    q: float
    h_raw: np.ndarray
    saturated: int


def newton(
    family: Family,
    *,
    start: np.ndarray | None,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
    levels: Sequence[float] = (),
    batch: int = 1,
) -> Generator[np.ndarray, Sums, Fit]:
    """Penalised Newton with backtracking; yields each theta to evaluate, returns the fit (see
    the module's docstring). The first theta's sums must carry ``sums`` and ``squares`` (and
    ``counts`` for a target with levels). ``names`` are the design's columns, intercept last."""
    p = len(names)
    k = len(levels)
    if family.has_levels and k < 3:
        raise FitError(
            f"target '{target}': a {family.name} target needs at least 3 levels, got {k}"
        )
    cold = family.start(p, k if family.has_levels else 2)
    start = cold if start is None else np.array(start, dtype=np.float64)
    if start.size != cold.size or not family.in_model(start, p):
        start = cold
    labels = family.names(names, levels)
    first = yield start
    n = int(first["n"])
    if n == 0:
        raise FitError(f"target '{target}': no row has it and every predictor observed")
    if family.has_levels:
        counts = np.asarray(first["counts"])
        empty = [_level(levels[int(i)]) for i in np.flatnonzero(counts == 0)]
        if empty:
            raise FitError(
                f"target '{target}': level(s) {', '.join(empty)} never observed among the rows "
                "used; the model cannot estimate them: drop the level or merge it"
            )
    moments = Moments.of(n, first["sums"], first["squares"], names)
    layout = family.layout(moments, k)
    kept_names = [labels[int(j)] for j in layout.kept]
    penalty = layout.penalty(ridge)
    scale = layout.scale()
    slopes = layout.slopes()
    pseudo_levels = tuple(float(v) for v in range(max(k, 2)))

    def usable(sums: Sums) -> bool:
        return int(sums.get("overflow", 0)) == 0 and bool(np.isfinite(float(sums["q"])))

    def objective(theta_c: np.ndarray, q: float, pseudo: PseudoRows | None) -> float:
        """The penalised Q at theta_c from the participants' Q there (as ``point`` has it)."""
        if pseudo is not None:
            extra = family.stats(
                pseudo.z, None, pseudo.column, layout.to_original(theta_c), levels=pseudo_levels
            )
            q = q + pseudo.weight * float(extra["q"])
        return q - float(penalty @ theta_c**2) / 2.0

    def point(theta_c: np.ndarray, sums: Sums, pseudo: PseudoRows | None) -> _Point:
        if int(sums["n"]) != n:
            raise FitError(f"target '{target}': the rows changed during the fit")
        h_raw = np.asarray(sums["h"], dtype=np.float64)
        h, g, q = h_raw, np.asarray(sums["g"], dtype=np.float64), float(sums["q"])
        if pseudo is not None:
            extra = family.stats(
                pseudo.z, None, pseudo.column, layout.to_original(theta_c), levels=pseudo_levels
            )
            w = pseudo.weight
            h, g, q = h + w * extra["h"], g + w * extra["g"], q + w * float(extra["q"])
        return _Point(
            theta_c=theta_c,
            h=layout.centre_matrix(h) + np.diag(penalty),
            g=layout.centre_vector(g) - penalty * theta_c,
            q=q - float(penalty @ theta_c**2) / 2.0,
            h_raw=h_raw,
            saturated=int(sums.get("saturated", 0)),
        )

    def climb(
        current: _Point, pseudo: PseudoRows | None, third: np.ndarray | None = None
    ) -> Generator[np.ndarray, Sums, tuple[_Point, int, bool]]:
        """Newton from ``current``; with ``third`` (T at ``current``, centred) the first step
        is the third-order one of :func:`_third_order_step`."""
        iterations = 0
        while iterations < max_iter:
            try:
                chol = _cholesky(current.h, names=kept_names, target=target)
            except FitError:
                if family.separates and pseudo is None and (iterations > 0 or current.saturated):
                    raise _Separation from None
                raise
            direction = cho_solve((chol, True), current.g)
            # The Newton step is the estimated distance to the optimum: stop when it is small.
            # (H and g at the accepted point came with it, so this costs no evaluation.)
            if np.max(np.abs(direction) * scale) < TOLERANCE:
                return current, iterations, True
            if third is not None and iterations == 0:
                direction = _third_order_step(chol, current.g, direction, third, scale)
            slope = float(direction @ current.g)
            # Q sums thousands of terms: gains below its rounding error cannot be seen, so they
            # count as met (else a step that is right would be halved for no reason).
            rounding = 1e-12 * (1.0 + abs(current.q))
            step = 1.0
            candidate: _Point | None = None
            while candidate is None:
                # The next steps of the halving (1, 1/2, ...) inside the model, ``batch`` at most,
                # in one request: every Q, and H and g at the first.
                tried: list[tuple[float, np.ndarray, np.ndarray]] = []
                exhausted = False
                while len(tried) < batch:
                    theta_c = current.theta_c + step * direction
                    theta = layout.to_original(theta_c)
                    if family.in_model(theta, p):
                        tried.append((step, theta_c, theta))
                    step /= 2.0
                    if step < _MIN_STEP or np.max(np.abs(step * direction) * scale) < TOLERANCE:
                        exhausted = True
                        break
                if not tried:
                    return current, iterations, False  # no ascent found: not converged
                if len(tried) == 1:
                    sums = yield tried[0][2]
                    searched = [(sums["q"], sums.get("overflow", 0))]
                else:
                    sums = yield np.stack([theta for _, _, theta in tried])
                    searched = list(zip(sums["qs"], sums["unusable"], strict=False))
                for i, (tried_step, theta_c, theta) in enumerate(tried):
                    q_raw, bad = searched[i]
                    if int(bad) != 0 or not np.isfinite(float(q_raw)):
                        continue
                    q = objective(theta_c, float(q_raw), pseudo)
                    if q - current.q >= ARMIJO * slope * tried_step - rounding:
                        if i > 0:  # H and g came for the first candidate only
                            sums = yield theta
                        candidate = point(theta_c, sums, pseudo)
                        break
                if candidate is None and exhausted:
                    return current, iterations, False  # no ascent found: not converged
            iterations += 1
            current = candidate
            if family.separates and pseudo is None and _runs_off(current.theta_c, scale, slopes):
                raise _Separation
        return current, iterations, False

    def restart(pseudo: PseudoRows | None) -> Generator[np.ndarray, Sums, _Point]:
        zero = layout.to_centred(cold)
        sums = yield layout.to_original(zero)
        return point(zero, sums, pseudo)

    if not usable(first):
        raise FitError(f"target '{target}': the start point overflows")
    third = None
    if "third" in first:  # T at the start (third_derivatives), in centred kept coordinates
        third = _unpack(np.asarray(first["third"]))
        t = layout.transform()[:, layout.kept]
        for _ in range(3):  # T'[a, b, c] = sum T[i, j, k] t[i, a] t[j, b] t[k, c], axis by axis
            third = np.tensordot(third, t, axes=([0], [0]))
    final: _Point | None = None
    try:
        initial = point(layout.to_centred(start), first, None)
        try:
            final, iterations, converged = yield from climb(initial, None, third)
        except FitError:
            if np.array_equal(start, cold):
                raise  # singular at the cold start: collinear predictors, a clear error
            # Singular at a warm start (the last cycle's separated optimum): start again cold.
            initial = yield from restart(None)
            final, iterations, converged = yield from climb(initial, None)
        separated = family.separates and (
            _runs_off(final.theta_c, scale, slopes) or final.saturated > 0
        )
    except _Separation:
        separated = True
    pseudo = pseudo_rows(moments, levels=max(k, 2)) if separated else None
    if pseudo is not None:
        initial = yield from restart(pseudo)
        final, iterations, converged = yield from climb(initial, pseudo)
    if final is None:
        raise FitError(
            f"target '{target}': the fit diverges: no predictor separates the rows, so one value "
            "of the target is (nearly) never observed"
        )
    chol = _cholesky(final.h, names=kept_names, target=target)
    return Fit(
        kind=family.name,
        n=n,
        beta=layout.to_original(final.theta_c),
        matrix=final.h_raw + np.diag(layout.full_penalty(ridge)),
        chol=chol,
        moments=moments,
        iterations=iterations,
        converged=converged,
        augmented=pseudo is not None,
        layout=layout,
    )


def search(
    family: Family,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    thetas: np.ndarray,
    *,
    levels: Sequence[float] = (),
) -> dict[str, Any]:
    """A participant's sums at the first of ``thetas`` (one candidate a row) and, for every
    candidate, its Q (``qs``, 0 where unusable) and whether its likelihood overflows or is not
    finite (``unusable``), both padded with zeros to ``SEARCH``."""
    if thetas.ndim != 2 or not 1 <= thetas.shape[0] <= SEARCH:
        raise FitError(f"a line search takes 1 to {SEARCH} candidates, one a row")
    qs = np.zeros(SEARCH)
    unusable = np.zeros(SEARCH, dtype=np.int64)
    result = family.stats(z, rows, column, thetas[0], levels=levels)
    found = [(float(result["q"]), int(result.get("overflow", 0)))]
    if family.name == "logistic":  # Q alone, every candidate in one pass over the rows
        found += [(float(q), 0) for q in logistic_loglik(z, rows, column, thetas[1:])]
    else:  # Q alone: the other candidates' H and g are never used
        cols = _glm.design(z, column, family.name)
        values = np.asarray(levels, dtype=np.float64)
        found += [
            _glm.family_loglik(family.name, z, rows, column, theta, cols, levels=values)
            for theta in thetas[1:]
        ]
    for i, (q, overflow) in enumerate(found):
        if overflow or not np.isfinite(q):
            unusable[i] = 1
        else:
            qs[i] = q
    return {**result, "qs": qs, "unusable": unusable}


def _third_order_step(
    chol: np.ndarray, g: np.ndarray, newton: np.ndarray, third: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """The step d that zeroes the gradient's Taylor expansion to second order,
    g - H d - T[d, d]/2 = 0 (T the third derivatives, Q's being -T), by fixed point from the
    Newton step H^-1 g, which leaves out the T term and so misses the optimum by O(|d|^2): this
    one lands within O(|d|^3). The Newton step is kept where the correction does not settle,
    is more than half of it, or would not ascend; the line search and the convergence test (on
    the Newton step at the point reached) are those of every step."""
    step = newton
    for _ in range(4):
        step = newton - cho_solve((chol, True), third @ step @ step) / 2.0
    size = np.max(np.abs(newton) * scale)
    settled = newton - cho_solve((chol, True), third @ step @ step) / 2.0
    if (
        not np.all(np.isfinite(step))
        or np.max(np.abs(settled - step) * scale) > 1e-3 * size
        or np.max(np.abs(step - newton) * scale) > size / 2.0
        or float(step @ g) <= 0.0
    ):
        return newton
    return step


def _runs_off(theta_c: np.ndarray, scale: np.ndarray, slopes: np.ndarray) -> bool:
    """A slope beyond ``SEPARATED`` log-odds per SD of its predictor."""
    return bool(np.max(np.abs(theta_c[slopes] * scale[slopes]), initial=0.0) > SEPARATED)


async def fit_pooled(
    family: Family,
    evaluate: Callable[[np.ndarray, bool], Awaitable[Mapping[str, Mapping[str, Any]]]],
    *,
    start: np.ndarray | None,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
    levels: Sequence[float] = (),
    batch: int = 1,
) -> Fit:
    """The pooled fit: each evaluation is one ask of every participant (``evaluate(theta,
    first)``), the first one asking for the design's moments too; the replies are summed.

    With ``batch`` > 1 (the methods pass ``SEARCH``) a line search asks for Q at up to
    ``batch`` steps of the halving in one request (``theta`` then holds one candidate a row;
    the replies are :func:`search`'s) with H and g at the first, so an iteration whose full
    step is accepted costs one round trip, and one more when a shorter step is. The steps
    taken, and so the fit, are the same for every ``batch``.
    """
    steps = newton(
        family,
        start=start,
        ridge=ridge,
        max_iter=max_iter,
        names=names,
        target=target,
        levels=levels,
        batch=batch,
    )
    theta = next(steps)
    first = True
    while True:
        replies = await evaluate(theta, first)
        first = False
        keys = {key for reply in replies.values() for key in reply}
        sums = {key: total(replies, key) for key in keys}
        try:
            theta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit


def fit_own(
    family: Family,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    *,
    ridge: float,
    max_iter: int,
    names: Sequence[str],
    target: str,
    levels: Sequence[float] = (),
    start: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> Fit:
    """A fit on one participant's rows alone, with the penalty of its own rows.

    ``offset`` adds a linear term offset'theta to the log-likelihood (the gradient correction
    of a surrogate likelihood); ``start`` warm-starts Newton.
    """
    steps = newton(
        family,
        start=start,
        ridge=ridge,
        max_iter=max_iter,
        names=names,
        target=target,
        levels=levels,
    )
    theta = next(steps)
    first = True
    while True:
        sums = family.stats(z, rows, column, theta, levels=levels, moments=first)
        first = False
        if offset is not None:
            sums = {**sums, "g": sums["g"] + offset, "q": sums["q"] + float(offset @ theta)}
        try:
            theta = steps.send(sums)
        except StopIteration as done:
            fit: Fit = done.value
            return fit
