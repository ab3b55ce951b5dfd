"""SIMI, central half: one exact pooled fit, then M draws and imputations of central's rows."""

from __future__ import annotations

from algorithms._federated import fit_target, record
from algorithms._stats import draw_parameters
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    (target,) = job.targets
    imputations = int(job.params["imputations"])
    job.progress(0.0, f"fitting '{target.name}' ({target.type})")
    fit = await fit_target(job, target)
    record(job, target, fit, cycle=1)
    for m in range(1, imputations + 1):
        drawn = draw_parameters(fit, job.rng)
        completed = (await job.local("impute", target=target.index, **drawn))["values"]
        job.emit_imputation(completed)
        job.progress(m / imputations, f"imputation {m} of {imputations}")
