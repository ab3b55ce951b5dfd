"""A site's runner: answers once per request, sends only what the algorithm declared, keeps an
uploaded half's own words at home, and applies the site's policy before anything leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from federation.errors import ProtocolError
from federation.job import JobSpec, Target
from federation.policy import Policy
from federation.protocol import ErrorReply, Op, Reply, Request, decode, encode
from federation.registry import Algorithm, read_algorithm
from federation.site import CLOSE, MESSAGE_CHARS, OPEN, Sandboxed, SiteRunner
from tests.helpers import table

REMOTE = b"""
import numpy as np

def prepare(site):
    site.state["calls"] = 0
    return {"rows_used": site.data.rows, "left_out": {"{target} missing": 0}}

def count(site):
    site.state["calls"] += 1
    return {"calls": site.state["calls"]}

def all_rows(site):
    return {"rows": site.data.values}

def as_text(site):
    return {"value": ",".join(str(v) for v in site.data.values.ravel())}

def nested(site):
    return {"value": {"rows": site.data.values.tolist()}}

def undeclared(site):
    return {"calls": 1, "secret": float(site.data.values[0, 0])}

def not_finite(site):
    return {"value": float("nan")}

def claims(site, *, target, n):
    return {"n": n}

def boom(site):
    raise ValueError("the rows are " + repr(site.data.values.tolist()))

def refuse(site):
    site.refuse("this site says no")

def private(site):
    return {"values": site.data.values}

HANDLERS = {
    "count": count, "all_rows": all_rows, "as_text": as_text, "nested": nested,
    "undeclared": undeclared, "not_finite": not_finite, "claims": claims, "boom": boom,
    "refuse": refuse,
}
LOCAL = {"private": private}
"""
CENTRAL = b"async def run(job):\n    pass\n"
PARAMS = {
    "name": "T",
    "version": "1",
    "capabilities": {"targets": "single", "target_types": ["gaussian"]},
    "replies": {
        "count": {"calls": "int"},
        "all_rows": {"rows": "float[p]"},
        "as_text": {"value": "float"},
        "nested": {"value": "float"},
        "undeclared": {"calls": "int"},
        "not_finite": {"value": "float"},
        "claims": {"n": "rows"},
        "boom": {},
        "refuse": {},
    },
    "left_out": ["{target} missing"],
    "fits": "3",
    "parameters": {
        "type": "object",
        "properties": {
            "imputations": {"type": "integer", "default": 1},
            "min_rows": {"type": ["integer", "null"], "default": None},
        },
    },
}
VALUES = 1000.0 + np.arange(24, dtype=np.float64).reshape(12, 2) / 8
"""Rows whose every value is recognisable in a text (1000.125 ...)."""


def _algorithm() -> Algorithm:
    files = {
        "TCentral.py": CENTRAL,
        "TRemote.py": REMOTE,
        "params.json": json.dumps(PARAMS).encode(),
    }
    return read_algorithm("T", files)


def _spec(min_rows: int = 2, sites: tuple[str, ...] = ("s",)) -> JobSpec:
    return JobSpec(
        job_id="j",
        algorithm="T",
        version="1",
        digest="d",
        columns=("a", "b"),
        targets=(Target(index=2, name="b", type="gaussian"),),
        params={"imputations": 1, "min_rows": min_rows},
        seed=1,
        sites=sites,
    )


@pytest.fixture(params=["in process", "sandboxed"])
def runner(request: pytest.FixtureRequest) -> Iterator[SiteRunner]:
    """The same remote half run in the portal's process and in a sandbox process."""
    made = SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], VALUES),
        algorithm=_algorithm(),
        sandbox=request.param == "sandboxed",
    )
    yield made
    made.close()


def _ask(runner: SiteRunner, seq: int, *ops: Op) -> Reply | ErrorReply:
    answer = decode(runner.handle(encode(Request(job_id="j", seq=seq, ops=list(ops)))))
    assert isinstance(answer, Reply | ErrorReply)
    return answer


def _open(min_rows: int = 2, sites: tuple[str, ...] = ("s",)) -> Op:
    return Op(name=OPEN, args={"spec": _spec(min_rows, sites).to_wire()})


