"""The sandbox process in which a site runs an uploaded remote half, and its pipe codec.

Run once per portal as a script (``python -I sandbox_child.py``) by :mod:`federation.sandbox`,
as a fork server (below) whose children are the sandboxes; it imports only
the standard library and numpy, so that the code it loads finds nothing of the portal: the
packages ``federation``, ``portal_site``, ``portal_central`` and ``algorithms`` cannot be
imported here, and patching anything in this process changes nothing in the portal's.

The uploaded code runs only after the process locked itself down for good (``lock_down``): it
can open no file, socket or pipe, start no process or thread, signal, trace, renice or share
memory with no other process, write no file or folder, and change none of these limits; as
root it is nobody. Only then does the job's
data arrive, over the pipe. A machine on which this cannot be done runs no uploaded code.
Everything it answers goes back over the pipe to the portal, which checks it against the
declared replies before anything leaves the site.

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
    levels: tuple[float, ...] = ()

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


# ------------------------------------------------------------------ the lock-down
#
# Applied before the uploaded code runs, in this order: no new process or thread and no file
# written (resource limits), no new file descriptor (every number up to the limit is taken),
# root's identity dropped when the portal runs as root, then a seccomp filter that no code can
# lift: it lets through the system calls below and fails every other with EPERM.

ALLOWED_CALLS = {
    "its pipes to the portal, and the descriptors it holds": "read write readv writev lseek close",
    "its own memory": "brk mmap munmap mremap mprotect madvise mbind",
    "clocks, sleeping and its own timers": "gettimeofday time nanosleep getitimer setitimer alarm",
    "its own signal handling": "rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack"
    " restart_syscall",
    "waiting": "poll ppoll select pselect6 sched_yield",
    "what it is and what it used": "getpid getppid gettid getuid geteuid getgid getegid"
    " getcwd getrusage times",
    "random bytes": "getrandom",
    "ending": "exit exit_group",
}
"""What a locked-down sandbox may do, by purpose: what CPython and numpy need to compute on the
data it is sent and to answer on its pipe (traced over the sandbox tests and a numpy workload
of linear algebra, sorting, FFTs and large arrays). Everything else fails with EPERM: opening,
reading the names, sizes or times of files (``stat``, ``readlink``, ``access``), sockets,
processes and threads, signals to others, shared memory, keys, ``prctl``, and every call a
newer kernel adds. The clocks, ``futex``, ``sched_getaffinity``, ``fcntl`` and ``ioctl`` are let
through for some arguments only (:data:`ALLOWED_ARGUMENTS`)."""


@dataclass(frozen=True)
class Only:
    """A call let through for some values of one of its arguments: ``one_of`` them, ``below``
    a bound, or ``having`` these bits set. The filter reads the argument's low half, which is
    all the kernel reads of these ``int`` arguments."""

    argument: int
    one_of: tuple[int, ...] = ()
    below: int | None = None
    having: int | None = None


ALLOWED_ARGUMENTS = {
    # a descriptor's flags; naming another process as its owner (F_SETOWN) is not among them:
    # the kernel would signal that process when the portal writes to the sandbox's pipe
    "fcntl": Only(1, one_of=(0, 1, 2, 3, 4, 1030)),  # F_DUPFD, F_[GS]ETFD, F_[GS]ETFL,
    # F_DUPFD_CLOEXEC
    "ioctl": Only(1, one_of=(0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)),  # TCGETS,
    # TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX; not FIOSETOWN, for the same reason
    # its own CPUs (pid 0): for another pid it would tell whether that process exists
    "sched_getaffinity": Only(0, one_of=(0,)),
    # the machine's clocks and its own CPU time: a negative id is another process's CPU clock
    "clock_gettime": Only(0, below=16),
    "clock_getres": Only(0, below=16),
    "clock_nanosleep": Only(0, below=16),
    # a private futex, keyed by its own memory: a shared one on a page of libc's text has the
    # same key in every process, and two sandboxes could talk through it
    "futex": Only(1, having=0x80),  # FUTEX_PRIVATE_FLAG
}
"""The calls let through for some arguments only."""

SYSCALLS = {
    "x86_64": {
        "read": 0,
        "write": 1,
        "readv": 19,
        "writev": 20,
        "lseek": 8,
        "close": 3,
        "brk": 12,
        "mmap": 9,
        "munmap": 11,
        "mremap": 25,
        "mprotect": 10,
        "madvise": 28,
        "mbind": 237,
        "clock_gettime": 228,
        "clock_getres": 229,
        "gettimeofday": 96,
        "time": 201,
        "nanosleep": 35,
        "clock_nanosleep": 230,
        "getitimer": 36,
        "setitimer": 38,
        "alarm": 37,
        "rt_sigaction": 13,
        "rt_sigprocmask": 14,
        "rt_sigreturn": 15,
        "sigaltstack": 131,
        "restart_syscall": 219,
        "futex": 202,
        "poll": 7,
        "ppoll": 271,
        "select": 23,
        "pselect6": 270,
        "sched_yield": 24,
        "getcwd": 79,
        "getpid": 39,
        "getppid": 110,
        "gettid": 186,
        "getuid": 102,
        "geteuid": 107,
        "getgid": 104,
        "getegid": 108,
        "sched_getaffinity": 204,
        "getrusage": 98,
        "times": 100,
        "getrandom": 318,
        "exit": 60,
        "exit_group": 231,
        "fcntl": 72,
        "ioctl": 16,
    },
    "aarch64": {  # the generic table: no time, alarm, poll or select (ppoll, pselect6 serve)
        "read": 63,
        "write": 64,
        "readv": 65,
        "writev": 66,
        "lseek": 62,
        "close": 57,
        "brk": 214,
        "mmap": 222,
        "munmap": 215,
        "mremap": 216,
        "mprotect": 226,
        "madvise": 233,
        "mbind": 235,
        "clock_gettime": 113,
        "clock_getres": 114,
        "gettimeofday": 169,
        "nanosleep": 101,
        "clock_nanosleep": 115,
        "getitimer": 102,
        "setitimer": 103,
        "rt_sigaction": 134,
        "rt_sigprocmask": 135,
        "rt_sigreturn": 139,
        "sigaltstack": 132,
        "restart_syscall": 128,
        "futex": 98,
        "ppoll": 73,
        "pselect6": 72,
        "sched_yield": 124,
        "getcwd": 17,
        "getpid": 172,
        "getppid": 173,
        "gettid": 178,
        "getuid": 174,
        "geteuid": 175,
        "getgid": 176,
        "getegid": 177,
        "sched_getaffinity": 123,
        "getrusage": 165,
        "times": 153,
        "getrandom": 278,
        "exit": 93,
        "exit_group": 94,
        "fcntl": 25,
        "ioctl": 29,
    },
}
"""The numbers of the calls by machine (Linux's tables for x86_64 and the generic one)."""

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NOBODY = 65534


class LockDownFailed(Exception):
    """This machine cannot confine the uploaded code: it is not run."""


def filter_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The seccomp filter as classic BPF instructions (code, jump if true, jump if false, k)."""
    if machine not in SYSCALLS:
        raise LockDownFailed(f"no system-call filter for {machine}")
    numbers = SYSCALLS[machine]
    allowed = [
        numbers[name]
        for group in ALLOWED_CALLS.values()
        for name in group.split()
        if name in numbers
    ]
    load, equal, at_least, has_bits, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, refuse, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000  # EPERM; kill the process
    # Written with labels for the jumps, resolved below into relative offsets.
    code: list[tuple[int, str | int, str | int, int]] = [
        (load, 0, 0, 4),  # the architecture
        (equal, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, kill),
        (load, 0, 0, 0),  # the system call's number
        (at_least, "refuse", 0, 0x40000000),  # x32 calls on x86_64
        *((equal, "allow", 0, number) for number in allowed),
        *((equal, call, 0, numbers[call]) for call in ALLOWED_ARGUMENTS),
        (ret, 0, 0, refuse),
    ]
    labels = {}
    for call, only in ALLOWED_ARGUMENTS.items():
        labels[call] = len(code)
        code.append((load, 0, 0, 16 + 8 * only.argument))  # low half of seccomp_data.args[i]
        code += [(equal, "allow", 0, value) for value in only.one_of]
        if only.below is not None:
            code.append((at_least, 0, "allow", only.below))
        if only.having is not None:
            code.append((has_bits, "allow", 0, only.having))
        code.append((ret, 0, 0, refuse))
    labels["refuse"] = len(code)
    code.append((ret, 0, 0, refuse))
    labels["allow"] = len(code)
    code.append((ret, 0, 0, allow))
    program = []
    for index, (operation, if_true, if_false, k) in enumerate(code):
        jumps = [labels[j] - index - 1 if isinstance(j, str) else j for j in (if_true, if_false)]
        if not all(0 <= jump <= 255 for jump in jumps):
            raise LockDownFailed("the system-call filter is too long for its jumps")
        program.append((operation, jumps[0], jumps[1], k))
    return program


def _seccomp() -> None:
    import ctypes
    import platform

    code = filter_program(platform.machine())

    class Instruction(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_ushort),
            ("jt", ctypes.c_ubyte),
            ("jf", ctypes.c_ubyte),
            ("k", ctypes.c_uint),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    instructions = (Instruction * len(code))(*(Instruction(*step) for step in code))
    program = Program(len(code), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise LockDownFailed(f"no_new_privs: errno {ctypes.get_errno()}")
    if libc.prctl(22, 2, ctypes.byref(program), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise LockDownFailed(f"seccomp: errno {ctypes.get_errno()}")


def lock_down(memory: int | None = None) -> None:
    """Confine this process for good (see above); ``LockDownFailed`` if it cannot be done.
    ``memory``: the most bytes of data it may hold (RLIMIT_DATA: its heap and every private
    mapping it writes), beyond which an allocation fails with MemoryError."""
    import resource

    _first_to_go_when_memory_runs_out()
    if memory is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no fork, no thread
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    opened = []
    for fd in range(1024):
        try:
            os.fstat(fd)
        except OSError:
            continue
        opened.append(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    highest = max(*opened, null)
    for fd in range(highest):
        if fd not in opened and fd != null:
            os.dup2(null, fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, highest + 1))
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        _die_with_parent()
    _seccomp()


def _first_to_go_when_memory_runs_out() -> None:
    """Should the machine run out of memory, the kernel ends this process first: a job's
    arrays may take what memory there is, but never the site's portal with them. (Without
    /proc the kernel's own choice stands.)"""
    try:
        with open("/proc/self/oom_score_adj", "w") as setting:
            setting.write("1000")
    except OSError:
        pass


_parent = 0
"""The fork server's pid, in its child."""


def _die_with_parent() -> None:
    """Be killed when the fork server ends, or end now if it already has. A change of identity
    clears this, so ``lock_down`` sets it again after dropping root's."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL) != 0:  # PR_SET_PDEATHSIG
        raise LockDownFailed(f"pdeathsig: errno {ctypes.get_errno()}")
    if os.getppid() != _parent:
        os._exit(1)


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
                module = _load(
                    request["name"], request["file_name"], request["source"], request.get("memory")
                )
                prepare = getattr(module, "prepare", None)
                handlers = getattr(module, "HANDLERS", {})
                local = getattr(module, "LOCAL", {})
                if not callable(prepare) or not isinstance(handlers, dict):
                    raise TypeError("the remote half must define prepare(site) and HANDLERS")
                answer({"ok": {"handlers": sorted(handlers), "local": sorted(local)}})
            elif command == "open":
                spec = request["spec"]
                targets = tuple(
                    Target(t["index"], t["name"], t["type"], tuple(t.get("levels", ())))
                    for t in spec["targets"]
                )
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


def _load(name: str, file_name: str, source: str, memory: int | None) -> Any:
    """Compile the uploaded half, lock this process down (with at most ``memory`` bytes of data,
    if given), and only then run the half's code."""
    import types

    code = compile(source, f"<{name}/{file_name}>", "exec", dont_inherit=True)
    module = types.ModuleType(f"fip_sandboxed_{name}_remote")
    sys.modules[module.__name__] = module
    lock_down(memory)
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


def _preload() -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)


