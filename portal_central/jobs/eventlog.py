"""Central's job event logs: stored in the database (messages, never data) so that they outlive a
restart, with the recent lines of the jobs being looked at cached in memory.

The log listens to the broker: every event of a job (not its progress) is appended and written
to the database in batches, in a worker thread, at most ``SAVE_INTERVAL`` late. Reading a log
that is not cached reads the stored lines; the cache holds at most ``capacity`` jobs' logs and
forgets the least recently read one first (never one with lines not yet written).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from federation.job import JobEvent
from portal_central.db import Database
from portal_central.models import Job, JobEventRecord
from portal_common.tasks import Tasks

log = logging.getLogger(__name__)
HISTORY = 200
"""Lines of a job's log that pages show (the newest ones)."""
SAVE_INTERVAL = 0.5
"""Seconds between two writes of a job's new events to its stored log."""


@dataclass
class _Log:
    events: list[JobEvent] | None = None
    """The newest lines, stored and new, once read; None until then."""
    unsaved: list[JobEvent] = field(default_factory=list)
    saving: list[JobEvent] = field(default_factory=list)
    save_due: bool = False


class JobLogs:
    """Every job's event log (see the module)."""

    def __init__(self, *, database: Database, tasks: Tasks, capacity: int = 64) -> None:
        self._database = database
        self._tasks = tasks
        self._capacity = capacity
        self._logs: OrderedDict[int, _Log] = OrderedDict()
        self._lock = threading.Lock()
        """Guards ``_logs``: pages read logs from worker threads, events come on the loop."""
        self._writing = threading.Lock()
        """Held while a batch is written or a stored log read: a reader sees a batch either
        in the database or in ``saving``, never in both or neither."""

    def events(self, job_id: int) -> list[JobEvent]:
        """The job's log, oldest first (the newest ``HISTORY`` lines). May read the database:
        call it from a worker thread (a plain ``def`` route) or through ``asyncio.to_thread``."""
        with self._lock:
            entry = self._logs.get(job_id)
            if entry is not None and entry.events is not None:
                self._logs.move_to_end(job_id)
                return list(entry.events)
        with self._writing:
            stored = self._read(job_id)
            with self._lock:
                entry = self._logs.setdefault(job_id, _Log())
                if entry.events is None:
                    entry.events = (stored + entry.saving + entry.unsaved)[-HISTORY:]
                self._logs.move_to_end(job_id)
                self._trim()
                return list(entry.events)

    def on_event(self, topic: Hashable, message: JobEvent | str) -> None:
        """A broker listener: keep and store a job's events (its progress is not logged)."""
        if not isinstance(topic, int) or not isinstance(message, JobEvent):
            return
        if message.kind == "progress" and message.fraction is not None:
            return
        with self._lock:
            entry = self._logs.setdefault(topic, _Log())
            if entry.events is not None:
                entry.events.append(message)
                del entry.events[:-HISTORY]
            entry.unsaved.append(message)
            due, entry.save_due = entry.save_due, True
        if not due:
            self._tasks.spawn(self._save_soon(topic), what="storing the event log")

    def forget(self, job_id: int) -> None:
        """A deleted job: its cached lines go (its stored ones went with its record)."""
        with self._lock:
            self._logs.pop(job_id, None)

    def cached(self) -> int:
        """How many jobs' logs are held in memory now."""
        return len(self._logs)

    def flush(self) -> None:
        """Write every line not yet stored (at shutdown, after the jobs' last events)."""
        for job_id in list(self._logs):
            self._save(job_id)

    async def _save_soon(self, job_id: int) -> None:
        await asyncio.sleep(SAVE_INTERVAL)
        await asyncio.to_thread(self._save, job_id)

    def _save(self, job_id: int) -> None:
        with self._writing:
            with self._lock:
                entry = self._logs.get(job_id)
                if entry is None:
                    return
                entry.saving, entry.unsaved, entry.save_due = entry.unsaved, [], False
                batch = entry.saving
            try:
                self._write(job_id, batch)
            finally:
                with self._lock:
                    entry.saving = []
                    self._trim()

    def _trim(self) -> None:
        """Forget the least recently read logs beyond ``capacity`` (never unsaved lines)."""
        over = len(self._logs) - self._capacity
        for job_id in list(self._logs):
            if over <= 0:
                break
            entry = self._logs[job_id]
            if not (entry.unsaved or entry.saving or entry.save_due):
                del self._logs[job_id]
                over -= 1

    def _read(self, job_id: int) -> list[JobEvent]:
        with self._database.session() as session:
            rows = session.scalars(
                select(JobEventRecord)
                .where(JobEventRecord.job_id == job_id)
                .order_by(JobEventRecord.id.desc())
                .limit(HISTORY)
            ).all()
            return [
                JobEvent(kind=r.kind, message=r.message, site=r.site, at=r.at)  # type: ignore[arg-type]
                for r in reversed(rows)
            ]

    def _write(self, job_id: int, batch: list[JobEvent]) -> None:
        if not batch:
            return
        try:
            with self._database.session() as session:
                if session.get(Job, job_id) is None:
                    return  # deleted meanwhile
                session.add_all(
                    JobEventRecord(
                        job_id=job_id,
                        at=e.at,
                        kind=e.kind,
                        site=e.site,
                        message=e.message[:10_000],
                    )
                    for e in batch
                )
        except SQLAlchemyError:
            log.exception("job %s: could not store %d event(s) of its log", job_id, len(batch))
