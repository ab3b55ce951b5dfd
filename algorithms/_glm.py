"""Site statistics of the Newton families beyond logistic: categorical, ordinal and Poisson.

Each function computes, over a site's selected rows in fixed-size row blocks (as
``_stats.logistic_stats`` does), the count n, the information matrix H (minus the Hessian of the
log-likelihood, positive semidefinite), the gradient g and the log-likelihood Q at a proposed
theta. Every one is a plain sum over rows, so the sums over any split of the rows equal the
pooled values. ``moments`` gives, once per fit, what the invariant penalty needs (n, the
design's column sums and sums of squares) and, for a target with levels, the rows at each level.

Layout: ``z`` is a site's (n, c + 1) matrix of its c columns and a trailing column of ones, as in
``_stats``; ``cols`` are the design's column indices (default: every other column, then the ones;
the ordinal design has no ones). A categorical or ordinal target holds level indices
0..K-1 (the job's level order); a Poisson target holds counts 0, 1, 2, ...

Parameters, as one vector theta:
- poisson: beta, one per design column (log link: mean = exp(x'beta)).
- categorical: B, p x (K-1), one column per level but the first (the reference), stored class
  by class: theta[k*p:(k+1)*p] = B[:, k]. P(y = 0) is proportional to 1, P(y = k) to
  exp(x'B[:, k-1]).
- ordinal: (beta, zeta), beta one per design column (no intercept), zeta the K-1 thresholds,
  increasing: P(y <= k) = sigmoid(zeta_k - x'beta), as MASS::polr. The thresholds are used as
  they are (not as log-increments): the log-likelihood is concave in (beta, zeta) jointly
  (Pratt 1981), so H is positive semidefinite everywhere and Newton is well behaved; a
  candidate whose thresholds are not increasing lies outside the model and is never asked of
  a site (central halves the step first).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.special import expit, gammaln

from federation.errors import SiteRefused

BLOCK_ROWS = 65_536
"""Rows per block: bounds the temporary memory of one message."""

SATURATED = 1e-10
"""A row whose fitted probability of its own observed level is within this of 1 is saturated:
the fit is (near) separating it. Central reports separation when any row is."""

LOG_MEAN_LIMIT = 300.0
"""A Poisson candidate with a fitted log-mean above this (a mean above 1e130) has a
log-likelihood below -1e130: the site reports the overflow and central rejects the step."""

FAMILIES = ("categorical", "ordinal", "poisson")


def design(z: np.ndarray, column: int, family: str) -> np.ndarray:
    """Default design columns of target ``column``: every other column, then the ones (last);
    without the ones for ``ordinal``, whose thresholds are its intercepts."""
    cols = np.array([c for c in range(z.shape[1]) if c != column], dtype=np.intp)
    return cols[:-1] if family == "ordinal" else cols


def parameter_count(family: str, p: int, levels: int) -> int:
    """Length of theta for a design of p columns and a target of ``levels`` levels."""
    if family == "poisson":
        return p
    if family == "categorical":
        return p * (levels - 1)
    if family == "ordinal":
        return p + levels - 1
    raise ValueError(f"unknown family {family!r}")


def _blocks(
    z: np.ndarray, rows: np.ndarray | None, cols: np.ndarray, column: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (X, y) for each block of the selected rows."""
    for start in range(0, z.shape[0], BLOCK_ROWS):
        block = z[start : start + BLOCK_ROWS]
        if rows is not None:
            block = block[rows[start : start + BLOCK_ROWS]]
        if block.shape[0]:
            yield block[:, cols], block[:, column]


def level_values(levels: np.ndarray | int) -> np.ndarray:
    """The level values in order: as given, or 0..K-1 for a count K."""
    if isinstance(levels, int | np.integer):
        return np.arange(int(levels), dtype=np.float64)
    return np.asarray(levels, dtype=np.float64)


