"""Serving a job's results from memory: the zip, the long CSV and the report."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import Response

from federation.outputs import long_csv, report_json, zip_bytes
from portal_central.errors import Conflict, NotFound
from portal_central.jobs.runner import Runs
from portal_central.models import Job

Format = Literal["zip", "long", "report"]
_TYPES = {"zip": "application/zip", "long": "text/csv; charset=utf-8", "report": "application/json"}


def result_response(*, runs: Runs, job: Job, format: Format) -> Response:
    """The file, built in memory; a data download starts the short grace before discarding."""
    run = runs.get(job.id)
    if job.is_comparison:
        ids = ", ".join(f"{c.algorithm.name}: job {c.id}" for c in job.methods)
        raise Conflict(
            f"job {job.id} is a comparison: each method's imputed data is its own job's ({ids}); "
            "the comparison's report is at /comparison"
        )
    if run.result is None:
        if run.purged:
            raise NotFound(f"the results of job {job.id} were {run.purged}; run the job again")
        raise Conflict(f"job {job.id} is {job.state}; it has no results to download")
    stem = f"job-{job.id}"
    if format == "zip":
        content, name = zip_bytes(run.result), f"{stem}-imputations.zip"
    elif format == "long":
        content, name = long_csv(run.result), f"{stem}-imputations_long.csv"
    else:
        content, name = report_json(run.result.report), f"{stem}-report.json"
    if format != "report":
        runs.downloaded(job.id)
    return Response(
        content,
        media_type=_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
