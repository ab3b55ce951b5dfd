"""Checks of whether the sites are alike enough for one imputation model, from aggregates only.

- ``equal_coefficients``: do the sites' own fits agree? A multivariate Wald test (Cochran's Q
  generalised to a vector) from each site's coefficients theta_k and their covariance V_k, as
  AVGMMI's and AVGMMICE's replies carry them (n_k theta_k and n_k^2 V_k; a Gaussian fit's V_k
  times its residual variance SSE_k / (n_k - p)). With W_k = V_k^-1 over the coefficients the
  site estimates, theta* = (sum W_k)^-1 sum W_k theta_k and
  Q = sum_k (theta_k - theta*)' W_k (theta_k - theta*), chi-squared with
  sum_k rank(W_k) - rank(sum W_k) degrees of freedom when every site has the same coefficients.
  Each coefficient also gets its own Cochran's Q (inverse-variance weights, K - 1 df), which
  names what differs. The test rejects at 5% on the joint Q; the warning then names the
  coefficients whose own Q rejects at 5% (or the most different one). In a job with
  ``site_effect=intercept`` the intercepts (and thresholds) may differ by design: only the
  slopes are compared. A pooled Newton fit gives each site's one-step estimate from the pooled
  fit, theta + H_k^-1 g_k with covariance H_k^-1, from the H_k and g_k it sent.
- ``covariate_means``: does central look like the pool? The standardised difference of each
  predictor's mean at central from its pooled mean over every participant,
  (mean_central - mean_pooled) / sd_pooled, from central's own column sums and the summed
  column sums and squares; more than :data:`SHIFT_LIMIT` on any predictor is a warning (CSLMI
  solves central's own problem, corrected by the pooled gradient, and the correction is only
  to first order: its precision falls when central's covariates differ from the pool's).

Results are plain dicts for the report; ``warning`` is a plain sentence or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import chdtrc

LEVEL = 0.05
"""The test of equal coefficients rejects when its p-value is below this."""

SHIFT_LIMIT = 0.25
"""A standardised difference of a predictor's mean at central from the pooled mean beyond
this (a quarter of a pooled SD, the usual threshold for covariate balance, Stuart 2010) makes
CSLMI warn."""

INTERCEPT = "(intercept)"


def equal_coefficients(
    target: str,
    names: Sequence[str],
    fits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    site_intercepts: bool = False,
) -> dict[str, Any]:
    """The test of equal coefficients across sites, from each site's (theta_k, V_k).

    ``names`` name the coefficients; a coefficient a site left out (zero variance) is not
    compared for it. Sites whose V_k is not finite are left out. With fewer than two sites the
    result says so and has no statistic. With ``site_intercepts`` (the job's
    ``site_effect=intercept``: each site has its own intercept already) the intercepts are not
    compared, only the slopes."""
    usable: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for site, (theta, cov) in fits.items():
        theta, cov = np.asarray(theta, np.float64), np.asarray(cov, np.float64).copy()
        if not (np.isfinite(theta).all() and np.isfinite(cov).all()):
            continue
        if site_intercepts:
            free = [j for j, name in enumerate(names) if _is_level(name)]
            cov[free, :] = 0.0
            cov[:, free] = 0.0
        kept = np.flatnonzero(np.diag(cov) > 0)
        if kept.size:
            usable[site] = (theta, cov, kept)
    result: dict[str, Any] = {
        "test": "equal coefficients across sites: multivariate Wald test (Cochran's Q) of the "
        "sites' own fits",
        "sites": list(usable),
    }
    if len(usable) < 2:
        result.update(statistic=None, df=0, p_value=None, rejects=False, warning=None)
        result["note"] = "fewer than two sites have a fit of their own: nothing to compare"
        return result
    width = len(names)
    precision_sum = np.zeros((width, width))
    weighted_sum = np.zeros(width)
    precisions = {}
    ranks = 0
    for site, (theta, cov, kept) in usable.items():
        w = np.zeros((width, width))
        block = np.linalg.pinv(cov[np.ix_(kept, kept)], hermitian=True)
        w[np.ix_(kept, kept)] = block
        precisions[site] = w
        ranks += int(np.linalg.matrix_rank(block, hermitian=True))
        precision_sum += w
        weighted_sum += w @ theta
    common = np.linalg.pinv(precision_sum, hermitian=True) @ weighted_sum
    statistic = float(
        sum(
            (theta - common) @ precisions[site] @ (theta - common)
            for site, (theta, _, _) in usable.items()
        )
    )
    df = ranks - int(np.linalg.matrix_rank(precision_sum, hermitian=True))
    p_value = float(chdtrc(df, statistic)) if df > 0 else None
    per_coefficient = [
        _cochran(name, j, usable)
        for j, name in enumerate(names)
        if any(cov[j, j] > 0 for _, cov, _ in usable.values())
    ]
    rejects = p_value is not None and p_value < LEVEL
    result.update(
        statistic=statistic,
        df=df,
        p_value=p_value,
        rejects=rejects,
        coefficients=per_coefficient,
        warning=_differs_sentence(target, per_coefficient, site_intercepts) if rejects else None,
    )
    if site_intercepts:
        result["note"] = "each site has its own intercept (site_effect=intercept): slopes compared"
    return result


def _cochran(
    name: str, j: int, usable: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Cochran's Q of one coefficient over the sites that estimate it."""
    sites = [site for site, (_, cov, _) in usable.items() if cov[j, j] > 0]
    estimates = np.array([usable[site][0][j] for site in sites])
    weights = np.array([1.0 / usable[site][1][j, j] for site in sites])
    entry: dict[str, Any] = {
        "name": name,
        "estimates": dict(zip(sites, map(float, estimates), strict=True)),
    }
    if estimates.size < 2:
        return entry | {"q": None, "df": 0, "p_value": None}
    pooled = float(weights @ estimates / weights.sum())
    q = float(weights @ (estimates - pooled) ** 2)
    df = int(estimates.size - 1)
    return entry | {"q": q, "df": df, "p_value": float(chdtrc(df, q))}