def _results(answer: Reply | ErrorReply) -> list[dict[str, Any]]:
    assert isinstance(answer, Reply), answer
    return answer.results


def _refused(answer: Reply | ErrorReply) -> str:
    assert isinstance(answer, ErrorReply), answer
    assert len(answer.message) <= MESSAGE_CHARS
    return answer.message


def _no_value_in(text: str) -> None:
    for value in VALUES.ravel():
        assert f"{value:g}" not in text and repr(float(value)) not in text


def test_open_reports_numbers_only(runner: SiteRunner) -> None:
    (summary,) = _results(_ask(runner, 0, _open()))

    assert summary["rows"] == 12 and summary["rows_used"] == 12
    assert summary["observed"].tolist() == [12, 12]
    assert summary["target_rows"].tolist() == [12]
    assert summary["left_out"].tolist() == [0]  # counts by the declared reasons: no text
    assert all(not isinstance(v, str | dict | list) for v in summary.values())


def test_a_repeated_request_gets_the_same_reply_without_running_again(runner: SiteRunner) -> None:
    """A request resent after a reconnect must not be applied twice."""
    _ask(runner, 0, _open())
    frame = encode(Request(job_id="j", seq=1, ops=[Op(name="count")]))

    first = runner.handle(frame)
    second = runner.handle(frame)
    (after,) = _results(_ask(runner, 2, Op(name="count")))

    assert first == second
    assert after["calls"] == 2


def test_a_stale_request_is_a_protocol_error(runner: SiteRunner) -> None:
    _ask(runner, 0, _open())
    _ask(runner, 5, Op(name="count"))

    with pytest.raises(ProtocolError, match="stale"):
        _ask(runner, 3, Op(name="count"))


@pytest.mark.parametrize(
    "operation",
    ["all_rows", "as_text", "nested", "undeclared", "not_finite"],
)
def test_what_was_not_declared_never_leaves(runner: SiteRunner, operation: str) -> None:
    """Rows as an array, as text, nested, under an extra key, or as NaN: refused, nothing sent."""
    _ask(runner, 0, _open())

    message = _refused(_ask(runner, 1, Op(name=operation)))

    assert f"the reply of '{operation}' is not what the algorithm declared" in message
    assert "nothing was sent" in message
    _no_value_in(message)


def test_a_count_must_match_the_rows_declared_at_open(runner: SiteRunner) -> None:
    _ask(runner, 0, _open())

    (honest,) = _results(_ask(runner, 1, Op(name="claims", args={"target": 2, "n": 12})))
    message = _refused(_ask(runner, 2, Op(name="claims", args={"target": 2, "n": 1_000_417})))

    assert honest == {"n": 12}
    assert "not what the algorithm declared" in message


def test_an_exception_text_never_leaves(runner: SiteRunner) -> None:
    """The exception holds every row; the site's reply names only its kind."""
    _ask(runner, 0, _open())

    message = _refused(_ask(runner, 1, Op(name="boom")))

    assert "failed" in message
    _no_value_in(message)


def test_local_handlers_cannot_be_called_by_central_over_the_wire(runner: SiteRunner) -> None:
    _ask(runner, 0, _open())

    message = _refused(_ask(runner, 1, Op(name="private")))

    assert "private" in message or "failed" in message
    _no_value_in(message)


def test_a_refusal_of_a_builtin_names_the_file_and_an_uploaded_ones_stays_home(
    runner: SiteRunner,
) -> None:
    _ask(runner, 0, _open())

    message = _refused(_ask(runner, 1, Op(name="refuse")))

    if isinstance(runner.remote, Sandboxed):
        assert message == "the algorithm's remote half refused"
    else:
        assert message == "s.csv: this site says no"


def test_operations_before_open_and_after_close_are_refused(runner: SiteRunner) -> None:
    before = _ask(runner, 0, Op(name="count"))
    _ask(runner, 1, _open())
    _ask(runner, 2, Op(name=CLOSE))
    after = _ask(runner, 3, Op(name="count"))

    for answer in (before, after):
        assert "before the job was opened" in _refused(answer)
    assert runner.job is None


