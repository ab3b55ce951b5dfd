"""Steps that central halves take with their sites, shared by SIMI and SIMICE.

They rely on a naming convention of the remote halves: ``gaussian_stats(target)`` and
``logistic_stats(target, beta)`` answer with the aggregates of ``_stats``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms._stats import Fit, fit_gaussian, fit_logistic
from federation.job import Target
from federation.runtime import CentralJob


async def fit_target(job: CentralJob, target: Target, *, start: np.ndarray | None = None) -> Fit:
    """Fit one target over every participant (Gaussian: one ask; logistic: Newton)."""
    names = job.spec.predictors(target)
    ridge = float(job.params["ridge"])
    if target.type == "gaussian":
        replies = await job.ask("gaussian_stats", target=target.index)
        return fit_gaussian(replies, ridge=ridge, names=names, target=target.name)

    async def evaluate(beta: np.ndarray) -> dict[str, dict[str, Any]]:
        return await job.ask("logistic_stats", target=target.index, beta=beta)

    fit = await fit_logistic(
        evaluate,
        start=np.zeros(len(names)) if start is None else start,
        ridge=ridge,
        max_iter=int(job.params["max_iter"]),
        names=names,
        target=target.name,
    )
    if not fit.converged:
        job.warn(
            f"target '{target.name}': Newton did not converge in {fit.iterations} iterations "
            "(max_iter); the last coefficients are used"
        )
    return fit


def record(job: CentralJob, target: Target, fit: Fit, *, cycle: int) -> None:
    """Put a fit in the report."""
    job.record_fit(
        target=target,
        cycle=cycle,
        n=fit.n,
        coefficients=fit.beta,
        sse=fit.sse,
        iterations=fit.iterations,
    )
