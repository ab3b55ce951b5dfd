"""Wire messages between central and sites, and their binary codec.

A frame is ``MAGIC | uint32 header length (little-endian) | header JSON | array bytes``.
The header holds the message (a pydantic model with a ``type`` discriminator and the
protocol version) in which every numpy array is replaced by ``{"$array": i}``, and the
list of arrays with dtype, shape and byte length. Array bytes follow in that order, so a
float64 travels exactly. Nothing is pickled, and only the dtypes in ``ALLOWED_DTYPES`` are
accepted.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from federation.errors import ProtocolError
from federation.states import JobState

PROTOCOL_VERSION = 1
MAGIC = b"FIP1"
ALLOWED_DTYPES = frozenset({"<f8", "<i8", "|b1"})
MAX_FRAME_BYTES = 64 * 2**20
"""The largest WebSocket message either end accepts; a job whose replies would not fit is
refused when it is created."""
_LENGTH = struct.Struct("<I")


class Op(BaseModel):
    """One operation for a site's half of an algorithm: a handler name and its arguments."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class Request(BaseModel):
    """Central asks a site to run ``ops`` in order; the reply carries one result per op."""

    type: Literal["request"] = "request"
    protocol_version: int = PROTOCOL_VERSION
    job_id: str
    seq: int
    ops: list[Op]
    replaces: int | None = None
    """A masked round started again (``federation.secure``): the ``seq`` of the request this
    one replaces. A site that ran that request skips this one's instructions."""


class Reply(BaseModel):
    """A site's answer to the request with the same ``seq``."""

    type: Literal["reply"] = "reply"
    protocol_version: int = PROTOCOL_VERSION
    job_id: str
    seq: int
    results: list[dict[str, Any]]


ErrorKind = Literal["refused", "failed"]


class ErrorReply(BaseModel):
    """A site could not answer: ``refused`` for a reason in its data, ``failed`` for a fault."""

    type: Literal["error"] = "error"
    protocol_version: int = PROTOCOL_VERSION
    job_id: str
    seq: int
    kind: ErrorKind
    message: str


Message = Annotated[Request | Reply | ErrorReply, Field(discriminator="type")]
_MESSAGE = TypeAdapter(Message)


def encode(message: Request | Reply | ErrorReply) -> bytes:
    """Serialise a message and the arrays inside it into one frame."""
    arrays: list[np.ndarray] = []
    body = _extract(message, arrays)  # what model_dump() gives, in one pass, arrays aside
    specs = [{"dtype": a.dtype.str, "shape": list(a.shape), "nbytes": a.nbytes} for a in arrays]
    try:
        header = json.dumps({"message": body, "arrays": specs}, allow_nan=False).encode()
    except ValueError:
        raise ProtocolError("a NaN or infinite number cannot travel as a scalar") from None
    parts = [MAGIC, _LENGTH.pack(len(header)), header]
    parts.extend(a.tobytes(order="C") for a in arrays)
    return b"".join(parts)


def decode(frame: bytes) -> Request | Reply | ErrorReply:
    """Parse a frame made by :func:`encode`; raise ``ProtocolError`` on anything malformed."""
    if frame[:4] != MAGIC:
        raise ProtocolError("not a federation frame (bad magic bytes)")
    if len(frame) < 8:
        raise ProtocolError("truncated frame")
    (length,) = _LENGTH.unpack_from(frame, 4)
    start = 8 + length
    message, specs = _header(frame[8:start])
    arrays: list[np.ndarray] = []
    offset = start
    for dtype_name, shape, nbytes in specs:
        if dtype_name not in ALLOWED_DTYPES:
            raise ProtocolError(f"array dtype {dtype_name!r} is not allowed on the wire")
        dtype = np.dtype(dtype_name)
        if len(shape) > 32 or any(not 0 <= d < 2**40 for d in shape):
            raise ProtocolError("array shape is not a list of sizes")
        count = math.prod(shape)  # Python integers: no overflow
        if nbytes != dtype.itemsize * count or nbytes > len(frame):
            raise ProtocolError("array byte length does not match its shape")
        if offset + nbytes > len(frame):
            raise ProtocolError("truncated frame: array bytes missing")
        flat = np.frombuffer(frame, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        arrays.append(flat.reshape(shape))
        offset += nbytes
    if offset != len(frame):
        raise ProtocolError("frame has trailing bytes")
    body = _insert(message, arrays)
    if body.get("protocol_version") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {body.get('protocol_version')!r} is not supported "
            f"(this side speaks {PROTOCOL_VERSION})"
        )
    try:
        return _MESSAGE.validate_python(body)
    except ValidationError as error:
        raise ProtocolError(f"malformed message: {error.errors()[0]['msg']}") from None


class Frame(bytes):
    """A frame with its message, for the side that made or decoded it, so that no frame is
    decoded twice on its way through one side (:func:`message_of`): central's request on its
    way to a site's socket, a site's reply on its way from the socket to the runtime. The other
    side gets the bytes only, and decodes them itself."""

    message: Request | Reply | ErrorReply

    @classmethod
    def of(cls, frame: bytes, message: Request | Reply | ErrorReply) -> Frame:
        made = cls(frame)
        made.message = message
        return made


