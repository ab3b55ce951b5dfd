"""The portal's side of a sandboxed remote half: a process of its own, held by a pipe.

A site runs an uploaded (not built-in) remote half only here, and only after its user approved
the digest: the child process (forked by ``federation/sandbox_child.py``, a clean fork server
started once per portal as a script with ``python -I``) loads the source, shows that it opened
nothing while loading, locks itself down (no new file or socket, no file written), and only then
receives the job's data. It dies with the job (or with the portal). What it answers is data for
the portal's guard, never trusted: the runner checks it against the declared replies before
anything leaves the site, and its error texts stay in the site's own log.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

import numpy as np

from federation import sandbox_child
from federation.errors import FipError

CHILD = Path(sandbox_child.__file__).resolve()
CALL_SECONDS = 600.0
"""How long one operation of a sandboxed remote half may take before the process is killed."""
START_SECONDS = 60.0
ANSWER_BYTES = 16 * 2**20
"""The longest answer read from the process before it holds data; after that, twice the data
(a LOCAL operation at central returns its rows)."""
HEADER_BYTES = 16 * 2**20
"""How long the process may take to start and load the remote half."""


class SandboxFailed(FipError):
    """The sandboxed code failed or refused; ``detail`` is its own text, for the site's log only."""

    def __init__(self, message: str, *, kind: str = "failed", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail


class Sandbox:
    """One process running one remote half for one job."""

    def __init__(
        self,
        *,
        name: str,
        file_name: str,
        source: str,
        seconds: float = CALL_SECONDS,
        memory: int | None = None,
    ):
        """``memory``: the most bytes of data the process may hold (None: no limit of its own;
        it is the first process the kernel ends when the machine runs out)."""
        self._seconds = seconds
        self._lock = threading.RLock()
        """Held by a command under way; pipes are closed only under it (never while another
        thread reads or writes them: their numbers could be reused by the next sandbox)."""
        self._limit = ANSWER_BYTES
        self.logs: list[str] = []
        self._server = _fork_server()
        self.pid, self._requests, self._answers = self._server.start()
        self._forgotten = weakref.finalize(
            self, _forgotten, self._server, self.pid, (self._requests, self._answers)
        )
        """Stops the process when this object goes, should close() never be called."""
        try:
            loaded = self._ask(
                {
                    "cmd": "load",
                    "name": name,
                    "file_name": file_name,
                    "source": source,
                    "memory": memory,
                },
                seconds=max(seconds, START_SECONDS),
            )
        except BaseException:
            self.close()
            raise
        self.handlers = frozenset(str(h) for h in loaded.get("handlers", []))
        self.local = frozenset(str(h) for h in loaded.get("local", []))

    def open(
        self,
        *,
        site: str,
        spec: dict[str, Any],
        label: str,
        columns: list[str],
        values: np.ndarray,
        is_central: bool,
        rng: np.random.Generator,
        answer_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Hand the job's data to the process and run ``prepare``: its summary. From now on an
        answer longer than ``answer_bytes`` is refused unread (default: twice the data)."""
        data = np.ascontiguousarray(values, dtype=np.float64)
        self._limit = answer_bytes or 2 * data.nbytes + HEADER_BYTES
        result: dict[str, Any] = self._ask(
            {
                "cmd": "open",
                "site": site,
                "spec": spec,
                "label": label,
                "columns": columns,
                "values": data,
                "is_central": is_central,
                "rng": rng.bit_generator.state,
            }
        )
        return result

    def call(self, name: str, args: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._ask(
            {"cmd": "call", "name": name, "args": args, "local": local}
        )
        return result

    def close(self) -> None:
        """Kill the process (its data goes with it); it is gone when this returns. From another
        thread, a command under way then fails at once, and the pipes are closed after it."""
        if self._forgotten.detach() is not None:
            self._server.stop(self.pid)
            with self._lock:
                _close(self._requests, self._answers)

    @property
    def alive(self) -> bool:
        return self._forgotten.alive and self._server.alive(self.pid)

    def _ask(self, message: dict[str, Any], *, seconds: float | None = None) -> Any:
        """Send one command and read its answer, all within ``seconds``; any fault of the
        process (silence, a malformed or oversized answer) kills it."""
        seconds = self._seconds if seconds is None else seconds
        with self._lock:
            if self._requests.closed:
                raise SandboxFailed("the sandboxed remote half was stopped")
            try:
                deadline = time.monotonic() + seconds
                _write_request(self._requests.fileno(), sandbox_child.pack(message), deadline)
                body = _read_answer(self._answers.fileno(), deadline, self._limit)
                answer = sandbox_child.unpack(body)
            except TimeoutError:
                self.close()
                raise SandboxFailed(
                    f"the sandboxed remote half did not answer in {seconds:g} s; it was stopped"
                ) from None
            except Exception:  # noqa: BLE001 - whatever the process sent, it is not an answer
                self.close()
                raise SandboxFailed(
                    "the sandboxed remote half stopped or sent a malformed answer; it was stopped"
                ) from None
        if not isinstance(answer, dict):
            self.close()
            raise SandboxFailed("the sandboxed remote half sent a malformed answer; it was stopped")
        logs = answer.get("logs", [])
        if isinstance(logs, list):
            self.logs.extend(str(line)[: sandbox_child.MAX_LOG_CHARS] for line in logs[:20])
        if "error" in answer:
            kind = "refused" if answer.get("error") == "refused" else "failed"
            # Only this fixed text may leave the site: the half chooses its exception's name
            # and message, so both stay in the site's own log.
            raise SandboxFailed(
                f"the algorithm's remote half {kind}",
                kind=kind,
                detail=f"{answer.get('type', '')!s:.80}: {answer.get('message', '')!s:.2000}",
            )
        return answer.get("ok", {})


def _close(*pipes: IO[bytes]) -> None:
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.close()


def _forgotten(server: _ForkServer, pid: int, pipes: tuple[IO[bytes], ...]) -> None:
    """A sandbox dropped without close(). This may run inside the garbage collector, on a thread
    that is itself in the middle of a request to the server: so it never waits for the server,
    it asks for the stop to be sent as soon as the server is free."""
    _close(*pipes)
    server.stop_soon(pid)


class _ForkServer:
    """The portal's end of the fork server (see ``sandbox_child``): starts, stops and watches
    the sandboxes, which are the server's children, by their pid. One request at a time; a
    request that fails or is interrupted leaves the conversation in doubt, so the server is
    then killed (its sandboxes with it) and the next sandbox starts a new one."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(CHILD)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env={"PATH": os.defpath, **_blas_env()},
                close_fds=True,
                start_new_session=True,  # away from the portal's terminal and its signals
            )
        ours.settimeout(START_SECONDS)
        self._socket = ours
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._stops: list[int] = []
        self._broken = False

    @property
    def usable(self) -> bool:
        return self._mine and not self._broken and self._process.poll() is None

    @property
    def _mine(self) -> bool:
        """False in a copy of the portal made by fork: the server is the original's."""
        return self._owner == os.getpid()

    def start(self) -> tuple[int, IO[bytes], IO[bytes]]:
        """A new sandbox process: its pid, the pipe to it and the pipe from it."""
        fds: list[int] = []
        try:
            fds.extend(os.pipe())  # the sandbox reads requests from fds[0], we write fds[1]
            fds.extend(os.pipe())  # we read answers from fds[2], the sandbox writes fds[3]
            reply = self._ask(sandbox_child.START, (fds[0], fds[3]))
            if reply[:1] != b"P" or len(reply) != 1 + sandbox_child.PID.size:
                raise SandboxFailed(
                    "the sandbox process could not be started",
                    detail=reply[1:].decode(errors="replace"),
                )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(fds[0])
        os.close(fds[3])
        os.set_blocking(fds[1], False)  # writes wait in select(), with the command's deadline
        (pid,) = sandbox_child.PID.unpack(reply[1:])
        return pid, os.fdopen(fds[1], "wb", buffering=0), os.fdopen(fds[2], "rb", buffering=0)

    def stop(self, pid: int) -> None:
        """Kill the sandbox and reap it; when the server is gone, its children went with it."""
        with contextlib.suppress(SandboxFailed):
            self._ask(sandbox_child.STOP + sandbox_child.PID.pack(pid))

    def stop_soon(self, pid: int) -> None:
        """Stop the sandbox now if the server is free, else as soon as the request under way
        ends; never waits."""
        self._stops.append(pid)
        self._send_stops()

    def alive(self, pid: int) -> bool:
        try:
            return self._ask(sandbox_child.ALIVE + sandbox_child.PID.pack(pid)) == b"Y"
        except SandboxFailed:
            return False

    def close(self) -> None:
        """End the server: it kills its sandboxes when its socket closes."""
        if self._mine:
            self._socket.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)

    def _ask(self, message: bytes, fds: tuple[int, ...] = ()) -> bytes:
        with self._lock:
            self._send_queued_stops()
            reply = self._request(message, fds)
        self._send_stops()
        return reply

    def _send_stops(self) -> None:
        """The queued stops, if the server is free; whoever holds it sends them on release."""
        while self._stops and self._lock.acquire(blocking=False):
            try:
                self._send_queued_stops()
            finally:
                self._lock.release()

    def _send_queued_stops(self) -> None:
        """The caller holds the lock."""
        while self._stops:
            stop = sandbox_child.STOP + sandbox_child.PID.pack(self._stops.pop())
            with contextlib.suppress(SandboxFailed):
                self._request(stop)

    def _request(self, message: bytes, fds: tuple[int, ...] = ()) -> bytes:
        """One request and its reply; the caller holds the lock."""
        if not self.usable:
            raise SandboxFailed("the sandbox fork server is not running")
        try:
            socket.send_fds(self._socket, [message], list(fds))
            reply = self._socket.recv(64)
            if not reply:
                raise EOFError("the fork server closed its socket")
        except BaseException as error:
            self._broken = True
            self._process.kill()  # its sandboxes die with it
            self._process.wait()
            if isinstance(error, Exception):
                raise SandboxFailed(
                    "the sandbox fork server failed; it was stopped", detail=repr(error)
                ) from None
            raise
        return reply


