"""SIMICE, central half: chained equations over every site, an imputed dataset every few cycles.

Each cycle fits every target in order on the pooled current data, draws its parameters once,
and tells every participant to impute its own cells of that target; the instruction rides on
the request for the next fit, so a continuous target costs one round trip per cycle.
"""

from __future__ import annotations

import numpy as np

from algorithms._federated import fit_target, record
from algorithms._stats import draw_parameters, total
from federation.runtime import CentralJob


async def run(job: CentralJob) -> None:
    targets = job.targets
    imputations = int(job.params["imputations"])
    before = int(job.params["iteration_before_first_imputation"])
    between = int(job.params["iteration_between_imputations"])
    cycles = before + between * (imputations - 1)
    counts = total(job.site_summaries, "target_n")
    sums = total(job.site_summaries, "target_sum")
    await job.tell("fill_unobserved", means=sums / np.maximum(counts, 1))
    starts: dict[int, np.ndarray] = {}
    cycle = 0
    for m in range(1, imputations + 1):
        for _ in range(before if m == 1 else between):
            cycle += 1
            for k, target in enumerate(targets):
                job.progress(
                    (cycle - 1 + k / len(targets)) / cycles,
                    f"cycle {cycle} of {cycles}: fitting '{target.name}'",
                )
                fit = await fit_target(job, target, start=starts.get(target.index))
                if fit.kind == "logistic":
                    starts[target.index] = fit.beta
                record(job, target, fit, cycle=cycle)
                await job.tell("impute", target=target.index, **draw_parameters(fit, job.rng))
        job.emit_imputation((await job.local("completed"))["values"])
        job.log(f"imputed dataset {m} of {imputations} after cycle {cycle}")
    job.progress(1.0, f"{imputations} imputed datasets")