def _codes(y: np.ndarray, family: str, levels: np.ndarray | int, column: int) -> np.ndarray:
    """The target's values as level indices 0..K-1 (the position of each value in the job's
    level list) or counts, or a refusal when one is not a level / a count."""
    if family == "poisson":
        codes = y.astype(np.int64)
        bad = ~np.isfinite(y) | (y < 0) | (codes != y)
        what = "a count (an integer >= 0)"
    else:
        values = level_values(levels)
        codes = np.searchsorted(values, y).astype(np.int64)
        inside = np.minimum(codes, values.size - 1)
        bad = ~np.isfinite(y) | (codes >= values.size) | (values[inside] != y)
        what = "a level of the job (" + ", ".join(f"{v:g}" for v in values) + ")"
    if bad.any():
        raise SiteRefused(
            f"column {column + 1}: {int(bad.sum())} observed value(s) are not {what} "
            f"({family} target)"
        )
    return codes


def moments(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    cols: np.ndarray,
    *,
    family: str,
    levels: np.ndarray | int = 0,
) -> dict[str, Any]:
    """n, the design's column sums and sums of squares (the penalty's diagonal), and for a
    categorical or ordinal target the number of rows at each level."""
    p = cols.size
    sums = np.zeros(p)
    squares = np.zeros(p)
    counts = np.zeros(level_values(levels).size, dtype=np.int64)
    n = 0
    for x, y in _blocks(z, rows, cols, column):
        sums += x.sum(axis=0)
        squares += np.einsum("ij,ij->j", x, x)
        n += y.size
        if family != "poisson":
            counts += np.bincount(_codes(y, family, levels, column), minlength=counts.size)
    result: dict[str, Any] = {"n": n, "sums": sums, "squares": squares}
    if family != "poisson":
        result["counts"] = counts
    return result


# ---------------------------------------------------------------- poisson


def poisson_stats(
    z: np.ndarray, rows: np.ndarray | None, column: int, theta: np.ndarray, cols: np.ndarray
) -> dict[str, Any]:
    """n, X'diag(mu)X, X'(y - mu) and sum(y eta - mu - log y!) at beta = ``theta``.

    ``overflow`` counts rows whose log-mean passes LOG_MEAN_LIMIT; then H, g and Q are zero and
    meaningless (the candidate's likelihood is below -1e130, which central treats as a rejected
    step), so that nothing infinite travels.
    """
    p = cols.size
    h = np.zeros((p, p))
    g = np.zeros(p)
    q = 0.0
    n = 0
    overflow = 0
    for x, y in _blocks(z, rows, cols, column):
        counts = _codes(y, "poisson", 0, column)
        eta = x @ theta
        n += y.size
        high = int(np.count_nonzero(eta > LOG_MEAN_LIMIT))
        if high or overflow:
            overflow += high
            continue
        mu = np.exp(eta)
        h += (x * mu[:, None]).T @ x
        g += x.T @ (y - mu)
        q += _poisson_q(y, eta, mu, counts)
    if overflow:
        return {"n": n, "h": np.zeros((p, p)), "g": np.zeros(p), "q": 0.0, "overflow": overflow}
    return {"n": n, "h": h, "g": g, "q": q, "overflow": 0}


def _poisson_q(y: np.ndarray, eta: np.ndarray, mu: np.ndarray, counts: np.ndarray) -> float:
    """A block's Poisson log-likelihood."""
    return float(y @ eta - mu.sum() - gammaln(counts + 1.0).sum())


def poisson_loglik(
    z: np.ndarray, rows: np.ndarray | None, column: int, theta: np.ndarray, cols: np.ndarray
) -> tuple[float, int]:
    """Q at beta = ``theta`` and the rows whose log-mean overflows (``poisson_stats``'s Q,
    the same sums in the same order, without H and g)."""
    q = 0.0
    overflow = 0
    for x, y in _blocks(z, rows, cols, column):
        counts = _codes(y, "poisson", 0, column)
        eta = x @ theta
        high = int(np.count_nonzero(eta > LOG_MEAN_LIMIT))
        if high or overflow:
            overflow += high
            continue
        q += _poisson_q(y, eta, np.exp(eta), counts)
    return (0.0, overflow) if overflow else (q, 0)


# ---------------------------------------------------------------- categorical


