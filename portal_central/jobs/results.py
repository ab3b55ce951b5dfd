"""Serving a job's results from memory: the zip, the long CSV, the report, each target's method
(methods.csv, for R) and (chained family) the chain means and variances.

The zip and the long CSV are streamed: each chunk is made from central's table and the imputed
cells as the client reads (:mod:`federation.outputs`), so a download costs a few MiB whatever
the size of the file, and its first bytes leave at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from fastapi.responses import Response, StreamingResponse

from federation.outputs import chains_csv, long_chunks, methods_csv, report_json, zip_chunks
from portal_central.errors import Conflict, NotFound
from portal_central.jobs.store import RunStore
from portal_central.models import Job

Format = Literal["zip", "long", "report", "chains", "methods"]
_TYPES = {
    "zip": "application/zip",
    "long": "text/csv; charset=utf-8",
    "report": "application/json",
    "chains": "text/csv; charset=utf-8",
    "methods": "text/csv; charset=utf-8",
}


def result_response(*, store: RunStore, job: Job, format: Format) -> Response:
    """The file; a data download is streamed and starts the short grace before discarding.

    The stream holds the result it started from: discarding it from the store after the grace
    does not cut a download under way.
    """
    run = store.view(job.id)
    if job.is_comparison:
        ids = ", ".join(f"{c.algorithm.name}: job {c.id}" for c in job.methods)
        raise Conflict(
            f"job {job.id} is a comparison: each method's imputed data is its own job's ({ids}); "
            "the comparison's report is at /comparison"
        )
    result = run.result
    if result is None:
        if run.purged:
            raise NotFound(f"the results of job {job.id} were {run.purged}; run the job again")
        raise Conflict(f"job {job.id} is {job.state}; it has no results to download")
    stem = f"job-{job.id}"
    headers = {"Cache-Control": "no-store"}
    if format == "report":
        headers["Content-Disposition"] = f'attachment; filename="{stem}-report.json"'
        return Response(report_json(result.report), media_type=_TYPES[format], headers=headers)
    if format == "chains":
        chains = chains_csv(result.report)
        if chains is None:
            raise NotFound(
                f"job {job.id} ran {job.algorithm.name}, which has no chains: only the chained "
                "family (SIMICE, IMICE, AVGMMICE, CSLMICE) records chain means and variances"
            )
        headers["Content-Disposition"] = f'attachment; filename="{stem}-chains.csv"'
        return Response(chains, media_type=_TYPES[format], headers=headers)
    if format == "methods":
        headers["Content-Disposition"] = f'attachment; filename="{stem}-methods.csv"'
        return Response(
            methods_csv(result.spec.targets), media_type=_TYPES[format], headers=headers
        )
    chunks: Iterator[bytes]
    if format == "zip":
        chunks, name = zip_chunks(result), f"{stem}-imputations.zip"
    else:
        chunks, name = long_chunks(result), f"{stem}-imputations_long.csv"
    store.downloaded(job.id)
    headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return StreamingResponse(chunks, media_type=_TYPES[format], headers=headers)
