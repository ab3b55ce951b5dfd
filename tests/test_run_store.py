"""Central's in-memory store of job data and results: everything in it expires, and reading
never creates an entry. Time is moved by an injected clock, never waited for."""

from __future__ import annotations

import asyncio

import numpy as np

from federation.data import Table
from federation.job import JobEvent, JobSpec
from federation.runtime import JobResult
from portal_central.jobs.store import DOWNLOADED, NOT_DOWNLOADED, RunStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock) -> RunStore:
    return RunStore(result_seconds=60, grace_seconds=5, idle_seconds=600, clock=clock)


def _table() -> Table:
    return Table(label="central.csv", columns=("x",), values=np.zeros((3, 1)))


def _result() -> JobResult:
    spec = JobSpec(
        job_id="1",
        algorithm="SIMI",
        version="1",
        digest="",
        columns=("x",),
        targets=(),
        params={},
        seed=1,
        sites=(),
    )
    return JobResult(spec=spec, table=_table(), imputed_cells=[], report={"round_trips": 1})


def test_reading_never_creates_an_entry() -> None:
    store = _store(Clock())
    assert store.get(7) is None
    assert store.view(7).data is None and store.view(7).ready == set()
    assert not store.has_results(7) and store.ready_jobs("north") == []
    store.on_event(7, JobEvent(kind="progress", message="fit", fraction=0.5))
    assert len(store) == 0 and 7 not in store
    run = store.open(7)
    assert store.get(7) is run and len(store) == 1


def test_results_expire_unless_downloaded_sooner() -> None:
    clock = Clock()
    store = _store(clock)
    kept, fetched = store.open(1), store.open(2)
    store.keep_result(kept, _result())
    store.keep_result(fetched, _result())
    store.downloaded(2)
    clock.now += 4.9
    assert store.sweep() == []
    clock.now += 0.2  # past the download's grace of 5 s
    assert store.sweep() == [(2, "results")]
    assert fetched.result is None and fetched.purged == DOWNLOADED
    assert kept.result is not None
    clock.now += 60
    assert store.sweep() == [(1, "results")]
    assert kept.result is None and kept.purged == NOT_DOWNLOADED


def test_centrals_rows_expire_while_no_task_uses_them() -> None:
    """A waiting job's rows, or a partial comparison's kept for a retry, go after
    result_seconds; rows a task is running on stay."""
    clock = Clock()
    store = _store(clock)
    waiting = store.hold_data(1, _table())
    partial = store.hold_data(2, _table())

    async def running() -> asyncio.Task[None]:
        return asyncio.create_task(asyncio.sleep(0))

    partial.task = asyncio.run(running())
    clock.now += 61
    assert store.sweep() == [(1, "data")]
    assert waiting.data is None and partial.data is not None
    store.park_data(partial)  # the comparison ended partial: its rows wait for a retry
    assert partial.task is None
    clock.now += 59
    assert store.sweep() == []
    clock.now += 2
    assert store.sweep() == [(2, "data")] and partial.data is None


def test_an_entry_holding_nothing_goes_after_its_idle_time() -> None:
    clock = Clock()
    store = _store(clock)
    store.open(1).ready.add("north")
    store.hold_data(2, _table())
    clock.now += 599
    store.sweep()
    assert 1 in store
    store.open(2)  # opened again: its idle time starts again
    clock.now += 2
    store.sweep()
    assert 1 not in store, "readiness alone is kept for idle_seconds"
    assert store.get(2) is not None and store.get(2).data is None  # type: ignore[union-attr]
    clock.now += 600
    store.sweep()
    assert store.get(2) is None, "the rows expired first, then the entry"


def test_progress_is_kept_for_a_run_that_exists() -> None:
    store = _store(Clock())
    run = store.open(3)
    store.on_event(3, JobEvent(kind="progress", message="cycle 2", fraction=0.4))
    store.on_event(3, JobEvent(kind="log", message="cycle 2: fitted 'bmi'"))
    assert (run.progress, run.step) == (0.4, "cycle 2")


def test_forget_drops_the_rows_and_results() -> None:
    store = _store(Clock())
    run = store.hold_data(4, _table())
    store.keep_result(run, _result())
    store.forget(4)
    assert 4 not in store and run.data is None and run.result is None