def softmax_with_reference(eta: np.ndarray) -> np.ndarray:
    """Row-wise probabilities of K levels from the (m, K-1) linear predictors of levels 1..K-1,
    level 0 having predictor 0; computed by log-sum-exp, so no eta overflows."""
    full = np.concatenate([np.zeros((eta.shape[0], 1)), eta], axis=1)
    full -= full.max(axis=1, keepdims=True)
    np.exp(full, out=full)
    full /= full.sum(axis=1, keepdims=True)
    return full


def categorical_stats(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> dict[str, Any]:
    """n, H, g and Q of the multinomial logit at B = ``theta`` (class by class), and the
    number of saturated rows (fitted probability of the observed level within SATURATED of 1).

    With P the (m, K-1) probabilities of levels 1..K-1 and Y their 0/1 indicators:
    g = vec(X'(Y - P)), H block (k, l) = X' diag(P_k (delta_kl - P_l)) X,
    Q = sum_i (eta_i[y_i] - log(1 + sum_k exp(eta_ik))).
    """
    values = level_values(levels)
    count = values.size
    p = cols.size
    classes = count - 1
    beta = theta.reshape(classes, p).T
    h = np.zeros((classes * p, classes * p))
    g = np.zeros((classes, p))
    q = 0.0
    n = 0
    saturated = 0
    for x, y in _blocks(z, rows, cols, column):
        codes = _codes(y, "categorical", values, column)
        m = codes.size
        full, lse, block_q = _categorical_q(x @ beta, codes)
        prob = np.exp(full - lse[:, None])  # (m, K), every entry computed without overflow
        q += block_q
        indicator = np.zeros((m, count))
        indicator[np.arange(m), codes] = 1.0
        g += (indicator[:, 1:] - prob[:, 1:]).T @ x
        weighted = (prob[:, 1:, None] * x[:, None, :]).reshape(m, classes * p)
        h -= weighted.T @ weighted
        for k in range(classes):
            block = slice(k * p, (k + 1) * p)
            h[block, block] += (x * prob[:, k + 1, None]).T @ x
        others = prob.sum(axis=1) - prob[np.arange(m), codes]
        saturated += int(np.count_nonzero(others < SATURATED))
        n += m
    return {"n": n, "h": h, "g": g.ravel(), "q": q, "saturated": saturated}


def _categorical_q(eta: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A block's linear predictors with level 0's zero, their log-sum-exp per row, and its
    multinomial log-likelihood."""
    m = codes.size
    full = np.concatenate([np.zeros((m, 1)), eta], axis=1)
    top = full.max(axis=1)
    lse = top + np.log(np.exp(full - top[:, None]).sum(axis=1))
    return full, lse, float(full[np.arange(m), codes].sum() - lse.sum())


def categorical_loglik(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> float:
    """Q of the multinomial logit at B = ``theta`` (``categorical_stats``'s Q, the same sums
    in the same order, without H and g)."""
    values = level_values(levels)
    beta = theta.reshape(values.size - 1, cols.size).T
    q = 0.0
    for x, y in _blocks(z, rows, cols, column):
        q += _categorical_q(x @ beta, _codes(y, "categorical", values, column))[2]
    return q


# ---------------------------------------------------------------- ordinal


def _log_interval(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """log(F(upper) - F(lower)) for the logistic F, lower < upper (either may be infinite):
    F(b) - F(a) = F(b) (1 - F(a)) (1 - exp(a - b)), each factor's log computed stably."""
    with np.errstate(invalid="ignore"):
        gap = upper - lower  # inf when a bound is infinite; never nan (lower < upper)
    result: np.ndarray = (
        -np.logaddexp(0.0, -upper) - np.logaddexp(0.0, lower) + np.log(-np.expm1(-gap))
    )
    return result


def ordinal_stats(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> dict[str, Any]:
    """n, H, g and Q of the proportional-odds model at theta = (beta, zeta), and the number of
    saturated rows. ``zeta`` must be strictly increasing (central never asks otherwise).

    For a row at level k, b = zeta_k - x'beta (+inf for the last level) and
    a = zeta_{k-1} - x'beta (-inf for the first); l = log(F(b) - F(a)). With f = F(1 - F),
    u = 1 / (exp(b - a) - 1) and v = u (1 + u):
    dl/db = 1 - F(b) + u, dl/da = -F(a) - u,
    d2l/db2 = -f(b) - v, d2l/da2 = -f(a) - v, d2l/da db = v,
    and b, a depend on beta through -x, so the beta-beta block is -x x' (f(a) + f(b)).
    """
    values = level_values(levels)
    count = values.size
    p = cols.size
    beta, edges = _ordinal_parameters(theta, p, count)
    t = count - 1
    h_bb = np.zeros((p, p))
    h_bz = np.zeros((p, t))
    h_zz = np.zeros((t, t))
    g_b = np.zeros(p)
    g_z = np.zeros(t)
    q = 0.0
    n = 0
    saturated = 0
    for x, y in _blocks(z, rows, cols, column):
        codes = _codes(y, "ordinal", values, column)
        m = codes.size
        upper, lower, block_q = _ordinal_q(x @ beta, codes, edges)
        q += block_q
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u = np.where(
                np.isfinite(upper) & np.isfinite(lower), 1.0 / np.expm1(upper - lower), 0.0
            )
        v = u * (1.0 + u)
        f_up = expit(upper) * expit(-upper)  # 0 at +-inf
        f_lo = expit(lower) * expit(-lower)
        d_up = expit(-upper) + u
        d_lo = -expit(lower) - u
        g_b -= x.T @ (d_up + d_lo)
        g_z += np.bincount(codes, d_up, minlength=count)[:t]
        g_z += np.bincount(codes, d_lo, minlength=count)[1:]
        h_bb += (x * (f_up + f_lo)[:, None]).T @ x
        touch = np.zeros((m, count + 1))  # column k + 1 gathers the weight on zeta_k
        touch[np.arange(m), codes + 1] += f_up
        touch[np.arange(m), codes] += f_lo
        h_bz -= x.T @ touch[:, 1:count]
        diagonal = np.bincount(codes, f_up + v, minlength=count)[:t]
        diagonal += np.bincount(codes, f_lo + v, minlength=count)[1:]
        h_zz[np.diag_indices(t)] += diagonal
        between = np.bincount(codes, v, minlength=count)[1:t]  # rows at levels 1..K-2
        h_zz[np.arange(t - 1), np.arange(1, t)] -= between
        h_zz[np.arange(1, t), np.arange(t - 1)] -= between
        others = expit(lower) + expit(-upper)  # F(a) + 1 - F(b)
        saturated += int(np.count_nonzero(others < SATURATED))
        n += m
    h = np.block([[h_bb, h_bz], [h_bz.T, h_zz]])
    return {"n": n, "h": h, "g": np.concatenate([g_b, g_z]), "q": q, "saturated": saturated}


def _ordinal_parameters(theta: np.ndarray, p: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The slopes and the thresholds with -inf and +inf at either end; the thresholds must be
    strictly increasing (central never asks otherwise)."""
    beta, zeta = theta[:p], theta[p:]
    if zeta.size != count - 1 or np.any(np.diff(zeta) <= 0.0):
        raise ValueError("ordinal thresholds must be strictly increasing")
    return beta, np.concatenate([[-np.inf], zeta, [np.inf]])


def _ordinal_q(
    eta: np.ndarray, codes: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """A block's distances to each row's upper and lower threshold, and its log-likelihood."""
    upper = edges[codes + 1] - eta
    lower = edges[codes] - eta
    return upper, lower, float(_log_interval(upper, lower).sum())


def ordinal_loglik(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> float:
    """Q of the proportional-odds model at theta = (beta, zeta) (``ordinal_stats``'s Q, the
    same sums in the same order, without H and g)."""
    values = level_values(levels)
    beta, edges = _ordinal_parameters(theta, cols.size, values.size)
    q = 0.0
    for x, y in _blocks(z, rows, cols, column):
        q += _ordinal_q(x @ beta, _codes(y, "ordinal", values, column), edges)[2]
    return q


# ---------------------------------------------------------------- third derivatives
#
# A warm Newton start's T = -Q''' (``_newton.third_derivatives``), summed over the rows in
# p x p(p+1)/2 blocks of weighted x x x by numpy's own einsum loops: a BLAS product of these
# shapes makes OpenBLAS start its threads, which on a loaded machine cost 0.1 s a call.


def _lse_third(prob: np.ndarray, k: int, l_: int, m: int) -> np.ndarray:
    """Each row's third derivative of log(1 + sum exp(eta)) in eta_k, eta_l, eta_m, from the
    probabilities ``prob`` of levels 1..K-1: d_kl d_km P_k - d_kl P_k P_m - d_km P_k P_l -
    d_lm P_k P_l + 2 P_k P_l P_m."""
    pk, pl, pm = prob[:, k], prob[:, l_], prob[:, m]
    third: np.ndarray = 2.0 * pk * pl * pm
    if k == l_:
        third -= pk * pm
    if k == m:
        third -= pk * pl
    if l_ == m:
        third -= pk * pl
    if k == l_ == m:
        third += pk
    return third


def categorical_third(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> np.ndarray:
    """T = -Q''' of the multinomial logit at B = ``theta``, t x t x t (t = (K-1)p). A row's
    log-likelihood is eta[y] - lse(0, eta), eta_k = x'B[:, k], so the block of classes
    (k, l, m) is sum_i kappa_klm x x x with kappa the third derivatives of lse
    (:func:`_lse_third`): one p x p(p+1)/2 sum for each k <= l <= m, the same block for every
    order of the three classes."""
    classes = level_values(levels).size - 1
    p = cols.size
    beta = theta.reshape(classes, p).T
    first, second = np.triu_indices(p)
    triples = [
        (k, l_, m) for k in range(classes) for l_ in range(k, classes) for m in range(l_, classes)
    ]
    sums = np.zeros((len(triples), p, first.size))
    for x, _ in _blocks(z, rows, cols, column):
        prob = softmax_with_reference(x @ beta)[:, 1:]
        pairs = x[:, first] * x[:, second]
        for j, triple in enumerate(triples):
            weighted = x * _lse_third(prob, *triple)[:, None]
            sums[j] += np.einsum("ia,ip->ap", weighted, pairs)
    t = classes * p
    out = np.zeros((t, t, t))
    for j, triple in enumerate(triples):
        block = np.zeros((p, p, p))
        block[:, first, second] = sums[j]
        block[:, second, first] = sums[j]
        for k, l_, m in set(itertools.permutations(triple)):
            out[k * p : (k + 1) * p, l_ * p : (l_ + 1) * p, m * p : (m + 1) * p] = block
    return out


def ordinal_third(
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int,
) -> np.ndarray:
    """T = -Q''' of the proportional-odds model at (beta, zeta), t x t x t (t = p + K - 1).
    A row's log-likelihood is l(b, a) = log F(b) + log(1 - F(a)) + log(1 - exp(a - b)) with
    b = zeta_k - x'beta and a = zeta_{k-1} - x'beta (``ordinal_stats``); with u, v as there and
    w = v (1 + 2u), kappa = -l''' is A = f(b)(1 - 2F(b)) - w in bbb, B = f(a)(1 - 2F(a)) + w in
    aaa, w in bba and -w in baa (in every order), along (-x, e_k) for b and (-x, e_{k-1}) for
    a. Summed block by block: beta^3 is -sum (A + B) x x x; beta beta zeta_j sums x x weighed
    by A + w over the rows whose b is at zeta_j and by B - w over those whose a is, beta zeta_j
    zeta_j minus the same of x, zeta_j^3 A and B, and a row with both bounds adds w to
    zeta_k zeta_k zeta_{k-1} and -w to zeta_k zeta_{k-1} zeta_{k-1} (in every order)."""
    values = level_values(levels)
    count = values.size
    p = cols.size
    beta, zeta = theta[:p], theta[p:]
    if zeta.size != count - 1 or np.any(np.diff(zeta) <= 0.0):
        raise ValueError("ordinal thresholds must be strictly increasing")
    edges = np.concatenate([[-np.inf], zeta, [np.inf]])
    first, second = np.triu_indices(p)
    cubes = np.zeros((p, first.size))
    bbz = np.zeros((first.size, count - 1))  # beta_a beta_b zeta_j, over the pairs a <= b
    bzz = np.zeros((p, count - 1))  # beta_a zeta_j zeta_j (zeta_j zeta_k: 0 for j != k)
    zzz = np.zeros((count - 1, count - 1, count - 1))
    for x, y in _blocks(z, rows, cols, column):
        codes = _codes(y, "ordinal", values, column)
        eta = x @ beta
        upper = edges[codes + 1] - eta
        lower = edges[codes] - eta
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u = np.where(
                np.isfinite(upper) & np.isfinite(lower), 1.0 / np.expm1(upper - lower), 0.0
            )
        w = u * (1.0 + u) * (1.0 + 2.0 * u)
        a = expit(upper) * expit(-upper) * (1.0 - 2.0 * expit(upper)) - w
        b = expit(lower) * expit(-lower) * (1.0 - 2.0 * expit(lower)) + w
        pairs = x[:, first] * x[:, second]
        # a row touches the thresholds of its b (zeta_k) and its a (zeta_{k-1}) only, so the
        # blocks with thresholds are sums by level
        cubes -= np.einsum("ia,ip->ap", x * (a + b)[:, None], pairs)
        for j in range(count - 1):
            for rows_j, cube, square in ((codes == j, a, a + w), (codes == j + 1, b, b - w)):
                bbz[:, j] += np.einsum("ip,i->p", pairs[rows_j], square[rows_j])
                bzz[:, j] -= np.einsum("ia,i->a", x[rows_j], square[rows_j])
                zzz[j, j, j] += float(cube[rows_j].sum())
            if j + 1 < count - 1:  # rows at level j + 1: b at zeta_{j+1}, a at zeta_j
                both = float(w[codes == j + 1].sum())
                for k, l_, m in set(itertools.permutations((j + 1, j + 1, j))):
                    zzz[k, l_, m] += both
                for k, l_, m in set(itertools.permutations((j + 1, j, j))):
                    zzz[k, l_, m] -= both
    t = p + count - 1
    out = np.zeros((t, t, t))
    block = np.zeros((p, p, p))
    block[:, first, second] = cubes
    block[:, second, first] = cubes
    out[:p, :p, :p] = block
    square = np.zeros((p, p, count - 1))
    square[first, second] = bbz
    square[second, first] = bbz
    out[:p, :p, p:] = square
    out[:p, p:, :p] = square.transpose(0, 2, 1)
    out[p:, :p, :p] = square.transpose(2, 0, 1)
    levels_at = np.arange(count - 1)
    out[:p, p + levels_at, p + levels_at] = bzz
    out[p + levels_at, :p, p + levels_at] = bzz.T
    out[p + levels_at, p + levels_at, :p] = bzz.T
    out[p:, p:, p:] = zzz
    return out


def family_third(
    family: str,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int = 0,
) -> np.ndarray:
    """T = -Q''' at ``theta`` of a categorical or ordinal target, t x t x t."""
    if family == "categorical":
        return categorical_third(z, rows, column, theta, cols, levels=levels)
    if family == "ordinal":
        return ordinal_third(z, rows, column, theta, cols, levels=levels)
    raise ValueError(f"no third derivatives here for family {family!r}")


def family_stats(
    family: str,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int = 0,
) -> dict[str, Any]:
    """The site statistics of ``family`` at ``theta`` (one function for a site's handler)."""
    if family == "poisson":
        return poisson_stats(z, rows, column, theta, cols)
    if family == "categorical":
        return categorical_stats(z, rows, column, theta, cols, levels=levels)
    if family == "ordinal":
        return ordinal_stats(z, rows, column, theta, cols, levels=levels)
    raise ValueError(f"unknown family {family!r}")


def family_loglik(
    family: str,
    z: np.ndarray,
    rows: np.ndarray | None,
    column: int,
    theta: np.ndarray,
    cols: np.ndarray,
    *,
    levels: np.ndarray | int = 0,
) -> tuple[float, int]:
    """Q of ``family`` at ``theta`` and the rows whose likelihood overflows (a line search's
    further candidates: their H and g are never used)."""
    if family == "poisson":
        return poisson_loglik(z, rows, column, theta, cols)
    if family == "categorical":
        return categorical_loglik(z, rows, column, theta, cols, levels=levels), 0
    if family == "ordinal":
        return ordinal_loglik(z, rows, column, theta, cols, levels=levels), 0
    raise ValueError(f"unknown family {family!r}")
