"""Serving a job's results from memory: the zip, the long CSV, the report, each target's method
(methods.csv, for R) and (chained family) the chain means and variances.

The zip and the long CSV are streamed: each chunk is made from central's table and the imputed
cells as the client reads (:mod:`federation.outputs`), so a download costs a few MiB whatever
the size of the file, and its first bytes leave at once. What this module gives is a
:class:`ResultFile` (its name, type and body); the routes make the HTTP response
(``portal_common.web.attachment``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True)
class ResultFile:
    """A file to download: its body is made chunk by chunk when it is an iterator."""

    filename: str
    media_type: str
    body: bytes | str | Iterator[bytes]


def result_file(*, store: RunStore, job: Job, format: Format) -> ResultFile:
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
    if format == "report":
        return ResultFile(f"{stem}-report.json", _TYPES[format], report_json(result.report))
    if format == "chains":
        chains = chains_csv(result.report)
        if chains is None:
            raise NotFound(
                f"job {job.id} ran {job.algorithm.name}, which has no chains: only the chained "
                "family (SIMICE, IMICE, AVGMMICE, CSLMICE) records chain means and variances"
            )
        return ResultFile(f"{stem}-chains.csv", _TYPES[format], chains)
    if format == "methods":
        return ResultFile(f"{stem}-methods.csv", _TYPES[format], methods_csv(result.spec.targets))
    chunks: Iterator[bytes]
    if format == "zip":
        chunks, name = zip_chunks(result), f"{stem}-imputations.zip"
    else:
        chunks, name = long_chunks(result), f"{stem}-imputations_long.csv"
    store.downloaded(job.id)
    return ResultFile(name, _TYPES[format], chunks)
