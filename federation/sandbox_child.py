"""The sandbox process in which a site runs an uploaded remote half, and its pipe codec.

Run as a script (``python -I sandbox_child.py``) by :mod:`federation.sandbox`; it imports only
the standard library and numpy, so that the code it loads finds nothing of the portal: the
packages ``federation``, ``portal_site``, ``portal_central`` and ``algorithms`` cannot be
imported here, and patching anything in this process changes nothing in the portal's.

Before the uploaded code runs, the process holds no data and can write no file. After loading
it, the process refuses to go on if the code left a file or socket open, then locks itself
down: no new file descriptor can be opened (no file, no socket, no pipe). Only then does the
job's data arrive, over the pipe. Everything it answers goes back over the pipe to
the portal, which checks it against the declared replies before anything leaves the site.

The codec is shared with the portal side (it imports this module): a frame is an 8-byte length,
a 4-byte header length, a JSON header whose arrays are ``{"$a": i}`` references, then the raw
bytes of float64, int64 and bool arrays. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

BLOCKED = ("federation", "portal_site", "portal_central", "algorithms")
_DTYPES = ("<f8", "<i8", "|b1")
_FRAME = struct.Struct("<Q")
_HEADER = struct.Struct("<I")
MAX_LOG_LINES = 20
MAX_LOG_CHARS = 300


# ------------------------------------------------------------------ the codec


def pack(message: Any) -> list[bytes | memoryview]:
    """A message (dicts, lists, text, numbers, None, numpy arrays) as the buffers of one frame,
    to be written in order; an array's buffer is the array's own memory, not a copy."""
    arrays: list[np.ndarray] = []
    header = json.dumps(
        {
            "body": _extract(message, arrays),
            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
        },
        allow_nan=True,
    ).encode()
    views = [a.data.cast("B") for a in arrays]
    size = _HEADER.size + len(header) + sum(v.nbytes for v in views)
    return [_FRAME.pack(size) + _HEADER.pack(len(header)) + header, *views]


def write_frame(stream: IO[bytes], message: Any) -> None:
    for buffer in pack(message):
        stream.write(buffer)
    stream.flush()


def unpack(body: bytes | bytearray) -> Any:
    """The message in a frame's body (the bytes after its length). Arrays are views of
    ``body``: writable when it is a bytearray, as :func:`read_frame` gives."""
    (length,) = _HEADER.unpack_from(body, 0)
    header = json.loads(body[4 : 4 + length])
    offset = 4 + length
    arrays = []
    for dtype_name, shape in header["arrays"]:
        if dtype_name not in _DTYPES:
            raise ValueError(f"array dtype {dtype_name!r} is not allowed")
        dtype = np.dtype(dtype_name)
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        arrays.append(array)
        offset += count * dtype.itemsize
    if offset != len(body):
        raise ValueError("frame has trailing bytes")
    return _insert(header["body"], arrays)


def read_frame(stream: IO[bytes], *, limit: int | None = None) -> bytearray | None:
    """One frame's body from a stream (read into one buffer, no copies), or None at its end.
    A frame longer than ``limit`` bytes is refused before it is read."""
    head = _read_into(stream, bytearray(_FRAME.size))
    if head is None:
        return None
    (length,) = _FRAME.unpack(head)
    if limit is not None and length > limit:
        raise ValueError(f"a frame of {length} bytes is over the limit of {limit}")
    body = _read_into(stream, bytearray(length))
    if body is None and length:
        raise EOFError("the pipe closed inside a frame")
    return body if body is not None else bytearray()


def _read_into(stream: IO[bytes], buffer: bytearray) -> bytearray | None:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        count = stream.readinto(view[done:])  # type: ignore[attr-defined]
        if not count:
            if done == 0:
                return None
            raise EOFError("the pipe closed inside a frame")
        done += count
    return buffer


def _extract(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.str not in _DTYPES:
            array = array.astype(np.float64) if array.dtype.kind == "f" else array
            if array.dtype.kind in "iu":
                array = array.astype(np.int64)
            if array.dtype.str not in _DTYPES:
                raise TypeError(f"an array of {value.dtype} cannot be sent")
        arrays.append(array)
        return {"$a": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _extract(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extract(v, arrays) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a {type(value).__name__} cannot be sent")


def _insert(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if value.keys() == {"$a"}:
            return arrays[value["$a"]]
        return {k: _insert(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_insert(v, arrays) for v in value]
    return value


# ------------------------------------------------------------------ what the remote half sees


class SiteRefused(Exception):
    """Raised by ``site.refuse``: this site's data cannot answer."""


@dataclass(frozen=True)
class Target:
    index: int
    name: str
    type: str

    @property
    def column(self) -> int:
        return self.index - 1


@dataclass(frozen=True)
class Spec:
    job_id: str
    algorithm: str
    version: str
    columns: tuple[str, ...]
    targets: tuple[Target, ...]
    params: Mapping[str, Any]
    seed: int
    sites: tuple[str, ...]

    def predictors(self, target: Target) -> list[str]:
        return [c for i, c in enumerate(self.columns) if i != target.column] + ["(intercept)"]


@dataclass(frozen=True)
class Data:
    label: str
    columns: tuple[str, ...]
    values: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])


