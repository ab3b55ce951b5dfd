"""Site-side handlers shared by the built-in algorithms: the aggregates each method asks for.

Every family's ``prepare`` leaves ``site.state["z"]`` (the site's rows as ``_stats`` lays them
out) and ``site.state["rows"][target]``: the rows a fit of that target uses (None: all of z).
The handlers answer with aggregates only; ``surrogate_fit`` runs at central alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms._stats import Fit, fit_own, gaussian_stats, logistic_stats, score
from federation.errors import FitError
from federation.site import SiteJob


def _rows(site: SiteJob, target: int) -> np.ndarray | None:
    rows: np.ndarray | None = site.state["rows"][target]
    return rows


def _kind(site: SiteJob, target: int) -> str:
    return next(t.type for t in site.targets if t.index == target)


def _own_fit(site: SiteJob, target: int, **options: Any) -> Fit:
    """A fit on this participant's rows alone; a failure says whose rows they are."""
    spec_target = next(t for t in site.targets if t.index == target)
    try:
        return fit_own(
            site.state["z"],
            _rows(site, target),
            target - 1,
            spec_target.type,
            ridge=float(site.params["ridge"]),
            max_iter=int(site.params["max_iter"]),
            names=site.spec.predictors(spec_target),
            target=spec_target.name,
            **options,
        )
    except FitError as error:
        raise FitError(f"{site.data.label}, fitting its own rows: {error}") from None


def gaussian_stats_handler(site: SiteJob, *, target: int) -> dict[str, Any]:
    """n, X'X, X'y, y'y of the target's rows (SIMI, SIMICE)."""
    return gaussian_stats(site.state["z"], _rows(site, target), target - 1)


def logistic_stats_handler(site: SiteJob, *, target: int, beta: np.ndarray) -> dict[str, Any]:
    """n, X'WX, X'(y - p) and the log-likelihood at ``beta`` (SIMI, SIMICE)."""
    return logistic_stats(site.state["z"], _rows(site, target), target - 1, beta)


def local_fit_handler(site: SiteJob, *, target: int) -> dict[str, Any]:
    """This site's own ridge fit, weighted for averaging (AVGMMI, AVGMMICE): n, n*beta,
    n^2*V (V = G^-1 for a Gaussian target, sigma^2 left out; H^-1 for a logistic one), the SSE
    and whether Newton converged. A site without usable rows answers n = 0 and zeros.

    A logistic fit starts from this site's previous fit of the target (chained equations).
    """
    starts: dict[int, np.ndarray] = site.state.setdefault("starts", {})
    p = site.state["z"].shape[1] - 1
    rows = _rows(site, target)
    n = site.state["z"].shape[0] if rows is None else int(rows.sum())
    if n == 0:
        return {
            "n": 0,
            "beta_n": np.zeros(p),
            "cov_n2": np.zeros((p, p)),
            "sse": 0.0,
            "converged": 1,
        }
    fit = _own_fit(site, target, start=starts.get(target))
    if fit.kind == "logistic":
        starts[target] = fit.beta
    covariance = _covariance(fit)
    return {
        "n": fit.n,
        "beta_n": fit.n * fit.beta,
        "cov_n2": float(fit.n) ** 2 * covariance,
        "sse": fit.sse if fit.sse is not None else 0.0,
        "converged": int(fit.converged),
    }


def _covariance(fit: Fit) -> np.ndarray:
    """G^-1 (or H^-1) from the fit's Cholesky factor, exactly symmetric."""
    inv_chol = np.linalg.inv(fit.chol)
    covariance: np.ndarray = inv_chol.T @ inv_chol
    return covariance


def gradient_handler(site: SiteJob, *, target: int, beta: np.ndarray) -> dict[str, Any]:
    """n and the average gradient of this site's log-likelihood at central's beta (CSLMI)."""
    n, gradient = score(site.state["z"], _rows(site, target), target - 1, _kind(site, target), beta)
    return {"n": n, "gradient": gradient / n if n else gradient}


def surrogate_fit_handler(
    site: SiteJob, *, target: int, beta: np.ndarray, gradient: np.ndarray, n: int
) -> dict[str, Any]:
    """Central only: the surrogate fit of CSL. ``beta`` is central's own fit, ``gradient`` the
    average gradient over all N = ``n`` rows of every participant at it.

    Central's log-likelihood gets the linear term c'b with c = n_c (gradient - its own average
    gradient at beta), is maximised (with central's ridge) from beta, and its Gram or Hessian
    and SSE are scaled by N / n_c, as if central's rows were all N.
    """
    z = site.state["z"]
    own_n, own = score(z, _rows(site, target), target - 1, _kind(site, target), beta)
    offset = own_n * (gradient - own / own_n)
    fit = _own_fit(site, target, start=beta, offset=offset)
    scale = n / fit.n
    result: dict[str, Any] = {"n": n, "beta": fit.beta, "precision": scale * fit.matrix}
    if fit.sse is not None:
        result["sse"] = scale * fit.sse
    if fit.iterations is not None:
        result.update(iterations=fit.iterations, converged=int(fit.converged))
    return result
