"""What central holds in memory for its jobs, and for how long: nothing here is kept forever.

One :class:`Run` per job that central has something for: central's uploaded table, the task
running the job, the imputed results, the sites that clicked Start, the progress. Nothing here
is written to disk or to the database (the job's row keeps its state and message, the job's
event log and report are stored elsewhere), and everything has an expiry:

- the results: ``result_seconds`` after the job completed, or ``grace_seconds`` after their
  first download (for the other format), whichever comes first;
- central's rows, while no task runs on them (a job waiting for its sites, a comparison that
  ended partial and waits for a retry): ``result_seconds`` after they were last put to use;
- a run holding none of these (only readiness, a requested analysis, why its results went):
  ``idle_seconds`` after it was last opened.

Reading never creates a run: :meth:`RunStore.get` answers None for a job central holds nothing
for, :meth:`RunStore.view` an empty, unstored run. Only :meth:`RunStore.open` makes one.
The clock is injectable, so that tests move time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

from federation.data import Table
from federation.job import JobEvent
from federation.runtime import JobResult

Clock = Callable[[], float]
Expired = tuple[int, Literal["results", "data"]]
"""A job whose results or central rows a sweep discarded."""
DOWNLOADED = "downloaded, then discarded from memory"
NOT_DOWNLOADED = "not downloaded in time, and discarded from memory"


@dataclass
class Run:
    """What central holds in memory for one job."""

    job_id: int
    data: Table | None = None
    data_until: float | None = None
    """When central's rows go if no task is using them then."""
    task: asyncio.Task[None] | None = None
    result: JobResult | None = None
    result_until: float | None = None
    downloaded: bool = False
    purged: str = ""
    """Why the results are gone, for the page ("downloaded, then discarded from memory", ...)."""
    progress: float = 0.0
    step: str = ""
    ready: set[str] = field(default_factory=set)
    """Sites whose user clicked Start (their data is loaded at the site)."""
    cancel_reason: str = ""
    analysis: tuple[str, str] | None = None
    """An analysis model and family to fit on the datasets when the job completes."""
    opened: float = 0.0
    """When (store clock) the run was last opened."""

    def holds_data(self) -> bool:
        """Whether central's rows or results are here (or a task that uses them)."""
        return self.data is not None or self.result is not None or self.task is not None


class RunStore:
    """Every job's :class:`Run`, each discarded when its time is up (see the module)."""

    def __init__(
        self,
        *,
        result_seconds: float,
        grace_seconds: float,
        idle_seconds: float = 24 * 3600,
        clock: Clock = time.monotonic,
    ) -> None:
        self.result_seconds = result_seconds
        self._grace = grace_seconds
        self._idle = idle_seconds
        self._clock = clock
        self._runs: dict[int, Run] = {}

    # ------------------------------------------------------------- reading (never creates)

    def get(self, job_id: int) -> Run | None:
        return self._runs.get(job_id)

    def view(self, job_id: int) -> Run:
        """The job's run, or an empty one that is not stored (for pages)."""
        return self._runs.get(job_id) or Run(job_id=job_id)

    def has_results(self, job_id: int) -> bool:
        run = self._runs.get(job_id)
        return run is not None and run.result is not None

    def runs(self) -> list[Run]:
        return list(self._runs.values())

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def ready_jobs(self, site_id: str) -> list[int]:
        """The jobs where ``site_id`` clicked Start."""
        return [job_id for job_id, run in self._runs.items() if site_id in run.ready]

    # ------------------------------------------------------------- writing

    def open(self, job_id: int) -> Run:
        """The job's run, made if there is none; opening it restarts its idle time."""
        run = self._runs.get(job_id)
        if run is None:
            run = self._runs[job_id] = Run(job_id=job_id)
        run.opened = self._clock()
        return run

    def hold_data(self, job_id: int, table: Table) -> Run:
        """Hold central's rows for the job, for ``result_seconds`` unless a task takes them."""
        run = self.open(job_id)
        run.data = table
        run.data_until = self._clock() + self.result_seconds
        return run

    def park_data(self, run: Run) -> None:
        """Central's rows stay for a retry, and go ``result_seconds`` from now unless used."""
        run.task = None
        if run.data is not None:
            run.data_until = self._clock() + self.result_seconds

    def drop_data(self, run: Run) -> None:
        run.data = None
        run.data_until = None

    def keep_result(self, run: Run, result: JobResult) -> None:
        run.result = result
        run.result_until = self._clock() + self.result_seconds

    def downloaded(self, job_id: int) -> None:
        """A download started: keep the results a short grace, for the other format."""
        run = self._runs.get(job_id)
        if run is not None and run.result is not None:
            run.downloaded = True
            until = self._clock() + self._grace
            run.result_until = min(run.result_until or until, until)

    def forget(self, job_id: int) -> None:
        """Drop everything held for the job (deleted, or failed without a record)."""
        run = self._runs.pop(job_id, None)
        if run is not None:
            run.data = run.result = None

    def on_event(self, topic: Hashable, message: JobEvent | str) -> None:
        """A broker listener: a job's progress, as the pages and the sites are told it."""
        if isinstance(message, JobEvent) and message.kind == "progress":
            run = self._runs.get(topic) if isinstance(topic, int) else None
            if run is not None and message.fraction is not None:
                run.progress, run.step = message.fraction, message.message

    # ------------------------------------------------------------- expiry

    def sweep(self, now: float | None = None) -> list[Expired]:
        """Discard whatever's time is up; the jobs whose results or rows went."""
        moment = self._clock() if now is None else now
        expired: list[Expired] = []
        for job_id, run in list(self._runs.items()):
            if run.result is not None and run.result_until is not None:
                if run.result_until <= moment:
                    run.result, run.result_until = None, None
                    run.purged = DOWNLOADED if run.downloaded else NOT_DOWNLOADED
                    expired.append((job_id, "results"))
            if run.data is not None and run.task is None and run.data_until is not None:
                if run.data_until <= moment:
                    self.drop_data(run)
                    expired.append((job_id, "data"))
            if not run.holds_data() and run.opened + self._idle <= moment:
                del self._runs[job_id]
        return expired