def test_a_job_asking_more_than_it_declared_is_refused() -> None:
    """fits = 3 and max_newton_rounds = 2: open, 3 x 2 requests, close; the next is refused."""
    runner = SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], VALUES),
        algorithm=_algorithm(),
        sandbox=False,
        policy=Policy(min_rows=2, max_newton_rounds=2, min_level_count=0, max_params_per_row=1),
    )
    _ask(runner, 0, _open())
    answers = [_ask(runner, seq, Op(name="count")) for seq in range(1, 9)]

    assert all(isinstance(a, Reply) for a in answers[:7])
    assert "more operations than it declared" in _refused(answers[7])


def test_only_requests_are_accepted(runner: SiteRunner) -> None:
    with pytest.raises(ProtocolError, match="expects requests"):
        runner.handle(encode(Reply(job_id="j", seq=0, results=[])))


def test_open_checks_the_header_against_the_job() -> None:
    runner = SiteRunner(
        site="s", data=table("s.csv", ["a", "c"], np.zeros((20, 2))), algorithm=_algorithm()
    )

    message = _refused(_ask(runner, 0, _open()))

    assert "s.csv: columns differ" in message
    assert "missing 'b'" in message and "unexpected 'c'" in message


# ---------------------------------------------------------------- the site's own policy


def _policy_runner(values: np.ndarray, policy: Policy) -> SiteRunner:
    return SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], values),
        algorithm=_algorithm(),
        sandbox=False,
        policy=policy,
    )


def test_the_sites_min_rows_wins_over_a_job_asking_for_fewer_rows() -> None:
    """A central that sets min_rows=2 cannot make a site answer for fewer rows than its own."""
    runner = _policy_runner(np.arange(16, dtype=np.float64).reshape(8, 2), Policy(min_rows=10))

    message = _refused(_ask(runner, 0, _open(min_rows=2)))

    assert (
        "only 8 usable row(s) of 8, fewer than the minimum of 10 (this site's own min_rows)"
        in message
    )
    assert runner.job is None


def test_a_job_with_too_few_participants_is_refused_before_any_data_is_read() -> None:
    runner = _policy_runner(VALUES, Policy(min_sites=3))

    message = _refused(_ask(runner, 0, _open(sites=("s",))))

    assert "2 participant(s), fewer than this site's min_sites of 3" in message


def test_denied_and_not_allowed_columns_are_refused() -> None:
    denied = _policy_runner(VALUES, Policy(denied_columns=("a",)))
    allowed = _policy_runner(VALUES, Policy(allowed_columns=("a",)))

    assert "does not allow: 'a'" in _refused(_ask(denied, 0, _open()))
    assert "does not allow: 'b'" in _refused(_ask(allowed, 0, _open()))


def test_a_denied_column_is_found_whatever_its_unicode_form_or_case() -> None:
    runner = SiteRunner(
        site="s",
        data=table("s.csv", ["cafe\u0301", "b"], VALUES),
        algorithm=_algorithm(),
        sandbox=False,
        policy=Policy(denied_columns=("CAFÉ",)),
    )
    spec = {**_spec().to_wire(), "columns": ["cafe\u0301", "b"]}

    assert "does not allow" in _refused(_ask(runner, 0, Op(name=OPEN, args={"spec": spec})))


def test_too_many_coefficients_per_row_are_refused() -> None:
    """p = 2 coefficients on 5 rows is 0.4 per row, over DataSHIELD's 0.33."""
    runner = _policy_runner(VALUES[:5], Policy(min_rows=2, max_params_per_row=0.33))

    assert "max_params_per_row 0.33" in _refused(_ask(runner, 0, _open()))


def test_a_rare_level_of_a_binary_column_is_refused() -> None:
    values = VALUES.copy()
    values[:, 0] = 0.0
    values[:2, 0] = 1.0  # two rows hold level 1
    runner = _policy_runner(values, Policy(min_rows=2, min_level_count=3))

    message = _refused(_ask(runner, 0, _open()))

    assert "column 'a' has a level held by fewer than 3 row(s)" in message


# ---------------------------------------------------------------- central cannot widen the job


def _open_spec(**changes: Any) -> Op:
    wire = {**_spec().to_wire(), **changes}
    return Op(name=OPEN, args={"spec": wire})


