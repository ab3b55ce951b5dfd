"""The site's jobs without a network: remote-module trust, upload checks, start and cancel.

``LocalJobs`` talks to central only through the worker's callables (send, fetch_json,
fetch_text); here they are fakes that record what the site asked for and what it sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.exceptions import ConnectionClosed

from federation.job import JobSpec, Target
from federation.policy import Policy
from federation.protocol import (
    Cancel,
    ControlMessage,
    JobUpdate,
    Op,
    Ready,
    Reply,
    Request,
    Welcome,
    decode,
    encode,
)
from federation.registry import Registry, file_names, package_digest
from federation.site import OPEN
from portal_common.states import JobState
from portal_site.central import CentralError
from portal_site.job_info import parse_job
from portal_site.jobs import LocalJob, LocalJobs, SiteError
from portal_site.settings import SiteSettings
from portal_site.store import Store
from portal_site.worker import Worker

MEANDRAW_DIR = Path(__file__).resolve().parents[1] / "docs" / "examples" / "MEANDRAW"
MEANDRAW_FILES = {name: (MEANDRAW_DIR / name).read_bytes() for name in file_names("MEANDRAW")}
MEANDRAW_DIGEST = package_digest(MEANDRAW_FILES)
SIMI_DIGEST = Registry.with_builtins().get("SIMI").digest
FILES_PATH = "/api/algorithms/MEANDRAW/1.0.0/files/"

GOOD_CSV = b"a,b,y\n" + b"".join(f"{i},{i % 3},{i % 2}\n".encode() for i in range(12))
"""Twelve rows; y is 0/1, so it suits both a continuous and a binary target."""


T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def job_info(
    *,
    job_id: int = 1,
    algorithm: str = "MEANDRAW",
    version: str = "1.0.0",
    digest: str = MEANDRAW_DIGEST,
    target_type: str = "gaussian",
    min_rows: int = 10,
    state: str = "created",
) -> dict[str, Any]:
    """A job as central's API lists it (JobOut)."""
    return {
        "id": job_id,
        "name": f"job {job_id}",
        "description": "",
        "state": state,
        "message": "",
        "algorithm": algorithm,
        "version": version,
        "digest": digest,
        "columns": ["a", "b", "y"],
        "targets": [{"index": 3, "name": "y", "type": target_type}],
        "parameters": {"imputations": 2, "min_rows": min_rows},
        "seed": 1,
        "participants": [{"site_id": "north1", "institution": "North Hospital"}],
    }