def _run() -> None:
    """Serve one remote half on descriptors 0 and 1 (the pipes from the portal)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails (EFBIG) instead of killing
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


# ------------------------------------------------------------------ the fork server
#
# Starting Python and importing numpy costs a site about 0.2 s of CPU per sandbox. The portal
# therefore starts this script once, as a fork server (``python -I sandbox_child.py``): a clean
# process that imports what a sandbox preloads and then only forks. It never sees data or code:
# a request hands it the two pipe ends of a new sandbox (SCM_RIGHTS over a Unix socket that is
# its standard input), and its child (a copy of this clean process) makes them its 0 and 1,
# closes everything else, the server's socket included, takes a fresh seed for numpy's global
# generator, and serves exactly as a sandbox started on its own would, lock-down included.
#
# Every child is this server's, and is reaped only when the portal stops it: one that ended by
# itself stays a zombie until then, so its pid cannot be reused while the portal holds it and
# a stop can only ever reach the sandbox it was meant for. When the portal goes (its end of the
# socket closes), the server kills its children and exits; should the server itself die, its
# children die with it (PDEATHSIG, which the lock-down keeps them from clearing).

START, STOP, ALIVE = b"S", b"K", b"A"
PID = struct.Struct("<q")


def fork_server() -> None:
    import resource  # noqa: F401 - imported by every sandbox anyway
    import signal

    _preload()
    clean = set(sys.modules)
    import socket  # the server's own, which its children cannot import

    control = socket.socket(fileno=0)
    children: set[int] = set()
    try:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(control, 64, 2)
            except OSError:
                return
            if not message:
                return  # the portal is gone
            kind, argument = message[:1], message[1:]
            if kind == START and len(fds) == 2:
                try:
                    pid = os.fork()
                except OSError as error:
                    control.send(b"E" + str(error).encode()[:50])
                else:
                    if pid == 0:
                        children.clear()  # its siblings are none of its business
                        _child(control, *fds, modules=clean)
                    children.add(pid)
                    control.send(b"P" + PID.pack(pid))
            elif kind in (STOP, ALIVE) and len(argument) == PID.size:
                (pid,) = PID.unpack(argument)
                if kind == STOP and pid in children:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    children.discard(pid)
                running = pid in children and _running(pid)
                control.send(b"Y" if running else b"N")
            else:
                control.send(b"E")
            for fd in fds:
                os.close(fd)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _running(pid: int) -> bool:
    """Whether the child has not ended, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def _child(control: Any, requests: int, answers: int, *, modules: set[str]) -> None:
    """In the forked child: become a sandbox on the two pipes; never return to the server.
    Of the modules, it keeps those a sandbox preloads (not the server's ``socket``)."""
    import resource

    global _parent
    code = 1
    try:
        _parent = os.getppid()
        os.setsid()  # its own process group, away from the server's
        _die_with_parent()
        control.detach()  # its descriptor is closed below with the rest
        os.dup2(requests, 0)
        os.dup2(answers, 1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 2)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        for name in set(sys.modules) - modules:
            del sys.modules[name]
        np.random.seed()  # the server's global generator state is every child's otherwise
        _run()
        code = 0
    finally:
        os._exit(code)


if __name__ == "__main__":
    fork_server()
