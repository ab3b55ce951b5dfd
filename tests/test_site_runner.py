"""A site's runner: answers once per request, refuses what would leak rows, names every fault."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from federation.errors import ProtocolError
from federation.job import JobSpec, Target
from federation.protocol import ErrorReply, Op, Reply, Request, decode, encode
from federation.registry import Algorithm, load_algorithm
from federation.site import CLOSE, OPEN, SiteRunner
from tests.helpers import table

REMOTE = b"""
import numpy as np

def prepare(site):
    site.state["calls"] = 0
    return {"rows_used": site.data.rows, "left_out": {"nothing": 0}}

def count(site):
    site.state["calls"] += 1
    return {"calls": site.state["calls"]}

def all_rows(site):
    return {"rows": site.data.values}

def boom(site):
    raise ValueError("division by zero in step 3")

def refuse(site):
    site.refuse("this site says no")

def private(site):
    return {"values": site.data.values}

HANDLERS = {"count": count, "all_rows": all_rows, "boom": boom, "refuse": refuse}
LOCAL = {"private": private}
"""
CENTRAL = b"async def run(job):\n    pass\n"
PARAMS = b"""{"name": "T", "version": "1", "capabilities": {"targets": "single",
"target_types": ["gaussian"]}, "parameters": {"type": "object", "properties": {
"imputations": {"type": "integer", "default": 1}, "min_rows": {"type": ["integer", "null"],
"default": null}}}}"""


def _algorithm() -> Algorithm:
    return load_algorithm(
        "T", {"TCentral.py": CENTRAL, "TRemote.py": REMOTE, "params.json": PARAMS}
    )


def _spec(min_rows: int = 2) -> JobSpec:
    return JobSpec(
        job_id="j",
        algorithm="T",
        version="1",
        digest="d",
        columns=("a", "b"),
        targets=(Target(index=2, name="b", type="gaussian"),),
        params={"imputations": 1, "min_rows": min_rows},
        seed=1,
        sites=("s",),
    )


def _runner(rows: int = 12) -> SiteRunner:
    values = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    return SiteRunner(site="s", data=table("s.csv", ["a", "b"], values), remote=_algorithm().remote)


def _ask(runner: SiteRunner, seq: int, *ops: Op) -> Reply | ErrorReply:
    answer = decode(runner.handle(encode(Request(job_id="j", seq=seq, ops=list(ops)))))
    assert isinstance(answer, Reply | ErrorReply)
    return answer


def _open(min_rows: int = 2) -> Op:
    return Op(name=OPEN, args={"spec": _spec(min_rows).to_wire()})


def _results(answer: Reply | ErrorReply) -> list[dict[str, Any]]:
    assert isinstance(answer, Reply), answer
    return answer.results


def test_open_reports_rows_and_observed_counts() -> None:
    runner = _runner(rows=12)

    (summary,) = _results(_ask(runner, 0, _open()))

    assert summary["rows"] == 12
    assert summary["rows_used"] == 12
    assert summary["left_out"] == {}
    assert summary["observed"].tolist() == [12, 12]


def test_a_repeated_request_gets_the_same_reply_without_running_again() -> None:
    """A request resent after a reconnect must not be applied twice."""
    runner = _runner()
    _ask(runner, 0, _open())
    frame = encode(Request(job_id="j", seq=1, ops=[Op(name="count")]))

    first = runner.handle(frame)
    second = runner.handle(frame)
    (after,) = _results(_ask(runner, 2, Op(name="count")))

    assert first == second
    assert after["calls"] == 2


def test_a_stale_request_is_a_protocol_error() -> None:
    runner = _runner()
    _ask(runner, 0, _open())
    _ask(runner, 5, Op(name="count"))

    with pytest.raises(ProtocolError, match="stale"):
        _ask(runner, 3, Op(name="count"))


def test_rows_never_leave_a_site_even_if_the_module_tries() -> None:
    """The privacy guard refuses any array larger than (p + 1)^2 numbers."""
    runner = _runner(rows=12)
    _ask(runner, 0, _open())

    answer = _ask(runner, 1, Op(name="all_rows"))

    assert isinstance(answer, ErrorReply)
    assert answer.kind == "refused"
    assert "'rows' with 24 numbers" in answer.message and "nothing was sent" in answer.message


def test_local_handlers_cannot_be_called_by_central_over_the_wire() -> None:
    runner = _runner()
    _ask(runner, 0, _open())

    answer = _ask(runner, 1, Op(name="private"))

    assert isinstance(answer, ErrorReply)
    assert "no operation 'private'" in answer.message


def test_a_site_with_too_few_rows_refuses_to_open() -> None:
    """It still sends its counts, so that central can name a target that nobody observes."""
    runner = _runner(rows=5)

    (summary,) = _results(_ask(runner, 0, _open(min_rows=10)))

    assert "only 5 usable row(s)" in summary["refused"] and "min_rows" in summary["refused"]
    assert summary["rows_used"] == 0
    assert summary["observed"].tolist() == [5, 5]
    assert runner.job is None


def test_a_failing_handler_answers_with_an_error_naming_it() -> None:
    runner = _runner()
    _ask(runner, 0, _open())

    answer = _ask(runner, 1, Op(name="boom"))

    assert isinstance(answer, ErrorReply)
    assert answer.kind == "failed"
    assert answer.message == "ValueError: division by zero in step 3"


def test_a_refusal_names_the_file() -> None:
    runner = _runner()
    _ask(runner, 0, _open())

    answer = _ask(runner, 1, Op(name="refuse"))

    assert isinstance(answer, ErrorReply)
    assert answer.message == "s.csv: this site says no"


def test_operations_before_open_and_after_close_are_refused() -> None:
    runner = _runner()

    before = _ask(runner, 0, Op(name="count"))
    _ask(runner, 1, _open())
    _ask(runner, 2, Op(name=CLOSE))
    after = _ask(runner, 3, Op(name="count"))

    for answer in (before, after):
        assert isinstance(answer, ErrorReply)
        assert "before the job was opened" in answer.message
    assert runner.job is None


def test_only_requests_are_accepted() -> None:
    runner = _runner()

    with pytest.raises(ProtocolError, match="expects requests"):
        runner.handle(encode(Reply(job_id="j", seq=0, results=[])))


def test_open_checks_the_header_against_the_job() -> None:
    runner = SiteRunner(
        site="s",
        data=table("s.csv", ["a", "c"], np.zeros((20, 2))),
        remote=_algorithm().remote,
    )

    answer = _ask(runner, 0, _open())

    assert isinstance(answer, ErrorReply)
    assert "s.csv: columns differ" in answer.message
    assert "missing 'b'" in answer.message and "unexpected 'c'" in answer.message


def test_the_sites_own_floor_wins_over_a_job_asking_for_fewer_rows() -> None:
    """A central that sets min_rows=2 cannot make a site answer for fewer rows than its floor."""
    runner = SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], np.arange(16, dtype=np.float64).reshape(8, 2)),
        remote=_algorithm().remote,
        min_rows_floor=10,
    )

    (summary,) = _results(_ask(runner, 0, _open(min_rows=2)))

    assert "fewer than the minimum of 10 (this site's own floor)" in summary["refused"]
