"""The wire codec: exact arrays, no pickle, and clear refusals of malformed frames."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from federation.errors import ProtocolError
from federation.protocol import (
    MAGIC,
    ErrorReply,
    JobUpdate,
    Op,
    Reply,
    Request,
    decode,
    decode_control,
    encode,
    encode_control,
)
from federation.states import JobState


def test_request_with_arrays_round_trips_exactly() -> None:
    """float64, int64 and bool arrays (nested in args) come back bit for bit."""
    beta = np.array([0.1, -0.0, 1e-300, 5e-324, 2.0**53, np.pi])
    mask = np.array([[True, False], [False, True]])
    request = Request(
        job_id="j1",
        seq=3,
        ops=[Op(name="fit", args={"beta": beta, "nested": {"mask": mask, "k": [1, 2.5]}})],
    )

    decoded = decode(encode(request))

    assert isinstance(decoded, Request)
    args = decoded.ops[0].args
    assert args["beta"].tobytes() == beta.tobytes()
    assert args["beta"].dtype == np.float64
    assert np.array_equal(args["nested"]["mask"], mask)
    assert args["nested"]["k"] == [1, 2.5]


def test_numpy_scalars_travel_as_plain_numbers() -> None:
    """np.float64 and np.int64 results become JSON numbers, exactly."""
    reply = Reply(job_id="j", seq=0, results=[{"n": np.int64(7), "q": np.float64(0.1 + 0.2)}])

    decoded = decode(encode(reply))

    assert isinstance(decoded, Reply)
    assert decoded.results == [{"n": 7, "q": 0.1 + 0.2}]


def test_error_reply_round_trips() -> None:
    message = ErrorReply(job_id="j", seq=2, kind="refused", message="site a: too few rows")

    assert decode(encode(message)) == message


def test_object_arrays_are_refused_on_encode() -> None:
    """Nothing that would need pickling can be sent."""
    request = Request(job_id="j", seq=0, ops=[Op(name="x", args={"a": np.array(["text"])})])

    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode(request)


def test_nan_scalar_is_refused_on_encode() -> None:
    request = Request(job_id="j", seq=0, ops=[Op(name="x", args={"a": float("nan")})])

    with pytest.raises(ProtocolError, match="NaN"):
        encode(request)


def _frame(header: dict[str, object], payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "bad magic"),
        (MAGIC + b"\x01", "truncated"),
        (_frame({"message": {}, "arrays": [{"dtype": "|O", "shape": [1], "nbytes": 8}]}), "dtype"),
        (_frame({"message": {}, "arrays": [{"dtype": "<f8", "shape": [2], "nbytes": 8}]}), "shape"),
        (
            _frame({"message": {}, "arrays": [{"dtype": "<f8", "shape": [1], "nbytes": 8}]}),
            "missing",
        ),
        (
            _frame({"message": {"protocol_version": 1, "type": "reply"}, "arrays": []}, b"x"),
            "trailing",
        ),
        (_frame({"message": {"protocol_version": 99, "type": "reply"}, "arrays": []}), "version"),
        (_frame({"message": {"protocol_version": 1, "type": "other"}, "arrays": []}), "malformed"),
        (_frame({"message": {"$array": 3}, "arrays": []}), "out of range"),
        (MAGIC + struct.pack("<I", 5) + b"{not}", "header"),
        (MAGIC + struct.pack("<I", 2) + b"[]", "header: not an object"),
        (_frame({"message": {}}), "no list of arrays"),
        (_frame({"message": [], "arrays": []}), "no message"),
        (_frame({"message": {}, "arrays": [8]}), "an array is not described"),
        (
            _frame({"message": {}, "arrays": [{"dtype": "<f8", "shape": [1], "nbytes": "8"}]}),
            "dtype, shape or byte length",
        ),
        (
            _frame({"message": {}, "arrays": [{"dtype": "<f8", "shape": [1.0], "nbytes": 8}]}),
            "dtype, shape or byte length",
        ),
        (
            _frame(
                {"message": {}, "arrays": [{"dtype": "<f8", "shape": [2**32, 2**32], "nbytes": 0}]}
            ),
            "does not match its shape",
        ),
        (
            _frame({"message": {}, "arrays": [{"dtype": "<f8", "shape": [0, 2**70], "nbytes": 0}]}),
            "not a list of sizes",
        ),
        (
            _frame(
                {
                    "message": {},
                    "arrays": [{"dtype": "<f8", "shape": [2**40, -(2**40)], "nbytes": 8}],
                }
            ),
            "not a list of sizes",
        ),
    ],
)
def test_malformed_frames_are_refused(frame: bytes, message: str) -> None:
    """Each kind of broken frame raises ProtocolError with a reason, never a crash."""
    with pytest.raises(ProtocolError, match=message):
        decode(frame)


def test_a_frames_header_is_the_message_as_pydantic_dumps_it() -> None:
    """encode walks the message once; its header is model_dump() with every array replaced by
    its reference, in order, numpy scalars by numbers, and the arrays' dtype, shape and bytes."""
    theta, h = np.arange(8.0).reshape(2, 4), np.eye(3)
    request = Request(
        job_id="9",
        seq=4,
        ops=[Op(name="impute", args={"alpha": theta[0], "k": np.int64(2)}), Op(name="s")],
        replaces=3,
    )
    reply = Reply(job_id="9", seq=4, results=[{"h": h, "n": 5, "t": (1, np.float64(2.5))}, {}])

    for message in (request, reply):
        arrays: list[np.ndarray] = []
        expected = _dumped(message.model_dump(), arrays)
        frame = encode(message)
        (length,) = struct.unpack_from("<I", frame, 4)
        header = json.loads(frame[8 : 8 + length])

        assert header["message"] == expected
        assert header["arrays"] == [
            {"dtype": a.dtype.str, "shape": list(a.shape), "nbytes": a.nbytes} for a in arrays
        ]
        assert frame[8 + length :] == b"".join(a.tobytes() for a in arrays)


def _dumped(value: object, arrays: list[np.ndarray]) -> object:
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"$array": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _dumped(item, arrays) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_dumped(item, arrays) for item in value]
    return value


def test_a_job_update_carries_a_known_state_as_its_value() -> None:
    text = encode_control(JobUpdate(job_id="7", state=JobState.RUNNING, message="cycle 2"))
    assert json.loads(text)["state"] == "running", "the wire keeps the state's string"
    update = decode_control('{"type": "job", "job_id": "7", "state": "completed"}')
    assert isinstance(update, JobUpdate)
    assert type(update.state) is JobState and update.state is JobState.COMPLETED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "job", "job_id": "7", "state": "exploded"}', "job.state: Input should be"),
        ('{"type": "job", "job_id": "7", "state": "Running"}', "(got 'Running')"),
        ('{"type": "job", "job_id": "7"}', "job.state: Field required"),
    ],
)
def test_a_job_update_with_an_unknown_state_is_refused_naming_the_field(
    text: str, message: str
) -> None:
    with pytest.raises(ProtocolError, match="malformed control message") as refused:
        decode_control(text)
    assert message in str(refused.value)