_server: _ForkServer | None = None
_server_lock = threading.Lock()


def _fork_server() -> _ForkServer:
    """This process's fork server, started on first use and again should it have stopped."""
    global _server
    with _server_lock:
        if _server is None or not _server.usable:
            if _server is not None:
                _server.close()
            _server = _ForkServer()
        return _server


def _close_server() -> None:
    if _server is not None:
        _server.close()


def _forget_server_in_a_fork() -> None:
    """A process forked from the portal does not share the portal's server: it closes its copy
    of the socket, so that the server still sees the portal go."""
    global _server, _server_lock
    if _server is not None:
        with contextlib.suppress(OSError):
            _server._socket.close()
    _server = None
    _server_lock = threading.Lock()  # another thread may have held it at the fork


atexit.register(_close_server)
os.register_at_fork(after_in_child=_forget_server_in_a_fork)


def _write_request(fd: int, buffers: list[bytes | memoryview], deadline: float) -> None:
    """A frame's buffers onto the (non-blocking) pipe, the whole of it before ``deadline``: a
    process that stops reading cannot hold the portal's thread."""
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(fd, view[: 1 << 20]) :]


def _read_answer(fd: int, deadline: float, limit: int) -> bytearray:
    """One frame's body from the pipe, read in pieces, the whole of it before ``deadline``."""

    def read(size: int) -> bytearray:
        chunks = bytearray()
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise EOFError("the pipe closed")
            chunks += chunk
            size -= len(chunk)
        return chunks

    (length,) = struct.unpack("<Q", read(8))
    if length > limit:
        raise ValueError(f"an answer of {length} bytes, over the limit of {limit}")
    return read(length)


def _blas_env() -> dict[str, str]:
    """One thread for numpy's BLAS (the sandbox starts none), and the BLAS settings the portal
    runs with (some processors need them)."""
    passed = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_"))}
    return {**passed, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