@dataclass
class SiteJob:
    """The interface of ``federation.site.SiteJob``, as the sandbox provides it."""

    site: str
    spec: Spec
    data: Data
    rng: np.random.Generator
    is_central: bool
    state: dict[str, Any] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    @property
    def params(self) -> Mapping[str, Any]:
        return self.spec.params

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.spec.targets

    def log(self, message: str) -> None:
        if len(self.logs) < MAX_LOG_LINES:
            self.logs.append(str(message)[:MAX_LOG_CHARS])

    def refuse(self, message: str) -> None:
        raise SiteRefused(f"{self.data.label}: {message}")


# ------------------------------------------------------------------ the process


class _Blocker:
    """A finder that refuses the portal's own packages."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"'{name}' cannot be imported in the sandbox")


def open_descriptors() -> set[int]:
    """The file descriptors open in this process (found without opening one)."""
    import resource

    found = set()
    for fd in range(min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.add(fd)
    return found


def _lock_down() -> None:
    """No new file descriptor and no file written, from now on: every number below the limit
    is taken (holes are filled with /dev/null), and the limit is the highest one open."""
    import resource

    highest = max(open_descriptors())
    null = os.open(os.devnull, os.O_RDONLY)  # fills the lowest hole, if any
    highest = max(highest, null)
    for fd in range(highest):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(null, fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, highest + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(channel_in: IO[bytes], channel_out: IO[bytes]) -> None:
    handlers: Mapping[str, Callable[..., Any]] = {}
    local: Mapping[str, Callable[..., Any]] = {}
    prepare: Callable[[SiteJob], Any] | None = None
    job: SiteJob | None = None

    def answer(message: Any) -> None:
        write_frame(channel_out, message)

    while True:
        body = read_frame(channel_in)
        if body is None:
            return
        request = unpack(body)
        command = request.get("cmd")
        try:
            if command == "load":
                before = open_descriptors()
                module = _load(request["name"], request["file_name"], request["source"])
                prepare = getattr(module, "prepare", None)
                handlers = getattr(module, "HANDLERS", {})
                local = getattr(module, "LOCAL", {})
                if not callable(prepare) or not isinstance(handlers, dict):
                    raise TypeError("the remote half must define prepare(site) and HANDLERS")
                if open_descriptors() - before:
                    raise PermissionError("the remote half opened a file or socket while loading")
                _lock_down()
                answer({"ok": {"handlers": sorted(handlers), "local": sorted(local)}})
            elif command == "open":
                spec = request["spec"]
                targets = tuple(Target(t["index"], t["name"], t["type"]) for t in spec["targets"])
                rng = np.random.default_rng()
                rng.bit_generator.state = request["rng"]
                job = SiteJob(
                    site=request["site"],
                    spec=Spec(
                        job_id=spec["job_id"],
                        algorithm=spec["algorithm"],
                        version=spec["version"],
                        columns=tuple(spec["columns"]),
                        targets=targets,
                        params=spec["params"],
                        seed=int(spec["seed"]),
                        sites=tuple(spec["sites"]),
                    ),
                    data=Data(
                        label=request["label"],
                        columns=tuple(request["columns"]),
                        values=request["values"],
                    ),
                    rng=rng,
                    is_central=bool(request["is_central"]),
                )
                assert prepare is not None
                result = prepare(job)
                answer({"ok": dict(result), "logs": _logs(job)})
            elif command == "call":
                if job is None:
                    raise RuntimeError("an operation before the job was opened")
                table = {**handlers, **local} if request.get("local") else handlers
                handler = table.get(request["name"])
                if handler is None:
                    raise LookupError(f"no operation '{request['name']}'")
                result = handler(job, **request["args"])
                answer({"ok": {} if result is None else dict(result), "logs": _logs(job)})
            else:
                raise ValueError(f"unknown command {command!r}")
        except SiteRefused as refusal:
            answer(
                {
                    "error": "refused",
                    "type": "SiteRefused",
                    "message": str(refusal)[:2000],
                    "logs": _logs(job),
                }
            )
        except Exception as error:  # noqa: BLE001 - every fault of the uploaded code is reported
            answer(
                {
                    "error": "failed",
                    "type": type(error).__name__,
                    "message": str(error)[:2000],
                    "logs": _logs(job),
                }
            )


def _logs(job: SiteJob | None) -> list[str]:
    if job is None:
        return []
    lines, job.logs = job.logs, []
    return lines


def _load(name: str, file_name: str, source: str) -> Any:
    import types

    code = compile(source, f"<{name}/{file_name}>", "exec", dont_inherit=True)
    module = types.ModuleType(f"fip_sandboxed_{name}_remote")
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    return module


PRELOADED = (
    "numpy.random",
    "numpy.linalg",
    "numpy.fft",
    "math",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "dataclasses",
    "typing",
    "json",
    "re",
    "bisect",
    "heapq",
)
"""Imported before the lock-down, since nothing can be read from disk after it: an uploaded
remote half imports what else it needs at its top, while it loads."""


def main() -> None:
    import importlib
    import resource
    import signal

    for name in PRELOADED:
        importlib.import_module(name)
    _die_with_parent()
    # No file is written from here on, not even while the uploaded code loads: a write fails
    # (EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    sys.meta_path.insert(0, _Blocker())
    # The protocol moves to fresh descriptors; 0, 1 and 2 go to /dev/null, so that a print()
    # of the uploaded code reaches nobody.
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _serve(channel_in, channel_out)


if __name__ == "__main__":
    main()