def message_of(frame: bytes) -> Request | Reply | ErrorReply:
    """The message of a frame: the one a :class:`Frame` carries, else decoded."""
    return frame.message if isinstance(frame, Frame) else decode(frame)


def _extract(value: Any, arrays: list[np.ndarray]) -> Any:
    """A message's fields as plain values (a model as the dict of its fields, as
    ``model_dump`` has them), arrays replaced by references (collected) and numpy scalars by
    Python ones."""
    if isinstance(value, BaseModel):
        return {name: _extract(getattr(value, name), arrays) for name in type(value).model_fields}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.str not in ALLOWED_DTYPES:
            raise ProtocolError(f"array dtype {array.dtype.str!r} cannot be sent")
        arrays.append(array)
        return {"$array": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _extract(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extract(v, arrays) for v in value]
    return value


def _header(raw: bytes) -> tuple[dict[str, Any], list[tuple[str, list[int], int]]]:
    """A frame header's message and its arrays' (dtype, shape, byte length), their types
    checked: parsed by ``json.loads`` and looked at once, not validated through a model (a
    site decodes every request before it can start on it; this takes half the time)."""
    try:
        header = json.loads(raw)
    except ValueError as error:  # UnicodeDecodeError is one
        raise ProtocolError(f"malformed frame header: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed frame header: not an object")
    message, arrays = header.get("message"), header.get("arrays")
    if not isinstance(message, dict) or not isinstance(arrays, list):
        raise ProtocolError("malformed frame header: no message or no list of arrays")
    specs = []
    for spec in arrays:
        if not isinstance(spec, dict):
            raise ProtocolError("malformed frame header: an array is not described")
        dtype, shape, nbytes = spec.get("dtype"), spec.get("shape"), spec.get("nbytes")
        if (
            not isinstance(dtype, str)
            or not isinstance(shape, list)
            or not all(type(d) is int for d in shape)
            or type(nbytes) is not int
        ):
            raise ProtocolError("malformed frame header: an array's dtype, shape or byte length")
        specs.append((dtype, shape, nbytes))
    return message, specs


def _insert(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$array" in value:
            index = value["$array"]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise ProtocolError("array reference out of range")
            return arrays[index]
        return {k: _insert(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_insert(v, arrays) for v in value]
    return value


# ---------------------------------------------------------------- control messages
# Text frames on the site's WebSocket, beside the binary request/reply frames above.


class Ready(BaseModel):
    """Site -> central: this site's data is loaded and its user clicked Start."""

    type: Literal["ready"] = "ready"
    job_id: str


class Unready(BaseModel):
    """Site -> central: the site withdrew (its data was dropped before the job started)."""

    type: Literal["unready"] = "unready"
    job_id: str


class Cancel(BaseModel):
    """Either way: cancel a job (a site's user clicked Cancel, or central cancelled it)."""

    type: Literal["cancel"] = "cancel"
    job_id: str
    reason: str = ""


class JobUpdate(BaseModel):
    """Central -> site: a job's state or progress changed."""

    type: Literal["job"] = "job"
    job_id: str
    state: JobState
    """On the wire the state's value (``"running"``); a site refuses any other string."""
    message: str = ""
    progress: float | None = None
    step: str = ""


class Heartbeat(BaseModel):
    """Site -> central, every few seconds: the site is alive (central shows 'last seen')."""

    type: Literal["heartbeat"] = "heartbeat"


class PolicySummary(BaseModel):
    """Site -> central, after the welcome and when it changes: the site's disclosure policy
    (``federation.policy``), so that central's job page can say who would refuse a job. The
    site enforces it whatever central makes of it."""

    type: Literal["policy"] = "policy"
    policy: dict[str, Any]


class Welcome(BaseModel):
    """Central -> site, first message on a connection: who central thinks this is."""

    type: Literal["welcome"] = "welcome"
    site_id: str
    protocol_version: int = PROTOCOL_VERSION
    ready: list[str] = Field(default_factory=list)
    """Jobs central holds this site ready for (after a reconnect)."""


ControlMessage = Ready | Unready | Cancel | JobUpdate | Heartbeat | Welcome | PolicySummary
Control = Annotated[ControlMessage, Field(discriminator="type")]
_CONTROL = TypeAdapter(Control)


def encode_control(message: ControlMessage) -> str:
    return message.model_dump_json()


def decode_control(text: str) -> ControlMessage:
    try:
        return _CONTROL.validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        # loc starts with the message's type when the type was known: ('job', 'state').
        where = ".".join(str(part) for part in first["loc"])
        value = first.get("input")
        got = f" (got {value!r})" if isinstance(value, str | int | float) and where else ""
        raise ProtocolError(
            f"malformed control message: {where + ': ' if where else ''}{first['msg']}{got}"
        ) from None