class Central:
    """A fake central: serves algorithm files and job listings, records what the site sends."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(MEANDRAW_FILES if files is None else files)
        self.fetched: list[str] = []
        self.sent: list[ControlMessage] = []
        self.jobs: list[dict[str, Any]] = []

    async def fetch_text(self, path: str) -> str:
        self.fetched.append(path)
        assert path.startswith(FILES_PATH), path
        name = path.removeprefix(FILES_PATH)
        if name not in self.files:
            raise CentralError("central says: not found", status=404)
        return self.files[name].decode()

    async def fetch_json(self, path: str) -> Any:
        self.fetched.append(path)
        if path == "/api/jobs":
            return self.jobs
        for info in self.jobs:
            if path == f"/api/jobs/{info['id']}":
                return info
        raise CentralError("central says: not found", status=404)

    async def send(self, message: ControlMessage) -> None:
        self.sent.append(message)


class Site:
    """LocalJobs wired to a fake central, with approvals kept in a set."""

    def __init__(
        self,
        central: Central | None = None,
        *,
        min_rows_floor: int = 0,
        sandbox_memory: int | None = None,
    ) -> None:
        self.central = central or Central()
        self.approvals: set[str] = set()
        self.policy = Policy(min_rows=min_rows_floor)
        self.jobs = LocalJobs(
            approved=self.approvals.__contains__,
            policy=lambda: self.policy,
            sandbox_memory=sandbox_memory,
        )
        self.jobs.site_id = "north1"
        self.jobs.send = self.central.send
        self.jobs.fetch_json = self.central.fetch_json
        self.jobs.fetch_text = self.central.fetch_text

    def add(self, **info: Any) -> LocalJob:
        return self.jobs._merge(parse_job(job_info(**info)))


def _refusal(error: pytest.ExceptionInfo[SiteError]) -> str:
    return error.value.message


# ---------------------------------------------------------------- which code runs here


def test_a_builtin_digest_is_trusted_without_a_download() -> None:
    site = Site()
    job = site.add(algorithm="SIMI", version="anything", digest=SIMI_DIGEST)
    code = run(site.jobs.remote_code(job))
    assert code.builtin and code.approved
    assert code.name == "SIMI" and code.digest == SIMI_DIGEST
    assert "def " in code.source
    assert site.central.fetched == []
    # It starts with no approval at all.
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    run(site.jobs.start(job))
    assert site.central.sent == [Ready(job_id="1")]
    assert site.central.fetched == []


def test_a_remote_module_is_downloaded_checked_shown_and_waits_for_approval() -> None:
    site = Site()
    central = site.central
    job = site.add()
    code = run(site.jobs.remote_code(job))
    assert sorted(central.fetched) == sorted(FILES_PATH + name for name in MEANDRAW_FILES)
    assert code.name == "MEANDRAW" and code.version == "1.0.0"
    assert code.digest == MEANDRAW_DIGEST
    assert code.source == MEANDRAW_FILES["MEANDRAWRemote.py"].decode()
    assert not code.builtin
    assert not code.approved

    site.approvals.add(MEANDRAW_DIGEST)
    again = run(site.jobs.remote_code(job))
    assert again.approved and not again.builtin
    assert len(central.fetched) == 3, "the verified code is kept for the job, not fetched again"

    # Withdrawing the approval takes effect at once.
    site.approvals.discard(MEANDRAW_DIGEST)
    assert not run(site.jobs.remote_code(job)).approved


def test_approval_is_by_digest_not_by_name() -> None:
    site = Site()
    site.approvals.add("0" * 64)  # some other version's digest
    job = site.add()
    assert not run(site.jobs.remote_code(job)).approved


@pytest.mark.parametrize("file", sorted(MEANDRAW_FILES))
def test_a_tampered_file_is_refused_by_digest(file: str) -> None:
    tampered = bytearray(MEANDRAW_FILES[file])
    at = tampered.index(b"e")
    tampered[at : at + 1] = b"E"  # one changed byte
    central = Central({**MEANDRAW_FILES, file: bytes(tampered)})
    site = Site(central)
    site.approvals.add(MEANDRAW_DIGEST)  # the genuine version was approved
    job = site.add()

    with pytest.raises(SiteError) as refused:
        run(site.jobs.remote_code(job))
    message = _refusal(refused)
    assert "tampered" in message
    assert MEANDRAW_DIGEST[:16] in message
    assert package_digest({**MEANDRAW_FILES, file: bytes(tampered)})[:16] in message
    assert refused.value.status == 409
    assert job.algorithm is None

    # Approval of the genuine digest does not let the tampered code run.
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    with pytest.raises(SiteError) as not_started:
        run(site.jobs.start(job))
    assert "tampered" in _refusal(not_started)
    assert central.sent == []
    assert not job.started and job.runner is None


def test_a_missing_file_at_central_is_a_clear_error() -> None:
    files = {k: v for k, v in MEANDRAW_FILES.items() if k != "MEANDRAWRemote.py"}
    site = Site(Central(files))
    with pytest.raises(SiteError) as refused:
        run(site.jobs.remote_code(site.add()))
    assert refused.value.status == 404
    assert "not found" in _refusal(refused)


def test_without_central_the_code_cannot_be_fetched() -> None:
    jobs = LocalJobs(approved=lambda digest: True)
    job = jobs._merge(parse_job(job_info()))
    with pytest.raises(SiteError) as refused:
        run(jobs.remote_code(job))
    assert "not signed in" in _refusal(refused)


# ---------------------------------------------------------------- the site's data


def test_refresh_lists_central_jobs() -> None:
    site = Site()
    site.central.jobs = [job_info(job_id=1), job_info(job_id=2, state="waiting")]
    listed = run(site.jobs.refresh())
    assert [j.job_id for j in listed] == ["2", "1"]
    second = site.jobs.get("2")
    assert second is not None and second.state == "waiting"
    assert site.central.fetched == ["/api/jobs"]


def test_a_good_upload_is_held_in_memory() -> None:
    site = Site()
    job = site.add()
    table = run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    assert job.table is table
    assert table.rows == 12 and table.columns == ("a", "b", "y")
    assert table.label == "north.csv"
    assert any("north.csv" in e.message for e in job.events)


@pytest.mark.parametrize(
    ("case", "content", "info", "words"),
    [
        (
            "columns",
            b"a,c,y\n" + b"1,2,3\n" * 12,
            {},
            ["columns differ", "missing 'b'", "unexpected 'c'"],
        ),
        (
            "binary target",
            b"a,b,y\n" + b"1,2,0\n" * 10 + b"1,2,2\n1,2,1\n",
            {"algorithm": "SIMI", "digest": SIMI_DIGEST, "target_type": "logistic"},
            ["'y'", "binary", "not 0 or 1", "2"],
        ),
        ("min_rows", b"a,b,y\n" + b"1,2,3\n" * 5, {"min_rows": 10}, ["5 rows", "10", "min_rows"]),
        ("non-numeric", b"a,b,y\n" + b"1,2,x\n" * 12, {}, ["x"]),
    ],
)
def test_an_upload_that_does_not_fit_the_job_is_refused(
    case: str, content: bytes, info: dict[str, Any], words: list[str]
) -> None:
    site = Site()
    job = site.add(**info)
    with pytest.raises(SiteError) as refused:
        run(site.jobs.upload(job, content, "north.csv"))
    message = _refusal(refused)
    assert refused.value.status == 422, case
    assert refused.value.field == "file", case
    assert "north.csv" in message, (case, message)
    for word in words:
        assert word in message, (case, word, message)
    assert job.table is None


def test_an_upload_with_factor_and_carried_text_is_coded_by_the_jobs_levels() -> None:
    """A factor's text and a carried ID are fine in their columns, in any column order; a
    level outside the job's list is refused with its count."""
    site = Site()
    job = site.jobs._merge(
        parse_job(
            {
                **job_info(),
                "columns": ["id", "a", "g", "y"],
                "targets": [{"index": 3, "name": "y", "type": "gaussian"}],
                "roles": {"factors": {"g": ["lo", "hi"]}, "carried": ["id"]},
            }
        )
    )
    rows = b"".join(b"x%d,%s,1,%d\n" % (i, b"hi" if i % 2 else b"lo", i) for i in range(12))

    table = run(site.jobs.upload(job, b"id,g,a,y\n" + rows, "north.csv"))

    assert table.columns == ("id", "g", "a", "y")
    with pytest.raises(SiteError) as refused:
        run(site.jobs.upload(job, b"id,g,a,y\n" + rows.replace(b",lo,", b",mid,"), "north.csv"))
    message = _refusal(refused)
    assert "north.csv" in message and "'g'" in message and "6 cell(s)" in message
    with pytest.raises(SiteError) as text:
        run(site.jobs.upload(job, b"id,g,a,y\n" + rows.replace(b",1,", b",one,"), "north.csv"))
    assert "column 'a'" in _refusal(text) and "not numeric" in _refusal(text)