def _in_process() -> SiteRunner:
    return SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], VALUES),
        algorithm=_algorithm(),
        sandbox=False,
        policy=Policy(min_rows=2, max_newton_rounds=2, min_level_count=0, max_params_per_row=1),
    )


def test_many_operations_in_one_request_count_one_by_one() -> None:
    """fits = 3 at 2 each: one request of 40 operations is refused whole."""
    runner = _in_process()
    _ask(runner, 0, _open())

    message = _refused(_ask(runner, 1, *[Op(name="count")] * 40))

    assert "more operations than it declared" in message


def test_a_job_opens_once() -> None:
    """Opening again would start the count of requests afresh."""
    runner = _in_process()
    _ask(runner, 0, _open())

    assert "opens once" in _refused(_ask(runner, 1, _open()))


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"params": {"imputations": 10**9, "min_rows": 2}}, "the job's parameters do not fit"),
        ({"params": {"imputations": 1, "min_rows": 2, "fits": 99}}, "unknown parameter 'fits'"),
        (
            {"targets": [{"index": 2, "name": "b", "type": "gaussian"}] * 2},
            "names a target twice",
        ),
        ({"sites": ["s", "s", "s"]}, "does not list this site exactly once"),
        ({"sites": ["t", "u"]}, "does not list this site exactly once"),
    ],
    ids=["too many imputations", "unknown parameter", "a target twice", "site thrice", "not here"],
)
def test_a_job_central_widened_is_refused(changes: dict[str, Any], said: str) -> None:
    PARAMS["parameters"]["properties"]["imputations"]["maximum"] = 1000  # type: ignore[index]
    try:
        runner = SiteRunner(
            site="s", data=table("s.csv", ["a", "b"], VALUES), algorithm=_algorithm(), sandbox=False
        )
        message = _refused(_ask(runner, 0, _open_spec(**changes)))
    finally:
        del PARAMS["parameters"]["properties"]["imputations"]["maximum"]  # type: ignore[index]

    assert said in message


def test_min_sites_counts_distinct_sites() -> None:
    runner = _policy_runner(VALUES, Policy(min_sites=3))

    message = _refused(_ask(runner, 0, _open_spec(sites=["s", "s", "s", "s"])))

    assert "exactly once" in message or "min_sites" in message


def test_central_must_open_the_job_the_user_started() -> None:
    runner = _in_process()
    runner.expected = {"columns": ["a", "b"], "params": {"imputations": 1, "min_rows": 2}}

    message = _refused(
        _ask(runner, 0, _open_spec(params={"imputations": 1, "min_rows": 2, "ridge": 1}))
    )

    assert "differs from the one started here in its params" in message


def test_central_must_open_the_job_with_the_levels_the_user_approved() -> None:
    """A factor's levels are part of the job a site's user approves: central cannot change
    them (or drop the factor) when it opens the job."""
    runner = SiteRunner(
        site="s",
        data=table("s.csv", ["a", "b"], np.column_stack([VALUES[:, 0], np.arange(12) % 2])),
        algorithm=_algorithm(),
        sandbox=False,
    )
    runner.expected = {"columns": ["a", "b"], "factors": {"b": ["0", "1"]}}

    message = _refused(_ask(runner, 0, _open_spec(factors={"b": ["1", "0"]})))
    assert "differs from the one started here in its factors" in message


def test_undeclared_summary_keys_of_an_upload_stay_at_the_site() -> None:
    """An uploaded prepare that names a key after the rows: the key never leaves."""
    leaky = REMOTE.replace(
        b'return {"rows_used": site.data.rows, "left_out": {"{target} missing": 0}}',
        b'return {"rows_used": site.data.rows, "rows " + repr(site.data.values.tolist()): 1}',
    )
    files = {
        "TCentral.py": CENTRAL,
        "TRemote.py": leaky,
        "params.json": json.dumps(PARAMS).encode(),
    }
    runner = SiteRunner(
        site="s", data=table("s.csv", ["a", "b"], VALUES), algorithm=read_algorithm("T", files)
    )
    try:
        message = _refused(_ask(runner, 0, _open()))
    finally:
        runner.close()

    assert (
        message
        == "s.csv: the summary of 'prepare' is not what the algorithm declared; nothing was sent"
    )
    _no_value_in(message)
