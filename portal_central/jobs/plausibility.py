"""A completed job's plausibility plots (and, for the chained family, its trace plots) at
central, for its admins: drawn once, on the first request, from central's datasets in memory,
and kept beside them: when the results are discarded (downloaded, then the grace; or expired)
the plots go with them. Never on disk."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from portal_central.errors import Conflict, NotFound
from portal_central.jobs.store import RunStore
from portal_central.models import Job

if TYPE_CHECKING:
    from federation.plots import TargetPlot, TracePlot
    from federation.runtime import JobResult

P = TypeVar("P")


class PlotCache(Generic[P]):
    """Plots per result object: built once, and dropped when the result itself is (a finalizer
    on the result), so that they cannot outlive the data they show."""

    def __init__(self) -> None:
        self._built: dict[int, list[P]] = {}
        self._lock = threading.Lock()

    def get(self, result: JobResult, build: Callable[[JobResult], list[P]]) -> list[P]:
        with self._lock:  # two first requests draw once, not twice
            key = id(result)
            found = self._built.get(key)
            if found is None:
                found = build(result)
                self._built[key] = found
                weakref.finalize(result, self._built.pop, key, None)
            return found

    def __len__(self) -> int:
        return len(self._built)


CACHE: PlotCache[TargetPlot] = PlotCache()
TRACES: PlotCache[TracePlot] = PlotCache()


def gone_message(store: RunStore, job: Job) -> str | None:
    """Why a completed job has no plots (its results were discarded), or None when it has."""
    run = store.view(job.id)
    if run.result is not None:
        return None
    why = run.purged or "discarded from memory (or not kept: central restarted)"
    return f"The results of job {job.id} were {why}; the plausibility plots went with them."


def job_plots(store: RunStore, job: Job) -> list[TargetPlot]:
    """Every target's plot and numbers; 409 for a comparison or a job without results yet,
    404 once the results were discarded."""
    from federation.plots import plausibility

    return CACHE.get(_result(store, job), plausibility)


def job_traces(store: RunStore, job: Job) -> list[TracePlot]:
    """Every target's trace plot and numbers (none unless the job ran a chained algorithm);
    the same errors as :func:`job_plots`."""
    from federation.plots import traces

    return TRACES.get(_result(store, job), traces)


def _result(store: RunStore, job: Job) -> JobResult:
    if job.is_comparison:
        ids = ", ".join(f"{c.algorithm.name}: job {c.id}" for c in job.methods)
        raise Conflict(
            f"job {job.id} is a comparison: each method's plots are on its own job's page ({ids})"
        )
    run = store.view(job.id)
    if run.result is None:
        if run.purged:
            raise NotFound(gone_message(store, job) or "")
        raise Conflict(f"job {job.id} is {job.state}; it has no imputations to plot")
    return run.result


def target_plot(store: RunStore, job: Job, target: str) -> TargetPlot:
    for plot in job_plots(store, job):
        if plot.name == target:
            return plot
    names = ", ".join(t["name"] for t in job.targets)
    raise NotFound(f"job {job.id} has no target named '{target}' (its targets: {names})")


def target_trace(store: RunStore, job: Job, target: str) -> TracePlot:
    for plot in job_traces(store, job):
        if plot.name == target:
            return plot
    names = ", ".join(plot.name for plot in job_traces(store, job)) or "none: not a chained job"
    raise NotFound(f"job {job.id} has no trace for a target named '{target}' (its traces: {names})")


def numbers(store: RunStore, job: Job) -> dict[str, Any]:
    """The numbers of every plot, for the API."""
    plots = job_plots(store, job)
    return {
        "job": job.id,
        "imputations": plots[0].numbers.imputations if plots else 0,
        "targets": [plot.numbers.to_dict() for plot in plots],
    }