def test_the_sites_own_minimum_wins_over_a_smaller_job_minimum() -> None:
    site = Site(min_rows_floor=20)
    job = site.add(min_rows=10)
    with pytest.raises(SiteError) as refused:
        run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    assert refused.value.status == 422
    assert "12 rows" in _refusal(refused) and "20" in _refusal(refused)


# ---------------------------------------------------------------- start and cancel


def test_start_needs_data_first() -> None:
    site = Site()
    site.approvals.add(MEANDRAW_DIGEST)
    job = site.add()
    with pytest.raises(SiteError) as refused:
        run(site.jobs.start(job))
    assert refused.value.status == 409
    assert "upload" in _refusal(refused)
    assert site.central.sent == []
    assert not job.started


def test_start_refuses_unapproved_remote_code_then_sends_ready_once_approved() -> None:
    site = Site()
    job = site.add()
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    with pytest.raises(SiteError) as refused:
        run(site.jobs.start(job))
    assert refused.value.status == 409
    assert "approve" in _refusal(refused) and MEANDRAW_DIGEST[:12] in _refusal(refused)
    assert site.central.sent == []
    assert not job.started and job.runner is None

    site.approvals.add(MEANDRAW_DIGEST)
    run(site.jobs.start(job))
    assert site.central.sent == [Ready(job_id="1")]
    assert job.started and job.runner is not None
    assert run(site.jobs.runner("1")) is job.runner
    # Once started, the data cannot be swapped under the runner.
    with pytest.raises(SiteError) as locked:
        run(site.jobs.upload(job, GOOD_CSV, "other.csv"))
    assert locked.value.status == 409


