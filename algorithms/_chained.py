"""The chained-equations family (SIMICE, IMICE, AVGMMICE, CSLMICE).

Site side: ``prepare`` keeps the rows whose non-target columns are complete and fills each
target's missing cells, in every chain, by random draws from the site's own observed values of
it (mice's initialisation); ``impute`` redraws a target's missing cells in every chain from that
chain's drawn parameters with the site's own noise. Central side: ``run`` cycles through the
targets, fitting each (every chain at once, ``_chains``) with the family's strategy; one chain
emits central's data every few cycles, parallel chains each emit theirs at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms import _chains, _pmm, methods
from algorithms._federated import FitChains, record
from algorithms._predictors import target_matrix
from algorithms._site_term import check_central_rows, data_columns, with_site_columns
from algorithms._stats import augment, total
from federation import diagnostics
from federation.job import PARALLEL, Target
from federation.runtime import CentralJob
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill each target's missing cells with
    random draws from this site's own observed values of it (mice's initialisation)."""
    values = site.data.values
    targets = site.targets
    target_columns = [t.column for t in targets]
    others = [c for c in range(values.shape[1]) if c not in target_columns]
    missing_other = np.isnan(values)[:, others]  # booleans copied, not the numbers
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
    z = with_site_columns(site, augment(values, ~incomplete))
    observed = {t.index: ~np.isnan(z[:, t.column]) for t in targets}
    minimum = int(site.params["min_rows"])
    for t in targets:
        count = int(observed[t.index].sum())
        if not site.is_central and count < minimum:
            site.refuse(
                f"only {count} usable row(s) observe '{t.name}', fewer than this job's minimum of "
                f"{minimum} (min_rows); this site does not take part"
            )
        if (~observed[t.index]).any():
            check_donors(site, t, count)
            check_central_rows(site, t.name, count)
    _chains.start_cells(site, z, observed)
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
    """Targets this site never observes start at the pooled mean of all sites (every chain)."""
    z = site.state["z"]
    for t, mean in zip(site.targets, means, strict=True):
        if not site.state["rows"][t.index].any():
            z[:, t.column] = mean
            site.state["cells"][t.index][:] = mean


def impute(site: SiteJob, *, target: int, **drawn: Any) -> None:
    """Draw this site's missing cells of a target in every chain from that chain's drawn
    parameters (stacked, one a chain), own noise (pmm: this site's own observed rows are the
    donors)."""
    spec_target = next(t for t in site.targets if t.index == target)
    method = methods.get(spec_target.type)
    chains = {key: _chains.stacked(site, key, value) for key, value in drawn.items()}
    observed = site.state["rows"][target]
    rows = ~observed
    if not rows.any():
        return
    for c in range(_chains.count(site)):
        z = _chains.use(site, c)
        design, column = target_matrix(z, site.spec.design(spec_target), target - 1)
        values = method.impute(
            (design, rows),
            (design, observed),
            column,
            site.rng,
            target=spec_target.name,
            levels=spec_target.levels,
            params=site.params,
            **{key: value[c] for key, value in chains.items()},
        )
        _chains.store(site, target, c, values)


def trace(site: SiteJob) -> dict[str, Any]:
    """Central only: per chain and target, the mean and variance (n - 1) of its current imputed
    cells (mice's chainMean and chainVar); NaN where central has no missing cell (variance:
    fewer than two). Two numbers per chain and target, never rows."""
    means = np.full((_chains.count(site), len(site.targets)), np.nan)
    variances = means.copy()
    for k, t in enumerate(site.targets):
        cells = site.state["cells"][t.index]
        if cells.shape[1]:
            means[:, k] = cells.mean(axis=1)
        if cells.shape[1] > 1:
            variances[:, k] = cells.var(axis=1, ddof=1)
    return {"mean": means, "variance": variances}


def completed(site: SiteJob, *, chain: int = 0) -> dict[str, Any]:
    """Central only: its current data in a chain (0-based), every target imputed."""
    return {"values": data_columns(site, _chains.use(site, chain)).copy()}


