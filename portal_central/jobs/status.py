"""Job states as an explicit transition table; any other move raises ``InvalidTransition``.

created -> waiting (central's data is in; waiting for every site to be online and ready)
        -> running -> completed | failed | cancelled | interrupted (central restarted mid-job)
running -> waiting when central's own data is refused as the job opens, before any site is
        asked: central's file is dropped and a corrected one can follow.

A comparison (a parent job whose children are one job per method) aggregates its children:
running -> completed when every method completed, else partial (some failed: central and the
sites keep their data so that a failed method can be retried: partial -> waiting -> running).
A child that failed is retried as a new child job; the failed one stays as a record.
"""

from __future__ import annotations

from datetime import datetime

from portal_central.errors import InvalidTransition
from portal_central.models import Job, utcnow

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"waiting", "cancelled"}),
    "waiting": frozenset({"created", "running", "cancelled", "interrupted"}),
    "running": frozenset({"waiting", "completed", "failed", "partial", "cancelled", "interrupted"}),
    "partial": frozenset({"waiting", "cancelled", "interrupted"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "interrupted": frozenset(),
}
FINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
ACTIVE = frozenset({"waiting", "running", "partial"})
RETRYABLE = frozenset({"failed", "cancelled", "interrupted"})
"""States of a comparison's child that a retry replaces."""


def advance(job: Job, *, to: str, message: str = "", now: datetime | None = None) -> None:
    """Move a job to state ``to``, or raise ``InvalidTransition`` naming both states."""
    if to not in TRANSITIONS.get(job.state, frozenset()):
        raise InvalidTransition(f"job {job.id} is {job.state}; it cannot become {to}")
    moment = now or utcnow()
    job.state = to
    if message:
        job.message = message
    if to == "running":
        job.started_at = moment
    if to in FINAL:
        job.finished_at = moment
