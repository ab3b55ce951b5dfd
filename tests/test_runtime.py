"""Central's runtime: accounting, failures named by site, checks on output, clean cancellation."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from federation import runtime
from federation.errors import FipError, ProtocolError, SiteFailed
from federation.job import CENTRAL, JobEvent
from federation.protocol import Op, Request, decode
from federation.registry import Algorithm, load_algorithm
from federation.runtime import JobResult, run_job
from federation.simulation import make_spec
from federation.site import CLOSE, OPEN, SiteRunner
from federation.transport import InMemoryTransport
from tests.helpers import table

REMOTE = b"""
import time
import numpy as np

def prepare(site):
    return {"rows_used": site.data.rows, "left_out": {}}

def total(site, *, column):
    return {"sum": np.array([site.data.values[:, column - 1].sum()])}

def slow(site):
    time.sleep(0.05)
    return {}

def fail(site):
    if site.site != "central":
        raise RuntimeError(f"broken at {site.site}")
    return {}

def copy(site):
    return {"values": site.data.values.copy()}

HANDLERS = {"total": total, "slow": slow, "fail": fail}
LOCAL = {"copy": copy}
"""

CENTRALS = {
    "sums": b"""
async def run(job):
    replies = await job.ask("total", column=1)
    job.log(repr({site: float(r["sum"][0]) for site, r in replies.items()}))
    for _ in range(job.params["imputations"]):
        values = (await job.local("copy"))["values"]
        values[values != values] = 0.0
        job.emit_imputation(values)
""",
    "forever": b"""
async def run(job):
    while True:
        await job.ask("slow")
""",
    "fail": b"""
async def run(job):
    await job.ask("fail")
""",
    "tamper": b"""
async def run(job):
    values = (await job.local("copy"))["values"]
    values[0, 0] += 1
    job.emit_imputation(values)
""",
    "tamper_last": b"""
async def run(job):
    values = (await job.local("copy"))["values"]
    values[-1, 0] = float("nan")
    job.emit_imputation(values)
""",
    "short": b"""
async def run(job):
    pass
""",
}

PARAMS = {
    "name": "T",
    "version": "1",
    "capabilities": {"targets": "single", "target_types": ["gaussian"]},
    "replies": {"total": {"sum": "float[1]"}, "slow": {}, "fail": {}},
    "parameters": {
        "type": "object",
        "properties": {
            "imputations": {"type": "integer", "default": 2},
            "min_rows": {"type": ["integer", "null"], "default": None},
        },
    },
}


def _algorithm(kind: str) -> Algorithm:
    return load_algorithm(
        "T",
        {
            "TCentral.py": CENTRALS[kind],
            "TRemote.py": REMOTE,
            "params.json": json.dumps(PARAMS).encode(),
        },
    )


class RecordingTransport(InMemoryTransport):
    """The in-memory transport, noting every frame each way."""

    def __init__(self, runners: dict[str, SiteRunner]) -> None:
        super().__init__(runners)
        self.sent: list[tuple[str, bytes]] = []
        self.received: list[bytes] = []

    async def exchange(self, site: str, frame: bytes) -> bytes:
        self.sent.append((site, frame))
        answer = await super().exchange(site, frame)
        self.received.append(answer)
        return answer


def _setup(
    kind: str, sites: tuple[str, ...] = ("a", "b"), *, sandbox: bool = False
) -> tuple[Algorithm, dict[str, SiteRunner], SiteRunner, RecordingTransport]:
    algorithm = _algorithm(kind)
    rng = np.random.default_rng(0)

    def data(label: str) -> np.ndarray:
        values = rng.normal(size=(30, 2))
        values[:3, 1] = np.nan
        return values

    # Most of these tests are of central's runtime, whatever runs the remote half: it runs in
    # this process, as a built-in's does, unless the test is of what an uploaded half's sandbox
    # lets out (the sandbox itself: tests/test_sandbox.py, tests/test_site_runner.py).
    runners = {
        s: SiteRunner(
            site=s,
            data=table(f"{s}.csv", ["x", "y"], data(s)),
            algorithm=algorithm,
            sandbox=sandbox,
        )
        for s in sites
    }
    local = SiteRunner(
        site=CENTRAL,
        data=table("central.csv", ["x", "y"], data("c")),
        algorithm=algorithm,
        is_central=True,
        sandbox=sandbox,
    )
    return algorithm, runners, local, RecordingTransport(runners)


async def _run(
    algorithm: Algorithm,
    local: SiteRunner,
    transport: RecordingTransport,
    sites: tuple[str, ...] = ("a", "b"),
    events: list[JobEvent] | None = None,
) -> JobResult:
    spec = make_spec(
        algorithm=algorithm,
        central=local.data,
        sites=sites,
        targets=[("y", "gaussian")],
        params={},
        seed=3,
    )
    return await run_job(
        spec=spec,
        central_module=algorithm.central,
        local=local,
        transport=transport,
        on_event=None if events is None else events.append,
    )


def test_results_come_from_every_participant_central_first_and_traffic_is_counted() -> None:
    algorithm, runners, local, transport = _setup("sums")
    events: list[JobEvent] = []

    result = asyncio.run(_run(algorithm, local, transport, events=events))

    logged = [e.message for e in events if e.kind == "log" and e.site is None]
    assert logged[0].startswith("{'central': ") and "'a': " in logged[0] and "'b': " in logged[0]
    assert result.report["round_trips"] == 3  # open, total, close
    assert result.report["bytes_sent"] == sum(len(f) for _, f in transport.sent)
    assert result.report["bytes_received"] == sum(len(f) for f in transport.received)
    assert [s["name"] for s in result.report["sites"]] == ["central", "a", "b"]
    assert events[-1].kind == "progress" and events[-1].fraction == 1.0


def test_every_sites_request_is_on_its_way_before_centrals_own_part_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round trip overlaps central's own part with the sites' work: the request is handed to
    every site's transport before central's handler starts in its thread, not after it."""
    algorithm, runners, local, transport = _setup("sums")
    order: list[str] = []

    class Noting(RecordingTransport):
        async def exchange(self, site: str, frame: bytes) -> bytes:
            request = decode(frame)
            assert isinstance(request, Request)
            order.append(f"sent {site} {'+'.join(op.name for op in request.ops)}")
            return await super().exchange(site, frame)

    call = local.call

    def noted(name: str, args: dict[str, object], **options: object) -> object:
        order.append(f"central {name}")
        return call(name, args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "call", noted)
    asyncio.run(_run(algorithm, local, Noting(runners)))

    total = order.index("central total")
    assert {"sent a total", "sent b total"} <= set(order[:total]), order