async def _offline(message: ControlMessage) -> None:
    """The worker's send while its socket is down."""
    raise CentralError("not connected to central (reconnecting: lost)")


@pytest.mark.parametrize("how", ["no sender", "socket down"])
def test_a_start_that_cannot_reach_central_leaves_the_job_not_started(how: str) -> None:
    """Central never heard Ready, so the site must not show itself as ready (nor lock the data).

    The user sees an error and can press Start again once connected.
    """
    site = Site()
    site.jobs.send = None if how == "no sender" else _offline
    job = site.add(algorithm="SIMI", digest=SIMI_DIGEST)
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    with pytest.raises((SiteError, CentralError)) as refused:
        run(site.jobs.start(job))
    assert "not connected" in str(refused.value)
    assert not job.started, "start failed, yet the job is marked started (ready) at the site"
    # The data can still be replaced, and Start works once the connection is back.
    run(site.jobs.upload(job, GOOD_CSV, "north-fixed.csv"))
    site.jobs.send = site.central.send
    run(site.jobs.start(job))
    assert site.central.sent == [Ready(job_id="1")]


def test_cancel_sends_cancel_and_drops_the_data() -> None:
    site = Site()
    site.approvals.add(MEANDRAW_DIGEST)
    job = site.add()
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    run(site.jobs.start(job))
    run(site.jobs.cancel(job))
    assert site.central.sent[-1] == Cancel(job_id="1", reason="cancelled at the site")
    assert isinstance(site.central.sent[-1], Cancel)
    assert job.table is None and job.runner is None and not job.started
    assert run(site.jobs.runner("1")) is None
    assert any("dropped" in e.message for e in job.events)


def test_a_finished_job_cannot_be_cancelled_started_or_given_data() -> None:
    site = Site()
    job = site.add(state="completed")
    for action in (site.jobs.cancel(job), site.jobs.start(job)):
        with pytest.raises(SiteError) as refused:
            run(action)
        assert refused.value.status == 409
    with pytest.raises(SiteError):
        run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    assert site.central.sent == []


def test_central_ending_the_job_drops_the_data() -> None:
    site = Site()
    job = site.add(algorithm="SIMI", digest=SIMI_DIGEST)
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    run(site.jobs.start(job))
    run(site.jobs.on_control(JobUpdate(job_id="1", state=JobState.CANCELLED, message="at central")))
    assert job.state == "cancelled"
    assert job.table is None and job.runner is None and not job.started


def test_after_a_reconnect_the_site_says_ready_again_when_central_forgot() -> None:
    site = Site()
    job = site.add(algorithm="SIMI", digest=SIMI_DIGEST)
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    run(site.jobs.start(job))
    site.central.sent.clear()
    run(site.jobs.on_control(Welcome(site_id="north1", ready=["1"])))
    assert site.central.sent == []
    run(site.jobs.on_control(Welcome(site_id="north1", ready=[])))
    assert site.central.sent == [Ready(job_id="1")]


# ---------------------------------------------------------------- code that runs here, and where


