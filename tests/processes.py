"""Real processes for end-to-end tests: central and sites as `fip` subprocesses on loopback."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx

FIP = str(Path(sys.executable).parent / "fip")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Process:
    """A `fip` subprocess whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self, args: Sequence[str], *, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            [FIP, *args],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_until_up(
        self, url: str, *, verify: ssl.SSLContext | bool = True, seconds: float = 20
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
