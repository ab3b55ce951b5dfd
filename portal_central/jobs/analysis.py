"""A pooled analysis of a job's imputations at central: the model named when the job is created
(fitted as soon as it completes) or afterwards, on central's M datasets while they are in
memory. The pooled table (coefficients, no rows) joins the job's report, which is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from federation.errors import FipError
from federation.simulation import central_datasets, check_analysis
from portal_central.errors import Conflict, FieldInvalid, NotFound
from portal_central.jobs import reports
from portal_central.jobs.store import RunStore
from portal_central.models import Job


def check_model(model: str, family: str, columns: Sequence[str]) -> None:
    """The model must read the job's columns; the message names the one it cannot find."""
    try:
        check_analysis(model, family, columns, label="the job")
    except FipError as error:
        raise FieldInvalid(str(error), field="model") from None


def request_analysis(store: RunStore, job: Job, model: str, family: str) -> None:
    """Fit ``model`` when the job (each method of a comparison) completes."""
    for chosen in (job, *job.methods):
        store.open(chosen.id).analysis = (model, family)


def analyse_job(
    *, store: RunStore, session: Session, job: Job, model: str, family: str
) -> dict[str, Any]:
    """Fit ``model`` on the completed job's datasets now; the pooled table, also in its report."""
    from federation.analysis import analyse

    check_model(model, family, job.columns)
    if job.is_comparison:
        ids = ", ".join(f"{c.algorithm.name}: job {c.id}" for c in job.methods)
        raise Conflict(
            f"job {job.id} is a comparison: each method's imputed data is its own job's ({ids}); "
            "name the analysis there"
        )
    run = store.view(job.id)
    if run.result is None:
        if run.purged:
            raise NotFound(f"the results of job {job.id} were {run.purged}; run the job again")
        raise Conflict(f"job {job.id} is {job.state}; it has no imputed datasets to analyse yet")
    try:
        analysis = analyse(central_datasets(run.result), model, family, label=f"job {job.id}")
    except FipError as error:
        raise FieldInvalid(str(error), field="model") from None
    pooled = analysis.to_dict()
    run.result.report["analysis"] = pooled
    reports.save(session=session, job_id=job.id, report=run.result.report)
    return pooled


def stored_analysis(session: Session, job: Job) -> dict[str, Any]:
    report = reports.load(session=session, job_ids=[job.id]).get(job.id, {})
    if "analysis" not in report:
        raise NotFound(
            f"job {job.id} has no analysis; name one with POST /api/jobs/{job.id}/analysis"
        )
    found: dict[str, Any] = report["analysis"]
    return found
