"""MEANDRAW, central half: pool every participant's moments, then M posterior draws.

Model: the target's values are independent Normal(mu, sigma^2), prior p(mu, sigma^2) ~ 1/sigma^2.
With the pooled count N, mean ybar and sum of squared deviations SSE, the posterior is
sigma^2 = SSE / chi2(N - 1) and mu | sigma^2 ~ Normal(ybar, sigma^2 / N). Each imputation draws
(mu, sigma^2) once, then every missing cell of central's target independently from
Normal(mu, sigma^2).
"""

from __future__ import annotations

import numpy as np

from federation.errors import FitError
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    (target,) = job.targets
    imputations = int(job.params["imputations"])
    job.progress(0.0, f"pooling the moments of '{target.name}'")
    replies = await job.ask("moments")  # central first, then every site: {"n", "sum", "ss"}
    n = np.array([reply["n"] for reply in replies.values()], dtype=np.float64)
    sums = np.array([reply["sum"] for reply in replies.values()], dtype=np.float64)
    ss = np.array([reply["ss"] for reply in replies.values()], dtype=np.float64)
    total = int(n.sum())
    if total < 2:
        raise FitError(f"target '{target.name}': {total} observed value(s) in all, 2 needed")
    mean = float(sums.sum() / total)
    site_means = np.divide(sums, n, out=np.zeros_like(sums), where=n > 0)
    sse = float(ss.sum() + (n * np.square(site_means - mean)).sum())
    if not sse > 0:
        raise FitError(f"target '{target.name}': all observed values are equal, no variance")
    # An intercept-only model: the report shows just the coefficient it estimates.
    job.record_fit(target=target, cycle=1, n=total, coefficients={"(intercept)": mean}, sse=sse)

    missing = np.isnan(job.data.values[:, target.column])
    for m in range(1, imputations + 1):
        sigma2 = sse / job.rng.chisquare(total - 1)
        mu = mean + np.sqrt(sigma2 / total) * job.rng.standard_normal()
        values = job.data.values.copy()
        drawn = mu + np.sqrt(sigma2) * job.rng.standard_normal(int(missing.sum()))
        values[missing, target.column] = drawn
        job.emit_imputation(values)
        job.progress(m / imputations, f"imputation {m} of {imputations}")
