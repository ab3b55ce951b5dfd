"""Recording a job's moves between states, and what to do when the database refuses one.

A job must never sit in a state that nothing will move it out of: when a state cannot be
written, the job is marked failed instead (if that can still be written) and central drops
what it holds for it. Every move is published as "state" to the job's topic.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from federation.job import JobEvent
from portal_central.db import Database
from portal_central.jobs import status
from portal_central.jobs.status import JobState
from portal_central.jobs.store import RunStore
from portal_central.models import Job, utcnow
from portal_common.broker import Broker

log = logging.getLogger(__name__)


class JobMoves:
    """A job's state changes, written to the database and announced."""

    def __init__(
        self, *, database: Database, store: RunStore, broker: Broker[JobEvent | str]
    ) -> None:
        self._database = database
        self._store = store
        self._broker = broker

    def move(self, job_id: int, *, to: JobState, message: str) -> bool:
        """Record a job's new state; False (and the job failed) when the database refused."""
        try:
            with self._database.session() as session:
                job = session.get(Job, job_id)
                assert job is not None
                status.advance(job, to=to, message=message)
            return True
        except SQLAlchemyError as error:
            cause = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        log.error("job %s: could not record its state '%s': %s", job_id, to, cause)
        self.fail_unrecorded(job_id, f"central could not record the state '{to}': {cause}")
        return False

    def fail_unrecorded(self, job_id: int, reason: str) -> None:
        """Mark a job failed after a refused state write: the one move outside the transition
        table, from whatever state the database still holds; central drops its data."""
        run = self._store.get(job_id)
        if run is not None:
            self._store.drop_data(run)
            run.result = None
        try:
            with self._database.session() as session:
                job = session.get(Job, job_id)
                if job is not None and job.state not in status.FINAL:
                    job.state, job.message, job.finished_at = JobState.FAILED, reason, utcnow()
        except SQLAlchemyError:
            log.exception("job %s: could not mark it failed either", job_id)
        self._broker.publish(job_id, "state")

    def cancel_children(self, parent_id: int, *, reason: str) -> None:
        """Children that have not run are cancelled with their comparison."""
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            for child in parent.children:
                if child.state in (JobState.CREATED, JobState.WAITING):
                    status.advance(child, to=JobState.CANCELLED, message=f"{reason} before it ran")

    def interrupt_unfinished(self) -> int:
        """At start-up: jobs that were waiting or running lost central's data with the restart."""
        count = 0
        with self._database.session() as session:
            for job in session.scalars(select(Job).where(Job.state.in_(status.ACTIVE))):
                status.advance(
                    job,
                    to=JobState.INTERRUPTED,
                    message="central restarted; its data was held in memory only. "
                    "Create the job again and upload the data.",
                )
                count += 1
                for child in job.children:
                    if child.state == JobState.CREATED:
                        status.advance(child, to=JobState.CANCELLED, message="central restarted")
        return count
