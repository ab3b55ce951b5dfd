"""Real processes for end-to-end tests: central and sites as `fip` subprocesses on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

FIP = str(Path(sys.executable).parent / "fip")


START_SECONDS = 60.0
"""How long a started portal may take to answer /health: a few seconds on an idle machine, but
scripts/test runs two workers on two cores, and a machine shared with other work is slower."""

PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "fip-test-ports"
RESERVED_SECONDS = 120
"""How long a port ``free_port`` gave stays reserved: long enough for a server to bind it."""


def free_port() -> int:
    """A loopback port nobody listens on, reserved for the caller for two minutes or more.

    The port is bound, released, and then bound again by a server the test starts. In between,
    another caller of ``free_port`` (the other pytest-xdist worker of ``scripts/test``, or a test
    run of another checkout on this machine) could be handed the same port by the kernel, so
    each port given is also marked in a folder of the temporary directory, created exclusively,
    one folder per two-minute window: a port marked in this window or the one before is skipped.
    """
    window = int(time.time()) // RESERVED_SECONDS
    for old in PORT_RESERVATIONS.glob("*"):  # windows nobody can still be reading
        if old.name.isdigit() and int(old.name) < window - 1:
            shutil.rmtree(old, ignore_errors=True)
    current = PORT_RESERVATIONS / str(window)
    current.mkdir(parents=True, exist_ok=True)
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        try:
            os.close(os.open(current / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        if not (PORT_RESERVATIONS / str(window - 1) / str(port)).exists():
            return port


class Process:
    """A `fip` subprocess whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        fip: str = FIP,
        cwd: Path | None = None,
    ) -> None:
        """``fip`` is this environment's unless given (another venv's, say), run in ``cwd``."""
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            [fip, *args],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )

    def wait_until_up(
        self, url: str, *, verify: ssl.SSLContext | bool = True, seconds: float = START_SECONDS
    ) -> None:
        """Poll ``url`` until it answers 200, at most ``seconds``; fail with the log if not."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"process exited ({self.popen.returncode}):\n{self.output()}")
            try:
                if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} did not come up in {seconds} s:\n{self.output()}")

    def output(self) -> str:
        self._handle.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: the process dies without any chance to clean up (its memory goes with it)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._handle.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._handle.close()


def wait_for(condition: object, *, seconds: float = 20, every: float = 0.1, what: str = "") -> None:
    """Call ``condition()`` until it is truthy, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds} s waiting for {what or condition}")


class TcpProxy:
    """A TCP relay on loopback whose connections a test can cut, as a network failure would."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop
        ).result(timeout=5)
        self.connections = 0
        self._closing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target)
        if self._closing:  # accepted as the relay closed: relayed no more
            writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        """Drop every open connection (both ends see the TCP connection reset)."""

        async def drop() -> None:
            for writer in list(self._writers):
                transport = writer.transport
                transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=5)

    def close(self) -> None:
        """Stop accepting, drop every connection, and let the relays end before the loop does
        (a client that reconnects at once may have been accepted just before)."""

        async def shut() -> None:
            self._closing = True
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            await self._server.wait_closed()
            relays = asyncio.all_tasks() - {asyncio.current_task()}
            if relays:
                await asyncio.wait(relays, timeout=5)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
