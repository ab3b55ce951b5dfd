"""Benchmark: what decoding costs a round trip, before and after each side decodes a message once.

Run::

    .venv/bin/python bench/codec.py              # a peer-shaped line search (p = 10)
    .venv/bin/python bench/codec.py --p 20

A round trip of a SIMICE job carries a request (the last target's impute instruction and a
line search's four candidates) and one reply per site (H, g, Q, the candidates' Q). On its way
each message was decoded three times: at central, the request by the connection (to route it)
and the reply by the connection (to find its waiter) and again by the runtime; at a site, the
request by the worker (to find its job) and again by the job's runner, and the reply by the
worker for its ledger. Now central decodes the reply once (its request travels with its
message, ``federation.protocol.Frame``) and a site the request once (the runner answers the
decoded request and returns its reply's message with the frame). And encoding walks the
message once (it dumped the pydantic model first, then walked the dump, and made a pydantic
model of every array's description): the same bytes. Decoding reads the header with
``json.loads`` and checks it by hand, where it validated it through a pydantic model.

It times, best of ``--repeat`` rounds of ``--number`` calls, the codec's encode (as it was
and as it is) and decode of those two messages and the ``Frame`` wrapping that replaces a
decode, and prints the
microseconds each side spends on the codec per round trip (one remote site), before and after.
Only numbers, no assertion.
"""

from __future__ import annotations

import argparse
import json
import struct
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from federation import protocol
from federation.protocol import Frame, Op, Reply, Request, decode, encode


class _ArraySpec(BaseModel):
    """An array's description as the codec modelled it before (now plain JSON values)."""

    dtype: str
    shape: list[int]
    nbytes: int


class _Header(BaseModel):
    message: dict[str, Any]
    arrays: list[_ArraySpec]


def encode_before(message: Request | Reply) -> bytes:
    """``encode`` as it was: model_dump, then the walk, and a pydantic model an array."""
    arrays: list[np.ndarray] = []
    body = protocol._extract(message.model_dump(), arrays)
    specs = [
        _ArraySpec(dtype=a.dtype.str, shape=list(a.shape), nbytes=a.nbytes).model_dump()
        for a in arrays
    ]
    header = json.dumps({"message": body, "arrays": specs}, allow_nan=False).encode()
    parts = [protocol.MAGIC, struct.pack("<I", len(header)), header]
    parts.extend(a.tobytes(order="C") for a in arrays)
    return b"".join(parts)


def decode_before(frame: bytes) -> Request | Reply | protocol.ErrorReply:
    """``decode`` as it was (its checks left out: they cost the same): the header validated
    through a pydantic model, array references found by comparing each dict's keys to a set."""
    (length,) = struct.unpack_from("<I", frame, 4)
    header = _Header.model_validate_json(frame[8 : 8 + length])
    arrays, offset = [], 8 + length
    for spec in header.arrays:
        dtype = np.dtype(spec.dtype)
        flat = np.frombuffer(frame, dtype=dtype, count=spec.nbytes // dtype.itemsize, offset=offset)
        arrays.append(flat.reshape(spec.shape))
        offset += spec.nbytes

    def insert(value: Any) -> Any:
        if isinstance(value, dict):
            if value.keys() == {"$array"}:
                return arrays[value["$array"]]
            return {k: insert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [insert(v) for v in value]
        return value

    return protocol._MESSAGE.validate_python(insert(header.message))


def messages(p: int) -> tuple[Request, Reply]:
    rng = np.random.default_rng(1)
    request = Request(
        job_id="17",
        seq=42,
        ops=[
            Op(name="impute", args={"target": 4, "alpha": rng.normal(size=p), "sigma": 1.3}),
            Op(name="logistic_search", args={"target": 5, "theta": rng.normal(size=(4, p))}),
        ],
    )
    h = rng.normal(size=(p, p))
    reply = Reply(
        job_id="17",
        seq=42,
        results=[
            {},
            {
                "n": 2817,
                "h": h @ h.T,
                "g": rng.normal(size=p),
                "q": -1234.5,
                "qs": rng.normal(size=4),
                "unusable": np.zeros(4, dtype=np.int64),
            },
        ],
    )
    return request, reply


def micro(task: Callable[[], Any], number: int, repeat: int) -> float:
    """Best microseconds per call."""
    return min(timeit.repeat(task, number=number, repeat=repeat)) / number * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--p", type=int, default=10, help="design width (10, the peer's)")
    parser.add_argument("--number", type=int, default=2000, help="calls per timing (2,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings, best shown (5)")
    args = parser.parse_args(argv)
    request, reply = messages(args.p)
    request_frame, reply_frame = encode(request), encode(reply)
    assert encode_before(request) == request_frame and encode_before(reply) == reply_frame
    cost = {
        "encode request, as it was": micro(
            lambda: encode_before(request), args.number, args.repeat
        ),
        "encode reply, as it was": micro(lambda: encode_before(reply), args.number, args.repeat),
        "decode request, as it was": micro(
            lambda: decode_before(request_frame), args.number, args.repeat
        ),
        "decode reply, as it was": micro(
            lambda: decode_before(reply_frame), args.number, args.repeat
        ),
        "encode request": micro(lambda: encode(request), args.number, args.repeat),
        "decode request": micro(lambda: decode(request_frame), args.number, args.repeat),
        "encode reply": micro(lambda: encode(reply), args.number, args.repeat),
        "decode reply": micro(lambda: decode(reply_frame), args.number, args.repeat),
        "Frame.of": micro(lambda: Frame.of(reply_frame, reply), args.number, args.repeat),
    }
    print(
        f"a line search of p = {args.p}: request {len(request_frame):,} bytes, "
        f"reply {len(reply_frame):,} bytes"
    )
    for name, micros in cost.items():
        print(f"  {name:<26} {micros:8.1f} us")
    before_central = (
        cost["encode request, as it was"]
        + cost["decode request, as it was"]
        + 2 * cost["decode reply, as it was"]
    )
    after_central = cost["encode request"] + cost["decode reply"] + 2 * cost["Frame.of"]
    before_site = (
        2 * cost["decode request, as it was"]
        + cost["encode reply, as it was"]
        + cost["decode reply, as it was"]
    )
    after_site = cost["decode request"] + cost["encode reply"]
    print("\nside     codec us per round trip, before  after  after/before")
    for side, before, after in (
        ("central", before_central, after_central),
        ("site", before_site, after_site),
    ):
        print(f"{side:<8} {before:31.1f} {after:6.1f} {after / before:13.2f}")
    print(
        f"\nsaved per round trip: {before_central + before_site - after_central - after_site:.1f} "
        "us (central and one site; the sites answer side by side)"
    )


if __name__ == "__main__":
    main()