def _spy_package(markers: Path) -> dict[str, bytes]:
    """A package whose halves each write a marker, with their PID, as soon as they load."""
    central = f"""
import os
with open({str(markers / "central")!r}, "a") as marker:
    marker.write(str(os.getpid()))

async def run(job):
    pass
"""
    remote = f"""
import os
try:
    with open({str(markers / "remote")!r}, "a") as marker:
        marker.write(str(os.getpid()))
except OSError:
    pass  # in the sandbox no file can be written

def prepare(site):
    return {{"rows_used": site.data.rows}}

def who(site):
    return {{"pid": os.getpid()}}

HANDLERS = {{"who": who}}
"""
    params = {
        "name": "SPY",
        "version": "1.0.0",
        "capabilities": {"targets": "single", "target_types": ["gaussian"]},
        "replies": {"who": {"pid": "int"}},
        "parameters": {
            "type": "object",
            "properties": {
                "imputations": {"type": "integer", "default": 2},
                "min_rows": {"type": ["integer", "null"], "default": None},
            },
        },
    }
    return {
        "SPYCentral.py": central.encode(),
        "SPYRemote.py": remote.encode(),
        "params.json": json.dumps(params).encode(),
    }


class SpyCentral(Central):
    async def fetch_text(self, path: str) -> str:
        self.fetched.append(path)
        return self.files[path.rsplit("/", 1)[1]].decode()


def test_no_code_runs_at_a_site_before_approval_and_the_central_half_never(
    tmp_path: Path,
) -> None:
    files = _spy_package(tmp_path)
    digest = package_digest(files)
    site = Site(SpyCentral(files), sandbox_memory=256 * 2**20)  # FIP_SITE_SANDBOX_MEMORY_MB
    job = site.add(algorithm="SPY", digest=digest, target_type="gaussian")

    code = run(site.jobs.remote_code(job))  # what the job's page shows
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    with pytest.raises(SiteError):
        run(site.jobs.start(job))

    assert "def who(site)" in code.source and '"replies"' in code.params and not code.approved
    assert not (tmp_path / "central").exists() and not (tmp_path / "remote").exists()

    site.approvals.add(digest)
    run(site.jobs.start(job))
    runner = run(site.jobs.runner("1"))
    assert runner is not None
    spec = JobSpec(
        job_id="1",
        algorithm="SPY",
        version="1.0.0",
        digest=digest,
        columns=("a", "b", "y"),
        targets=(Target(index=3, name="y", type="gaussian"),),
        params={"imputations": 2, "min_rows": 10},
        seed=1,
        sites=("north1",),
    )
    try:
        opened = decode(
            runner.handle(
                encode(
                    Request(job_id="1", seq=0, ops=[Op(name=OPEN, args={"spec": spec.to_wire()})])
                )
            )
        )
        answer = decode(runner.handle(encode(Request(job_id="1", seq=1, ops=[Op(name="who")]))))
        pid = int(answer.results[0]["pid"]) if isinstance(answer, Reply) else 0
        with open(f"/proc/{pid}/limits") as limits:
            data_limit = next(line for line in limits if line.startswith("Max data size"))
    finally:
        numbers = (runner.requests, runner.budget, runner.numbers_sent)
        run(site.jobs.cancel(job))  # the sandbox goes with the job, whatever happened

    assert isinstance(opened, Reply), opened
    assert isinstance(answer, Reply), answer
    assert pid != os.getpid(), "the approved remote half runs in a process of its own"
    assert data_limit.split()[3:5] == [str(256 * 2**20)] * 2, "the site's memory limit holds"
    # open: rows, rows_used, 3 observed, 1 target_rows; then one pid
    assert numbers == (2, 2 + 1 * 25, 7)
    assert not (tmp_path / "central").exists(), "the central half never runs at a site"
    remote_marker = tmp_path / "remote"
    assert not remote_marker.exists() or remote_marker.read_text() == ""
    for _ in range(100):  # the sandbox is killed with the job
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the sandbox process outlived its job")


def test_the_sandboxs_memory_limit_is_a_setting_and_a_too_small_one_is_refused_by_name(
    tmp_path: Path,
) -> None:
    """FIP_SITE_SANDBOX_MEMORY_MB reaches the jobs (whose sandboxes hold it, as above); unset,
    a sandbox has no limit of its own; below 64 MiB (numpy alone needs some) it is refused."""
    from pydantic import ValidationError

    from portal_site.cli import _problems
    from portal_site.state import SiteState
    from tests.site_fixtures import site_settings

    state = SiteState.create(site_settings(tmp_path / "a", sandbox_memory_mb=512))
    try:
        assert state.jobs._sandbox_memory == 512 * 2**20
    finally:
        state.store.dispose()
    assert site_settings(tmp_path / "b").sandbox_memory_bytes is None
    with pytest.raises(ValidationError) as caught:
        site_settings(tmp_path / "c", sandbox_memory_mb=32)
    assert _problems(caught.value) == (
        "FIP_SITE_SANDBOX_MEMORY_MB: Input should be greater than or equal to 64"
    )


