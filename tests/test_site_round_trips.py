"""The site's round-trip plumbing: the ledger written in batches by its own thread and read
back whole; one long-lived HTTPS client to central; a request decoded once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table

from federation import protocol
from federation.job import JobSpec
from federation.protocol import Op, Reply, Request, encode
from federation.site import CLOSE, OPEN, SiteRunner
from portal_site.central import CentralError
from portal_site.job_info import parse_job
from portal_site.jobs import LocalJob
from portal_site.state import SiteState
from portal_site.store import LedgerEntry, LedgerWriter, Store, utcnow
from tests.helpers import builtin
from tests.site_fixtures import site_settings
from tests.test_secure_aggregation import federation, secure_spec
from tests.test_site_trust import job_info


class _Central:
    """Where a worker sends its replies (its connection to central), kept in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)


def test_every_recorded_message_is_listed_in_order_even_from_many_threads(
    tmp_path: Path,
) -> None:
    """Rows recorded from several threads at once, faster than one transaction each, are all
    in the ledger the moment it is read, each thread's in the order it recorded them."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    per_thread, threads = 300, 4

    def send(worker: int) -> None:
        for seq in range(per_thread):
            store.record(
                job_id=f"job-{worker}", kind=f"op-{seq}", shapes=[[3]], rows=10, size=seq + 1
            )

    started = [threading.Thread(target=send, args=(w,)) for w in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    try:
        entries = store.ledger(limit=10_000)
        assert len(entries) == per_thread * threads
        for worker in range(threads):
            mine = [e for e in reversed(entries) if e.job_id == f"job-{worker}"]
            assert [e.kind for e in mine] == [f"op-{seq}" for seq in range(per_thread)]
        assert all(e.shapes == [[3]] and e.at is not None for e in entries)
        store.record(job_id="last", kind="ready", shapes=[], rows=0, size=5)
        assert store.ledger(limit=1)[0].job_id == "last"
    finally:
        store.dispose()


def test_what_is_recorded_before_closing_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    store = Store(url)
    for seq in range(50):
        store.record(job_id="j", kind=f"op-{seq}", shapes=[], rows=0, size=1)
    store.dispose()

    again = Store(url)
    try:
        assert len(again.ledger(limit=100)) == 50
    finally:
        again.dispose()


def test_the_site_keeps_one_https_client_to_central_until_its_address_changes(
    tmp_path: Path,
) -> None:
    """Every call to central (sign-in, refresh, jobs, files, a Start) goes through one client
    whose connection stays open; a new central URL or CA file gets a new one, and stopping
    the portal closes it."""
    state = SiteState.create(site_settings(tmp_path / "site"))
    worker = state.worker

    async def scenario() -> None:
        state.store.update_config(central_url="https://central.example:8443", site_id="north")
        first = worker.client()
        assert worker.client() is first
        state.store.update_config(ca_file=str(tmp_path / "missing-ca.pem"))
        with pytest.raises(CentralError, match="CA file"):
            worker.client()
        state.store.update_config(central_url="https://other.example:8443", ca_file="")
        second = worker.client()
        assert second is not first and second.url == "https://other.example:8443"
        assert worker.client() is second
        await worker.stop()
        assert worker.client() is not second  # stopped: the next use opens a new one

    try:
        asyncio.run(scenario())
    finally:
        state.store.dispose()


def _a_site_with_a_simi_job(tmp_path: Path) -> tuple[SiteState, JobSpec, SiteRunner]:
    """A site whose worker knows one SIMI job (without secure aggregation), and its runner."""
    state = SiteState.create(site_settings(tmp_path / "site"))
    worker = state.worker
    spec = secure_spec(("site0",))
    spec = JobSpec.from_wire(
        {**spec.to_wire(), "params": {**spec.params, "secure_aggregation": False}}
    )
    _, tables = federation(24, sites=1)
    runner = SiteRunner(site="site0", data=tables["site0"], algorithm=builtin("SIMI"))
    worker.jobs._jobs[spec.job_id] = LocalJob(
        job_id=spec.job_id, info=parse_job(job_info()), runner=runner
    )
    return state, spec, runner


def test_a_request_is_decoded_once_at_the_site_and_its_reply_noted_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker decodes a request to find its job; the runner answers that decoded request
    and says what its reply holds, which the ledger notes: one decode a message, where there
    were three (the worker's, the runner's, and the reply's for the ledger)."""
    state, spec, runner = _a_site_with_a_simi_job(tmp_path)
    worker = state.worker
    decoded = []
    decode = protocol.decode

    def counting(frame: bytes) -> Any:
        decoded.append(len(frame))
        return decode(frame)

    monkeypatch.setattr("portal_site.worker.decode", counting)
    monkeypatch.setattr("federation.site.decode", counting)
    monkeypatch.setattr("federation.protocol.decode", counting)

    socket = _Central()
    requests = [
        Request(job_id=spec.job_id, seq=0, ops=[Op(name=OPEN, args={"spec": spec.to_wire()})]),
        Request(job_id=spec.job_id, seq=1, ops=[Op(name="gaussian_stats", args={"target": 4})]),
    ]

    async def scenario() -> None:
        for request in requests:
            await worker._answer(socket, encode(request))  # type: ignore[arg-type]

    try:
        asyncio.run(scenario())
        assert len(decoded) == len(requests)
        replies = [decode(frame) for frame in socket.sent]
        assert all(isinstance(reply, Reply) for reply in replies)
        rows_used = replies[0].results[-1]["rows_used"]  # type: ignore[union-attr]
        ledger = [e for e in reversed(state.store.ledger(limit=10)) if e.job_id == spec.job_id]
        assert [e.kind for e in ledger] == ["fip.open", "gaussian_stats"]
        assert [e.bytes for e in ledger] == [len(frame) for frame in socket.sent]
        assert ledger[1].rows == rows_used > 0  # read from the open's reply as it was sent
        assert ledger[1].shapes == [{"n": [], "xtx": [5, 5], "xty": [5], "yty": []}]
    finally:
        state.store.dispose()


