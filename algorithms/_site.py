"""Site-side handlers shared by the built-in algorithms: the aggregates each method asks for.

Every family's ``prepare`` leaves ``site.state["z"]`` (the site's rows as ``_stats`` lays them
out) and ``site.state["rows"][target]``: the rows a fit of that target uses (None: all of z).
Each handler works on the target's own design matrix (``_predictors.target_matrix``).
The handlers answer with aggregates only; ``surrogate_fit`` runs at central alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from algorithms import methods
from algorithms._predictors import target_matrix
from algorithms._stats import Fit, covariance
from algorithms.methods import FitOptions, Method, SiteStatistics
from federation.errors import FitError
from federation.job import Target
from federation.site import SiteJob

Handler = Callable[..., dict[str, Any]]


def _rows(site: SiteJob, target: int) -> np.ndarray | None:
    rows: np.ndarray | None = site.state["rows"][target]
    return rows


def _target(site: SiteJob, target: int) -> tuple[Target, Method]:
    spec_target = next(t for t in site.targets if t.index == target)
    return spec_target, methods.get(spec_target.type)


def matrix(site: SiteJob, target: int) -> tuple[np.ndarray, int]:
    """The target's design matrix over this site's rows (``Z`` itself by default), and the
    target's column in it."""
    spec_target, _ = _target(site, target)
    return target_matrix(site.state["z"], site.spec.design(spec_target), target - 1)


def _own_fit(site: SiteJob, target: int, **options: Any) -> Fit:
    """A fit on this participant's rows alone; a failure says whose rows they are."""
    spec_target, method = _target(site, target)
    z, column = matrix(site, target)
    try:
        return method.fit_own(
            z,
            _rows(site, target),
            column,
            FitOptions.of(
                site.params,
                names=site.spec.predictors(spec_target),
                target=spec_target.name,
                levels=spec_target.levels,
            ),
            **options,
        )
    except FitError as error:
        raise FitError(f"{site.data.label}, fitting its own rows: {error}") from None


def _statistics_handler(statistics: SiteStatistics) -> Handler:
    def handler(site: SiteJob, *, target: int, **args: Any) -> dict[str, Any]:
        spec_target, method = _target(site, target)
        if method.levels:  # the job's levels, as this site's spec holds them
            args = {**args, "levels": spec_target.levels}
        z, column = matrix(site, target)
        return statistics(z, _rows(site, target), column, **args)

    handler.__doc__ = statistics.__doc__
    return handler


STATISTICS: dict[str, Handler] = {
    operation: _statistics_handler(statistics)
    for operation, statistics in methods.site_statistics().items()
}
"""The site operations of every target method (SIMI, SIMICE, IMI, IMICE), by name."""


def _design(site: SiteJob, target: int) -> np.ndarray:
    """The target's design over its rows (a copy): its predictors and the intercept."""
    z, column = matrix(site, target)
    rows = _rows(site, target)
    selected = z if rows is None else z[rows]
    design: np.ndarray = np.delete(selected, column, axis=1)
    return design


def _design_sums(site: SiteJob, target: int) -> np.ndarray:
    """Column sums of the target's design over its rows (the intercept's: the count)."""
    sums: np.ndarray = _design(site, target).sum(axis=0)
    return sums


def local_fit_handler(site: SiteJob, *, target: int) -> dict[str, Any]:
    """This site's own ridge fit, weighted for averaging (AVGMMI, AVGMMICE): n, n*beta,
    n^2*V (V = G^-1 for a Gaussian target, sigma^2 left out; H^-1 for a Newton one), the SSE,
    whether Newton converged, and the design's column sums (the pooled means centre the draw).
    A site without usable rows answers n = 0 and zeros.

    A Newton fit starts from this site's previous fit of the target (chained equations).
    """
    starts: dict[int, np.ndarray] = site.state.setdefault("starts", {})
    spec_target, _ = _target(site, target)
    p = site.spec.design(spec_target).p
    rows = _rows(site, target)
    n = site.state["z"].shape[0] if rows is None else int(rows.sum())
    if n == 0:
        return {
            "n": 0,
            "beta_n": np.zeros(p),
            "cov_n2": np.zeros((p, p)),
            "sse": 0.0,
            "converged": 1,
            "sums": np.zeros(p),
        }
    fit = _own_fit(site, target, start=starts.get(target))
    if fit.iterations is not None:
        starts[target] = fit.beta
    return {
        "n": fit.n,
        "beta_n": fit.n * fit.beta,
        "cov_n2": float(fit.n) ** 2 * covariance(fit),
        "sse": fit.sse if fit.sse is not None else 0.0,
        "converged": int(fit.converged),
        "sums": _design_sums(site, target),
    }


def gradient_handler(site: SiteJob, *, target: int, beta: np.ndarray) -> dict[str, Any]:
    """n and the average gradient of this site's log-likelihood at central's beta (CSLMI),
    and the design's column sums and sums of squares over the same rows, from which central
    compares its own predictor means with the pooled ones (``federation.site_checks``)."""
    spec_target, method = _target(site, target)
    (z, column), rows = matrix(site, target), _rows(site, target)
    n, gradient = method.score(z, rows, column, beta, spec_target.levels)
    design = _design(site, target)
    return {
        "n": n,
        "gradient": gradient / n if n else gradient,
        "sums": design.sum(axis=0),
        "squares": np.einsum("ij,ij->j", design, design),
    }


def surrogate_fit_handler(
    site: SiteJob, *, target: int, beta: np.ndarray, gradient: np.ndarray, n: int
) -> dict[str, Any]:
    """Central only: the surrogate fit of CSL. ``beta`` is central's own fit, ``gradient`` the
    average gradient over all N = ``n`` rows of every participant at it.

    Central's log-likelihood gets the linear term c'b with c = n_c (gradient - its own average
    gradient at beta), is maximised (with central's ridge) from beta, and its Gram or Hessian
    and SSE are scaled by N / n_c, as if central's rows were all N: the covariance by n_c / N.
    """
    spec_target, method = _target(site, target)
    z, column = matrix(site, target)
    own_n, own = method.score(z, _rows(site, target), column, beta, spec_target.levels)
    offset = own_n * (gradient - own / own_n)
    fit = _own_fit(site, target, start=beta, offset=offset)
    scale = n / fit.n
    return {
        "n": n,
        "beta": fit.beta,
        "covariance": covariance(fit) / scale,
        "mean": _design_sums(site, target) / fit.n,
        "sse": scale * fit.sse if fit.sse is not None else 0.0,
        "iterations": fit.iterations or 0,
        "converged": int(fit.converged),
    }