def test_a_comparison_answers_only_the_methods_started_here() -> None:
    """Central lists a new 'method' of a started comparison with another algorithm: the
    site's data does not answer it; a retry of a started method is answered."""
    registry = Registry.with_builtins()
    simi, avgmmi = registry.get("SIMI"), registry.get("AVGMMI")
    site = Site()

    def method(job_id: int, algorithm: Any) -> dict[str, Any]:
        return {
            "id": job_id,
            "algorithm": algorithm.name,
            "version": algorithm.version,
            "digest": algorithm.digest,
            "state": "created",
            "message": "",
            "participants": ["north1"],
        }

    job = site.add(algorithm="SIMI", version=simi.version, digest=simi.digest)
    job.info = parse_job({**job.info.model_dump(), "methods": [method(2, simi)]})
    run(site.jobs.upload(job, GOOD_CSV, "north.csv"))
    run(site.jobs.start(job))
    swapped = {**job_info(job_id=99, algorithm="AVGMMI", version=avgmmi.version), "parent": 1}
    swapped["digest"] = avgmmi.digest
    retried = {**job_info(job_id=100, algorithm="SIMI", version=simi.version), "parent": 1}
    retried["digest"] = simi.digest
    site.central.jobs = [swapped, retried]

    assert run(site.jobs.runner("99")) is None
    assert run(site.jobs.runner("100")) is not None


def test_a_site_tells_central_the_real_reason_it_cannot_answer() -> None:
    """Not "this site holds no data" when the site could not reach central to look the job
    up, nor when the method is one it did not start: each refusal says what happened."""

    async def unreachable(path: str) -> Any:
        raise CentralError("central is unreachable: connection refused", status=None)

    site = Site()
    site.jobs.fetch_json = unreachable
    with pytest.raises(SiteError) as refused:
        run(site.jobs.answering("42"))
    assert _refusal(refused) == (
        "this site could not look up job 42 at central: central is unreachable: connection refused"
    )
    assert "holds no data" not in _refusal(refused)

    known = site.add(job_id=7)  # known here, never started
    with pytest.raises(SiteError) as refused:
        run(site.jobs.answering(known.job_id))
    assert "this site holds no data for job 7" in _refusal(refused)


class _Socket:
    """Central's end of the site's WebSocket, as the worker sees it: records what it is sent,
    or fails every send as a dropped connection does."""

    def __init__(self, *, closed: bool, error: Exception | None = None) -> None:
        self.closed = closed
        self.error = error
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed(None, None)
        if self.error is not None:
            raise self.error
        self.sent.append(data)


