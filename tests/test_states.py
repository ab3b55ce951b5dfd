"""Job and account states: one enum each, whose values are the strings in the databases and
on the wire (no migration changed them)."""

from __future__ import annotations

from portal_central.accounts.service import DELETED, STATUS_TRANSITIONS, STATUSES
from portal_central.accounts.status import AccountStatus, Role
from portal_central.jobs.status import ACTIVE, FINAL, TRANSITIONS, JobState
from portal_common import states


def test_job_states_are_the_stored_strings() -> None:
    assert [s.value for s in JobState] == [
        "created",
        "waiting",
        "running",
        "partial",
        "completed",
        "failed",
        "cancelled",
        "interrupted",
    ]
    assert JobState("partial") is JobState.PARTIAL
    assert "failed" in {JobState.FAILED} and str(JobState.FAILED) == "failed"
    assert f"job is {JobState.RUNNING}" == "job is running"


def test_one_definition_of_the_job_states() -> None:
    assert states.JobState is JobState and states.FINAL is FINAL and states.ACTIVE is ACTIVE
    assert set(TRANSITIONS) == set(JobState)
    assert FINAL == {state for state, moves in TRANSITIONS.items() if not moves}


def test_account_roles_and_statuses_are_the_stored_strings() -> None:
    assert [r.value for r in Role] == ["admin", "site"]
    assert [s.value for s in AccountStatus] == [
        "pending",
        "approved",
        "rejected",
        "disabled",
        "deleted",
    ]
    moves = {target for move in STATUS_TRANSITIONS.values() for target in move.values()}
    assert moves <= set(AccountStatus) and set(STATUSES) | {DELETED} == set(AccountStatus)
