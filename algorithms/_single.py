"""The one-target family (SIMI, IMI, AVGMMI, CSLMI): the site's rows, central's imputations.

Site side: ``prepare`` keeps the rows where every column is observed; at central it also finds
the rows to impute, refusing rows whose predictors are incomplete. Central side: ``run`` fits
the target once with the method's fitting strategy, then draws and imputes M times.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms import methods
from algorithms._chained import check_donors
from algorithms._federated import FitTarget, record
from algorithms._predictors import target_matrix
from algorithms._site_term import check_central_rows, with_site_columns
from algorithms._stats import augment
from federation.runtime import CentralJob
from federation.site import SiteJob


def prepare(site: SiteJob, *, chained: str) -> dict[str, Any]:
    """Keep the complete rows; at central, find the rows to impute (``chained`` names the
    algorithm to suggest when central's rows miss predictors too)."""
    (target,) = site.targets
    values = site.data.values
    missing = np.isnan(values)
    target_missing = missing[:, target.column]
    sources = list(site.spec.design(target).sources)
    predictor_missing = missing[:, sources].any(axis=1)
    if site.is_central:
        stuck = target_missing & predictor_missing
        if stuck.any():
            counts = missing[stuck][:, sources].sum(axis=0)
            others = [site.data.columns[i] for i in sources]
            detail = ", ".join(f"'{c}' in {n}" for c, n in zip(others, counts, strict=True) if n)
            site.refuse(
                f"{int(stuck.sum())} row(s) miss '{target.name}' and a predictor too ({detail}); "
                f"{site.spec.algorithm} imputes only rows whose predictors are complete: use "
                f"{chained} for several incomplete columns"
            )
        site.state["impute_rows"] = target_missing
        if target_missing.any():
            observed = int((~target_missing & ~predictor_missing).sum())
            check_donors(site, target, observed)
            check_central_rows(site, target.name, observed)
    complete = ~(target_missing | predictor_missing)
    site.state["z"] = with_site_columns(site, augment(values, complete))
    site.state["rows"] = {target.index: None}
    return {
        "rows_used": int(complete.sum()),
        "left_out": {
            "{target} missing": int(target_missing.sum()),
            "a predictor missing": int((predictor_missing & ~target_missing).sum()),
        },
    }


def impute(site: SiteJob, *, target: int, **drawn: Any) -> dict[str, Any]:
    """Central only: a copy of central's data with the target's missing cells drawn (pmm's
    donors: central's complete rows)."""
    (spec_target,) = site.targets
    values = site.data.values.copy()
    rows = site.state["impute_rows"]
    method = methods.get(spec_target.type)
    design = site.spec.design(spec_target)
    missing, column = target_matrix(
        with_site_columns(site, augment(values, rows)), design, target - 1
    )
    donors, _ = target_matrix(site.state["z"], design, target - 1)
    values[rows, target - 1] = method.impute(
        (missing, None),
        (donors, None),
        column,
        site.rng,
        target=spec_target.name,
        levels=spec_target.levels,
        params=site.params,
        **drawn,
    )
    return {"values": values}


async def run(job: CentralJob, fit_target: FitTarget) -> None:
    """Fit once, then M times: draw the parameters, impute central's rows, emit the dataset."""
    (target,) = job.targets
    imputations = int(job.params["imputations"])
    method = methods.get(target.type)
    job.progress(0.0, f"fitting '{target.name}' ({target.type})")
    fit = await fit_target(job, target, None)
    record(job, target, fit, cycle=1)
    for m in range(1, imputations + 1):
        drawn = method.draw(fit, job.rng, target=target.name)
        # not kept in a name: the dataset goes once emitted (only its imputed cells are kept),
        # before the next one is made
        job.emit_imputation((await job.local("impute", target=target.index, **drawn))["values"])
        job.progress(m / imputations, f"imputation {m} of {imputations}")