def test_a_jobs_requests_are_answered_in_one_thread_of_its_own_until_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site's runner answers off the event loop, in the job's own thread (one request at
    a time, like the runner): every request of the job in the same thread, which is let go
    when the job's close has been answered."""
    state, spec, runner = _a_site_with_a_simi_job(tmp_path)
    worker = state.worker
    threads: list[threading.Thread] = []
    answer = runner.answer

    def noting(request: Any) -> Any:
        threads.append(threading.current_thread())
        return answer(request)

    monkeypatch.setattr(runner, "answer", noting)

    socket = _Central()
    requests = [
        Request(job_id=spec.job_id, seq=0, ops=[Op(name=OPEN, args={"spec": spec.to_wire()})]),
        Request(job_id=spec.job_id, seq=1, ops=[Op(name="gaussian_stats", args={"target": 4})]),
        Request(job_id=spec.job_id, seq=2, ops=[Op(name=CLOSE)]),
    ]

    async def scenario() -> tuple[threading.Thread, bool]:
        for request in requests[:2]:
            await worker._answer(socket, encode(request))  # type: ignore[arg-type]
        lane = worker._lanes[spec.job_id]
        await worker._answer(socket, encode(requests[2]))  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while lane.running():  # its thread ends once the close is answered
            assert time.monotonic() < deadline, "the job's thread did not end"
            await asyncio.sleep(0.005)
        return threading.current_thread(), spec.job_id in worker._lanes

    try:
        loop_thread, kept = asyncio.run(scenario())
        assert len(socket.sent) == 3
        assert all(isinstance(protocol.decode(frame), Reply) for frame in socket.sent)
        assert len(set(threads)) == 1 and threads[0] is not loop_thread
        assert not kept
    finally:
        state.store.dispose()


def _wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the ledger's writer did not get there"
        time.sleep(0.005)


def test_rows_whose_write_failed_are_written_once_the_database_takes_them_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch the database refused (here its table is away for a moment) is tried again
    before any later row: every message recorded is in the ledger, in the order sent."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    try:
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE ledger RENAME TO ledger_away")
        with caplog.at_level(logging.WARNING, logger="portal_site.store"):
            for seq in range(3):
                store.record(job_id="j", kind=f"op-{seq}", shapes=[], rows=0, size=1)
            _wait_until(lambda: "not written yet" in caplog.text)
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE ledger_away RENAME TO ledger")
        for seq in range(3, 6):
            store.record(job_id="j", kind=f"op-{seq}", shapes=[], rows=0, size=1)
        entries = store.ledger()
        assert [e.kind for e in reversed(entries)] == [f"op-{seq}" for seq in range(6)]
        assert "could not be written" not in caplog.text
    finally:
        store.dispose()


def test_rows_the_database_never_takes_are_given_up_and_logged_and_later_ones_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After its last retry a batch is given up (the loss is in the site's log); reading the
    ledger does not wait for it forever, and the rows recorded afterwards are written."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    writer = LedgerWriter(store.engine, retry_pauses=(0.001,))
    ledger = cast(Table, LedgerEntry.__table__)
    row = {"at": utcnow(), "job_id": "j", "shapes": [], "rows": 0, "bytes": 1, "note": ""}
    try:
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE ledger RENAME TO ledger_away")
        with caplog.at_level(logging.WARNING, logger="portal_site.store"):
            writer.record(ledger, {**row, "kind": "lost"})
            writer.flush()
        assert "1 ledger or event row(s) could not be written" in caplog.text
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE ledger_away RENAME TO ledger")
        writer.record(ledger, {**row, "kind": "kept"})
        writer.flush()
        assert [e.kind for e in store.ledger()] == ["kept"]
    finally:
        writer.close()
        store.dispose()


def test_only_the_first_row_of_a_batch_wakes_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording a message wakes the writer's thread only when a batch starts: the rows that
    follow while it lingers change nothing it waits for (a wake-up each would cost a thread
    switch beside the loop answering central). Every row is still written, in one batch."""
    wakes: list[int] = []

    class Counting(threading.Condition):
        def notify_all(self) -> None:
            wakes.append(1)
            super().notify_all()

    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    monkeypatch.setattr("portal_site.store.threading.Condition", Counting)
    writer = LedgerWriter(store.engine, linger=60.0)  # only a reader ends this batch
    monkeypatch.undo()
    wakes.clear()  # starting its thread set an Event (a Condition too)
    ledger = cast(Table, LedgerEntry.__table__)
    row = {"at": utcnow(), "job_id": "j", "shapes": [], "rows": 0, "bytes": 1, "note": ""}
    try:
        for seq in range(50):
            writer.record(ledger, {**row, "kind": f"op-{seq}"})
        assert len(wakes) == 1
        writer.flush()
        assert [e.kind for e in reversed(store.ledger(limit=100))] == [
            f"op-{seq}" for seq in range(50)
        ]
        writer.record(ledger, {**row, "kind": "next"})  # a new batch: its first row wakes it
        writer.flush()
        assert store.ledger(limit=1)[0].kind == "next"
    finally:
        writer.close()
        store.dispose()