def test_centrals_own_part_runs_in_one_thread_of_the_jobs_own_that_ends_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every call on central's data (open, the asks, the local calls) runs off the event loop
    in the same thread, one after another; the thread ends when the job has. (Closing runs
    beside it: a call stuck there must not hold up the close that ends its sandbox.)"""
    algorithm, runners, local, transport = _setup("sums")
    threads: list[threading.Thread] = []
    call = local.call

    def noted(name: str, args: dict[str, object], **options: object) -> object:
        if name != CLOSE:
            threads.append(threading.current_thread())
        return call(name, args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "call", noted)

    async def scenario() -> threading.Thread:
        await _run(algorithm, local, transport)
        return threading.current_thread()

    loop_thread = asyncio.run(scenario())
    assert len(threads) >= 4 and len(set(threads)) == 1 and threads[0] is not loop_thread
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()


def test_every_site_gets_open_then_close() -> None:
    algorithm, runners, local, transport = _setup("sums")

    asyncio.run(_run(algorithm, local, transport))

    for site in ("a", "b"):
        names = [op.name for s, frame in transport.sent if s == site for op in _ops(frame)]
        assert names == [OPEN, "total", CLOSE]
        assert runners[site].job is None


def _ops(frame: bytes) -> list[Op]:
    message = decode(frame)
    assert isinstance(message, Request)
    return message.ops


def test_failures_at_several_sites_name_each_site() -> None:
    algorithm, _, local, transport = _setup("fail", sandbox=True)

    with pytest.raises(SiteFailed) as caught:
        asyncio.run(_run(algorithm, local, transport))

    failed = "the algorithm's remote half failed"
    assert caught.value.failures == {"a": failed, "b": failed}
    assert f"site 'a': {failed}; site 'b'" in str(caught.value)
    assert "broken at" not in str(caught.value), "an uploaded half's own text stays at the site"


def test_an_unreachable_site_fails_the_job_naming_it() -> None:
    algorithm, _, local, _ = _setup("sums")

    class Unreachable(RecordingTransport):
        async def exchange(self, site: str, frame: bytes) -> bytes:
            if site == "b":
                raise ConnectionError("connection refused")
            return await super().exchange(site, frame)

    transport = Unreachable({"a": _setup("sums")[1]["a"]})

    with pytest.raises(SiteFailed, match=r"site 'b': no answer \(ConnectionError"):
        asyncio.run(_run(algorithm, local, transport))


def test_changing_observed_values_is_refused() -> None:
    algorithm, _, local, transport = _setup("tamper")

    with pytest.raises(FipError, match="changed observed values"):
        asyncio.run(_run(algorithm, local, transport))


def test_an_observed_cell_made_missing_in_a_later_block_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check runs a block of rows at a time: the last row's block is checked too."""
    monkeypatch.setattr(runtime, "_CHECK_ROWS", 7)
    algorithm, _, local, transport = _setup("tamper_last")

    with pytest.raises(FipError, match="changed observed values"):
        asyncio.run(_run(algorithm, local, transport))


def test_too_few_imputed_datasets_is_an_error() -> None:
    algorithm, _, local, transport = _setup("short")

    with pytest.raises(ProtocolError, match="produced 0 imputed datasets, not 2"):
        asyncio.run(_run(algorithm, local, transport))


def test_cancelling_stops_the_job_and_closes_it_at_every_site() -> None:
    """A cancelled job stops at its next message, and every site drops the job's state."""
    algorithm, runners, local, transport = _setup("forever")

    async def scenario() -> None:
        task = asyncio.create_task(_run(algorithm, local, transport))
        for _ in range(200):  # bounded wait for the job to be under way
            await asyncio.sleep(0.01)
            if len(transport.sent) >= 6:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=2.0)

    asyncio.run(scenario())

    assert all(runner.job is None for runner in runners.values())
    assert local.job is None
    last_ops = {site: _ops(frame) for site, frame in transport.sent}
    assert all(ops[-1].name == CLOSE for ops in last_ops.values())


def test_imputed_datasets_are_rebuilt_from_the_missing_cells() -> None:
    algorithm, _, local, transport = _setup("sums")

    result = asyncio.run(_run(algorithm, local, transport))

    original = result.dataset(0)
    first = result.dataset(1)
    assert np.isnan(original).sum() == 3 and not np.isnan(first).any()
    assert result.imputed_cells[0].shape == (3,)
    assert np.array_equal(first[~np.isnan(original)], original[~np.isnan(original)])


def test_site_names_must_be_unique_and_not_central() -> None:
    algorithm, _, local, transport = _setup("sums")

    with pytest.raises(FipError, match="unique and not 'central'"):
        asyncio.run(_run(algorithm, local, transport, sites=("a", "central")))
