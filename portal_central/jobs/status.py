"""Job states as an explicit transition table; any other move raises ``InvalidTransition``.

created -> waiting (central's data is in; waiting for every site to be online and ready)
        -> running -> completed | failed | cancelled | interrupted (central restarted mid-job)
running -> waiting when central's own data is refused as the job opens, before any site is
        asked: central's file is dropped and a corrected one can follow.

A comparison (a parent job whose children are one job per method) aggregates its children:
running -> completed when every method completed, else partial (some failed: central and the
sites keep their data so that a failed method can be retried: partial -> waiting -> running).
A child that failed is retried as a new child job; the failed one stays as a record.

Central's data of a waiting job or a partial comparison is discarded when nothing used it for
the results' expiry time: the waiting job goes back to created, the comparison is cancelled.
"""

from __future__ import annotations

from datetime import datetime

from portal_central.errors import InvalidTransition
from portal_central.models import Job, utcnow
from portal_common.states import ACTIVE, FINAL, JobState

__all__ = ["ACTIVE", "FINAL", "RETRYABLE", "TRANSITIONS", "JobState", "advance"]

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.CREATED: frozenset({JobState.WAITING, JobState.CANCELLED}),
    JobState.WAITING: frozenset(
        {JobState.CREATED, JobState.RUNNING, JobState.CANCELLED, JobState.INTERRUPTED}
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.WAITING,
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.PARTIAL,
            JobState.CANCELLED,
            JobState.INTERRUPTED,
        }
    ),
    JobState.PARTIAL: frozenset({JobState.WAITING, JobState.CANCELLED, JobState.INTERRUPTED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.INTERRUPTED: frozenset(),
}
assert FINAL == frozenset(state for state, moves in TRANSITIONS.items() if not moves)
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})
"""States of a comparison's child that a retry replaces."""


def advance(job: Job, *, to: JobState, message: str = "", now: datetime | None = None) -> None:
    """Move a job to state ``to``, or raise ``InvalidTransition`` naming both states."""
    if to not in TRANSITIONS.get(JobState(job.state), frozenset()):
        raise InvalidTransition(f"job {job.id} is {job.state}; it cannot become {to}")
    moment = now or utcnow()
    job.state = to
    if message:
        job.message = message
    if to == JobState.RUNNING:
        job.started_at = moment
    if to in FINAL:
        job.finished_at = moment