def _differs_sentence(
    target: str, coefficients: Sequence[Mapping[str, Any]], site_intercepts: bool
) -> str:
    tested = [c for c in coefficients if c.get("p_value") is not None]
    differing = (
        sorted((c for c in tested if c["p_value"] < LEVEL), key=lambda c: float(c["p_value"]))
        or sorted(tested, key=lambda c: float(c["p_value"]))[:1]
    )
    advice = (
        "consider analysing sites separately"
        if site_intercepts
        else "consider site_effect=intercept, or analyse sites separately"
    )
    if len(differing) == 1:
        (only,) = differing
        return (
            f"{_what(only['name'], target)} seems to differ between sites "
            f"(p {_p(only['p_value'])}); {advice}"
        )
    parts = [_what(c["name"], target) + f" (p {_p(c['p_value'])})" for c in differing]
    return f"{_join(parts)} seem to differ between sites; {advice}"


def _is_level(name: str) -> bool:
    """An intercept (a categorical target's: one per level) or an ordinal threshold."""
    return name.startswith(INTERCEPT) or name.startswith("threshold ")


def _what(name: str, target: str) -> str:
    if name == INTERCEPT:
        return f"the level of {target} (its intercept, given the predictors)"
    if _is_level(name):
        return f"the level of {target} ({name}, given the predictors)"
    return f"the effect of {name} on {target}"


def _p(value: float) -> str:
    """ "= 0.035", or "< 0.001"."""
    return f"= {value:.2g}" if value >= 0.001 else "< 0.001"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def covariate_means(
    target: str,
    names: Sequence[str],
    *,
    central_n: int,
    central_sums: np.ndarray,
    n: int,
    sums: np.ndarray,
    squares: np.ndarray,
    algorithm: str = "CSLMI",
) -> dict[str, Any]:
    """Standardised differences of central's predictor means from the pooled ones (all
    participants, central included), over the predictors (not the intercept); the warning
    names ``algorithm``."""
    pooled_mean = np.asarray(sums, np.float64) / max(n, 1)
    variance = np.maximum(np.asarray(squares, np.float64) / max(n, 1) - pooled_mean**2, 0.0)
    central_mean = np.asarray(central_sums, np.float64) / max(central_n, 1)
    predictors: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        if name == INTERCEPT:
            continue
        sd = float(np.sqrt(variance[j]))
        difference = float((central_mean[j] - pooled_mean[j]) / sd) if sd > 0 else 0.0
        predictors.append(
            {
                "name": name,
                "central_mean": float(central_mean[j]),
                "pooled_mean": float(pooled_mean[j]),
                "pooled_sd": sd,
                "standardised_difference": difference,
            }
        )
    shifted = [p for p in predictors if abs(p["standardised_difference"]) > SHIFT_LIMIT]
    warning = None
    if shifted:
        listed = _join([f"{p['name']} ({p['standardised_difference']:+.2f} SD)" for p in shifted])
        warning = (
            f"target '{target}': central's mean of {listed} differs from the pooled mean by "
            f"more than {SHIFT_LIMIT} pooled SD; {algorithm} corrects central's own fit only "
            "to first order, so its imputations are less precise than the exact pooled fit's "
            "here while it reports that precision: prefer SIMI or SIMICE"
        )
    return {
        "test": "standardised difference of central's predictor means from the pooled means",
        "limit": SHIFT_LIMIT,
        "predictors": predictors,
        "shifted": [p["name"] for p in shifted],
        "warning": warning,
    }
