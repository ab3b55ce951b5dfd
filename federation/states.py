"""A job's states, as central records them and tells its sites (one definition for central,
its sites and the wire: ``protocol.JobUpdate`` carries one). The values are the strings stored
in central's database and sent on the wire, so a ``JobState`` compares equal to its string."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    CREATED = "created"
    WAITING = "waiting"
    RUNNING = "running"
    PARTIAL = "partial"
    """A comparison some of whose methods failed: central and the sites keep their data for a
    retry."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Central restarted while the job was under way; its data went with the restart."""


FINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})
"""States a job never leaves."""
ACTIVE = frozenset({JobState.WAITING, JobState.RUNNING, JobState.PARTIAL})
"""States in which central holds the job's data (or waits for it to run)."""
