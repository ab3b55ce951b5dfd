"""A job's states for both portals: defined in the engine (``federation.states``), since the
wire message that tells a site its job's state (``protocol.JobUpdate``) carries one."""

from federation.states import ACTIVE, FINAL, JobState

__all__ = ["ACTIVE", "FINAL", "JobState"]
