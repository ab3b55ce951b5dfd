"""The chained-equations family (SIMICE, IMICE, AVGMMICE, CSLMICE).

Site side: ``prepare`` keeps the rows whose non-target columns are complete and fills each
target's missing cells by random draws from the site's own observed values of it (mice's
initialisation); ``impute`` redraws a target's missing
cells from drawn parameters with the site's own noise. Central side: ``run`` cycles through
the targets, fitting each with the method's strategy, and emits central's data every few cycles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms import _pmm, methods
from algorithms._federated import FitTarget, record
from algorithms._site_term import check_central_rows, data_columns, with_site_columns
from algorithms._stats import augment, total
from federation import diagnostics
from federation.job import Target
from federation.runtime import CentralJob
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill each target's missing cells with
    random draws from this site's own observed values of it (mice's initialisation)."""
    values = site.data.values
    targets = site.targets
    target_columns = [t.column for t in targets]
    others = [c for c in range(values.shape[1]) if c not in target_columns]
    missing_other = np.isnan(values[:, others])
    incomplete = missing_other.any(axis=1)
    if site.is_central and incomplete.any():
        counts = missing_other.sum(axis=0)
        detail = ", ".join(
            f"'{site.data.columns[c]}' in {n} row(s)"
            for c, n in zip(others, counts, strict=True)
            if n
        )
        site.refuse(
            f"{site.spec.algorithm} needs central's non-target columns complete, but {detail} "
            "are missing; make such a column a target too"
        )
    z = with_site_columns(site, augment(values[~incomplete]))
    observed = {t.index: ~np.isnan(z[:, t.column]) for t in targets}
    minimum = int(site.params["min_rows"])
    for t in targets:
        count = int(observed[t.index].sum())
        if not site.is_central and count < minimum:
            site.refuse(
                f"only {count} usable row(s) observe '{t.name}', fewer than this job's minimum of "
                f"{minimum} (min_rows); this site does not take part"
            )
        holes = ~observed[t.index]
        if holes.any():
            check_donors(site, t, count)
            check_central_rows(site, t.name, count)
        if count:
            pool = z[observed[t.index], t.column]
            z[holes, t.column] = pool[site.rng.integers(0, count, size=int(holes.sum()))]
    site.state.update(z=z, rows=observed)
    return {
        "rows_used": int((~incomplete).sum()),
        "left_out": {"a non-target column missing": int(incomplete.sum())},
        "target_rows": np.array([observed[t.index].sum() for t in targets], dtype=np.int64),
        "target_sum": np.array(
            [np.nansum(values[~incomplete, t.column]) for t in targets], dtype=np.float64
        ),
    }


def check_donors(site: SiteJob, target: Target, observed: int) -> None:
    """A pmm target is imputed from this participant's own observed rows: refuse, naming the
    target, when they are fewer than ``donors`` (before anyone waits for a fit)."""
    if target.type != "pmm":
        return
    donors = int(site.params.get("donors") or _pmm.DONORS)
    if observed < donors:
        site.refuse(
            f"target '{target.name}' is imputed by pmm from this site's own observed values, "
            f"among the {donors} nearest (donors), and this site observes {observed} usable "
            "row(s) of it; lower donors, or impute it with gaussian"
        )


def fill_unobserved(site: SiteJob, *, means: np.ndarray) -> None:
    """Targets this site never observes start at the pooled mean of all sites."""
    z = site.state["z"]
    for t, mean in zip(site.targets, means, strict=True):
        if not site.state["rows"][t.index].any():
            z[:, t.column] = mean


def impute(site: SiteJob, *, target: int, **drawn: Any) -> None:
    """Draw this site's missing cells of a target from the drawn parameters, own noise (pmm:
    this site's own observed rows are the donors)."""
    spec_target = next(t for t in site.targets if t.index == target)
    method = methods.get(spec_target.type)
    z = site.state["z"]
    observed = site.state["rows"][target]
    rows = ~observed
    if not rows.any():
        return
    z[rows, target - 1] = method.impute(
        (z, rows),
        (z, observed),
        target - 1,
        site.rng,
        target=spec_target.name,
        levels=spec_target.levels,
        params=site.params,
        **drawn,
    )


def trace(site: SiteJob) -> dict[str, Any]:
    """Central only: per target, the mean and variance (n - 1) of its current imputed cells
    (mice's chainMean and chainVar); NaN where central has no missing cell (variance: fewer
    than two). Two numbers per target, never rows."""
    z = site.state["z"]
    means, variances = [], []
    for t in site.targets:
        cells = z[~site.state["rows"][t.index], t.column]
        means.append(float(cells.mean()) if cells.size else np.nan)
        variances.append(float(cells.var(ddof=1)) if cells.size > 1 else np.nan)
    return {"mean": np.array(means), "variance": np.array(variances)}


def completed(site: SiteJob) -> dict[str, Any]:
    """Central only: its current data, every target imputed."""
    return {"values": data_columns(site, site.state["z"]).copy()}


async def run(job: CentralJob, fit_target: FitTarget) -> None:
    """Cycles of: fit each target in order, draw its parameters once, and have every
    participant impute its own cells of it (the instruction rides on the next request)."""
    targets = job.targets
    imputations = int(job.params["imputations"])
    before = int(job.params["iteration_before_first_imputation"])
    between = int(job.params["iteration_between_imputations"])
    cycles = before + between * (imputations - 1)
    counts = total(job.site_summaries, "target_rows")
    sums = job.summed("target_sum")
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
                fit = await fit_target(job, target, starts.get(target.index))
                if fit.iterations is not None:  # a Newton fit starts from its last optimum
                    starts[target.index] = fit.beta
                record(job, target, fit, cycle=cycle)
                drawn = methods.get(target.type).draw(fit, job.rng, target=target.name)
                await job.tell("impute", target=target.index, **drawn)
            await record_trace(job, cycle)
        job.emit_imputation((await job.local("completed"))["values"])
        job.log(f"imputed dataset {m} of {imputations} after cycle {cycle}")
    job.progress(1.0, f"{imputations} imputed datasets")
    flag_unsettled(job)


async def record_trace(job: CentralJob, cycle: int) -> None:
    """Note this cycle's mean and SD of central's imputed cells of every target (one chain)."""
    numbers = await job.local("trace")
    for target, mean, variance in zip(
        job.targets, numbers["mean"], numbers["variance"], strict=True
    ):
        job.record_trace(target, chain=1, cycle=cycle, mean=float(mean), variance=float(variance))


def flag_unsettled(job: CentralJob) -> None:
    """Warn, in a plain sentence per target, when its single chain's mean or SD of central's
    imputed cells still trends over the last half of the chain."""
    for name, entry in job.traces.items():
        chain = entry["chains"][0]
        judged = {
            quantity: diagnostics.trend_rhat(
                np.array([point[quantity] for point in chain], dtype=np.float64)
            )
            for quantity in ("mean", "sd")
            if any(point[quantity] is not None for point in chain)  # central imputes no cell
        }
        if any(diagnostics.unsettled(value) for value in judged.values()):
            job.warn(diagnostics.unsettled_sentence(name, judged))