async def run(job: CentralJob, fit_chains: FitChains) -> None:
    """Cycles of: fit each target in order (every chain at once), draw each chain's parameters
    once, and have every participant impute its own cells of it in every chain (the
    instruction rides on the next request). One chain emits a dataset after
    ``iteration_before_first_imputation`` cycles and then every
    ``iteration_between_imputations``; parallel chains run the first number of cycles and each
    emits its own dataset."""
    targets = job.targets
    imputations = int(job.params["imputations"])
    before = int(job.params["iteration_before_first_imputation"])
    between = int(job.params["iteration_between_imputations"])
    parallel = job.params.get("chains") == PARALLEL
    chains = job.spec.chains
    cycles = before if parallel else before + between * (imputations - 1)
    emitted_after = {} if parallel else {before + between * m: m + 1 for m in range(imputations)}
    job.chains.update(kind=PARALLEL if parallel else "single", chains=chains, cycles=cycles)
    job.log(
        f"{chains} parallel chains of {cycles} cycles, one dataset each"
        if parallel
        else f"one chain of {cycles} cycles: a dataset after cycle {before}, then every {between}"
    )
    counts = total(job.site_summaries, "target_rows")
    sums = job.summed("target_sum")
    await job.tell("fill_unobserved", means=sums / np.maximum(counts, 1))
    starts: dict[int, list[np.ndarray | None]] = {t.index: [None] * chains for t in targets}
    for cycle in range(1, cycles + 1):
        for k, target in enumerate(targets):
            job.progress(
                (cycle - 1 + k / len(targets)) / cycles,
                f"cycle {cycle} of {cycles}: fitting '{target.name}'",
            )
            fits = await fit_chains(job, target, starts[target.index])
            if fits[0].iterations is not None:  # a Newton fit starts from its last optimum
                starts[target.index] = [fit.beta for fit in fits]
            method = methods.get(target.type)
            drawn = []
            for c, fit in enumerate(fits):
                record(job, target, fit, cycle=cycle, chain=c + 1 if parallel else None)
                drawn.append(method.draw(fit, job.rng, target=target.name))
            await job.tell("impute", target=target.index, **_chains.stack_draws(drawn))
        await record_trace(job, cycle)
        if cycle in emitted_after:
            job.emit_imputation((await job.local("completed"))["values"])
            job.log(f"imputed dataset {emitted_after[cycle]} of {imputations} after cycle {cycle}")
    if parallel:
        for c in range(chains):
            job.emit_imputation((await job.local("completed", chain=c))["values"])
        job.log(f"imputed datasets 1 to {imputations}: one from each chain after cycle {cycles}")
    job.progress(1.0, f"{imputations} imputed datasets")
    if parallel:
        flag_unmixed(job)
    else:
        flag_unsettled(job)


async def record_trace(job: CentralJob, cycle: int) -> None:
    """Note this cycle's mean and SD of central's imputed cells of every target and chain."""
    numbers = await job.local("trace")
    for chain, (means, variances) in enumerate(
        zip(numbers["mean"], numbers["variance"], strict=True), start=1
    ):
        for target, mean, variance in zip(job.targets, means, variances, strict=True):
            job.record_trace(
                target, chain=chain, cycle=cycle, mean=float(mean), variance=float(variance)
            )


def flag_unmixed(job: CentralJob) -> None:
    """Parallel chains: each target's R-hat over its chains (rank-normalised split R-hat of the
    mean and of the SD of central's imputed cells, over every cycle, as mice's convergence()
    for the last iteration) into the report, and a plain warning when it exceeds 1.1."""
    for name, entry in job.traces.items():
        judged = {
            quantity: diagnostics.rhat(
                np.array(
                    [
                        [np.nan if p[quantity] is None else p[quantity] for p in chain]
                        for chain in entry["chains"]
                    ],
                    dtype=np.float64,
                )
            )
            for quantity in ("mean", "sd")
            if any(p[quantity] is not None for chain in entry["chains"] for p in chain)
        }
        entry["rhat"] = {q: (v if np.isfinite(v) else None) for q, v in judged.items()}
        if any(diagnostics.unsettled(value) for value in judged.values()):
            job.warn(diagnostics.unmixed_sentence(name, judged, chains=len(entry["chains"])))


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