def test_the_ledger_lists_a_reply_only_once_it_was_sent(tmp_path: Path) -> None:
    """A reply whose send failed (the connection dropped) is not in the ledger as sent; one
    that went is, with the real reason the site refused (no central set here)."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    try:
        worker = Worker(
            settings=SiteSettings(data_dir=tmp_path),
            store=store,
            jobs=LocalJobs(approved=store.approved),
        )
        frame = encode(Request(job_id="5", seq=1, ops=[Op(name=OPEN)]))
        dropped = _Socket(closed=True)
        run(worker._answer(dropped, frame))  # type: ignore[arg-type]
        assert store.ledger() == [] and worker.sent["messages"] == 0

        working = _Socket(closed=False)
        run(worker._answer(working, frame))  # type: ignore[arg-type]
        [entry] = store.ledger()
        assert len(working.sent) == 1 and entry.bytes == len(working.sent[0])
        assert entry.note.startswith("refused: this site could not look up job 5 at central")
        assert entry.note.endswith("set central's URL in Settings first")
    finally:
        store.dispose()


def test_a_reply_whose_send_failed_is_logged_shown_on_its_job_and_not_in_the_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a dropped connection (central asks again for those) but a send that broke: the
    worker's task fails, its failure is logged and shown on the job, and the ledger does not
    list the reply as sent."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    try:
        jobs = LocalJobs(approved=store.approved)
        job = jobs._merge(parse_job(job_info(job_id=5)))
        worker = Worker(settings=SiteSettings(data_dir=tmp_path), store=store, jobs=jobs)
        frame = encode(Request(job_id="5", seq=3, ops=[Op(name=OPEN)]))
        broken = _Socket(closed=False, error=OSError("broken pipe"))

        async def answer() -> None:
            task = worker._tasks.spawn(worker._answer(broken, frame), what="answering central")  # type: ignore[arg-type]
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0)  # the task's done callback

        run(answer())
        assert store.ledger() == [] and worker.sent["messages"] == 0
        [warning] = [e for e in job.events if e.kind == "warning"]
        assert warning.message == "answering request 3 failed: broken pipe"
        [record] = [r for r in caplog.records if r.getMessage() == "answering central failed"]
        assert record.exc_info is not None
        assert worker.detail == "answering central failed: broken pipe"
    finally:
        store.dispose()


def test_the_heartbeat_ends_quietly_when_the_connection_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed connection ends the heartbeat without an error (the connection loop
    reconnects); any other failure of it is logged by the worker's tasks."""
    store = Store(f"sqlite:///{tmp_path / 'site.db'}")
    try:
        settings = SiteSettings(data_dir=tmp_path, heartbeat_seconds=0.01)
        worker = Worker(settings=settings, store=store, jobs=LocalJobs(approved=store.approved))

        async def beat(socket: _Socket) -> None:
            task = worker._tasks.spawn(worker._heartbeat(socket), what="sending the heartbeat")  # type: ignore[arg-type]
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            await asyncio.sleep(0)

        run(beat(_Socket(closed=True)))
        assert not [r for r in caplog.records if "heartbeat" in r.getMessage()]
        run(beat(_Socket(closed=False, error=RuntimeError("encoder bug"))))
        assert [r.getMessage() for r in caplog.records] == ["sending the heartbeat failed"]
    finally:
        store.dispose()


# ---------------------------------------------------------------- what central sends


def _without(key: str) -> dict[str, Any]:
    info = job_info()
    del info[key]
    return info


@pytest.mark.parametrize(
    ("sent", "field", "reason"),
    [
        ({**job_info(), "state": "exploded"}, "state", "Input should be 'created'"),
        (_without("digest"), "digest", "Field required"),
        ({**job_info(), "columns": "a,b,y"}, "columns", "valid tuple"),
        (
            {**job_info(), "targets": [{"index": 3, "name": "y", "type": "linear"}]},
            "targets",
            "unknown method 'linear'",
        ),
        ({**job_info(), "participants": [{"institution": "North"}]}, "participants.0.site_id", ""),
        ({**job_info(), "methods": [{"id": 2}]}, "methods.0.algorithm", "Field required"),
    ],
)
def test_a_malformed_job_from_central_is_refused_naming_the_field(
    sent: dict[str, Any], field: str, reason: str
) -> None:
    site = Site()
    site.central.jobs = [sent]
    for read in (site.jobs.refresh(), site.jobs.load("1")):
        with pytest.raises(SiteError) as refused:
            run(read)
        assert _refusal(refused).startswith(
            f"central sent job 1 with a malformed field '{field}': "
        )
        assert reason in _refusal(refused)
        assert refused.value.status == 502
    assert site.jobs.known() == [], "nothing of a malformed job is kept"


def test_the_job_central_sends_is_typed_once_where_it_arrives() -> None:
    site = Site()
    site.central.jobs = [{**job_info(state="waiting"), "roles": {"carried": ["a"]}}]
    job = run(site.jobs.load("1"))
    assert job.info.targets == (Target(index=3, name="y", type="gaussian"),)
    assert job.info.roles.carried == ("a",) and job.info.roles.factors == {}
    assert job.info.site_ids == ("north1",)
    states = [job.state]
    run(site.jobs.on_control(JobUpdate(job_id="1", state=JobState.RUNNING, message="cycle 1")))
    states.append(job.state)
    assert states == [JobState.WAITING, JobState.RUNNING]
    assert all(type(state) is JobState for state in states)
    assert job.info.message == "cycle 1"
