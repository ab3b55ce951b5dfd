"""The portal's side of a sandboxed remote half: a process of its own, held by a pipe.

A site runs an uploaded (not built-in) remote half only here, and only after its user approved
the digest: the child process (``federation/sandbox_child.py``, started as a script with
``python -I``) loads the source, shows that it opened nothing while loading, locks itself down
(no new file or socket, no file written), and only then receives the job's data. It dies with
the job (or with the portal). What it answers is data for the portal's guard, never trusted: the
runner checks it against the declared replies before anything leaves the site, and its error
texts stay in the site's own log.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from federation import sandbox_child
from federation.errors import FipError

CHILD = Path(sandbox_child.__file__).resolve()
CALL_SECONDS = 600.0
"""How long one operation of a sandboxed remote half may take before the process is killed."""
START_SECONDS = 60.0
ANSWER_BYTES = 2**31
"""The longest answer read from the process (a LOCAL operation at central returns its rows)."""
"""How long the process may take to start and load the remote half."""


class SandboxFailed(FipError):
    """The sandboxed code failed or refused; ``detail`` is its own text, for the site's log only."""

    def __init__(self, message: str, *, kind: str = "failed", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail


class Sandbox:
    """One process running one remote half for one job."""

    def __init__(self, *, name: str, file_name: str, source: str, seconds: float = CALL_SECONDS):
        self._seconds = seconds
        self._lock = threading.Lock()
        self.logs: list[str] = []
        self._process = subprocess.Popen(
            [sys.executable, "-I", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env={"PATH": os.defpath, **_blas_env()},
            close_fds=True,
        )
        try:
            loaded = self._ask(
                {"cmd": "load", "name": name, "file_name": file_name, "source": source},
                seconds=max(seconds, START_SECONDS),
            )
        except BaseException:
            self.close()
            raise
        self.handlers = frozenset(loaded["handlers"])
        self.local = frozenset(loaded["local"])

    @property
    def pid(self) -> int:
        return self._process.pid

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
    ) -> dict[str, Any]:
        """Hand the job's data to the process and run ``prepare``: its summary."""
        result: dict[str, Any] = self._ask(
            {
                "cmd": "open",
                "site": site,
                "spec": spec,
                "label": label,
                "columns": columns,
                "values": np.ascontiguousarray(values, dtype=np.float64),
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
        """Kill the process (its data goes with it)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def _ask(self, message: dict[str, Any], *, seconds: float | None = None) -> Any:
        seconds = self._seconds if seconds is None else seconds
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None
            try:
                sandbox_child.write_frame(stdin, message)
                ready, _, _ = select.select([stdout], [], [], seconds)
                if not ready:
                    self.close()
                    raise SandboxFailed(
                        f"the sandboxed remote half did not answer in {seconds:g} s; it was stopped"
                    )
                body = sandbox_child.read_frame(stdout, limit=ANSWER_BYTES)
            except (BrokenPipeError, EOFError, OSError, ValueError):
                body = None
            if body is None:
                self.close()
                raise SandboxFailed("the sandboxed remote half stopped unexpectedly")
            try:
                answer = sandbox_child.unpack(body)
            except (ValueError, KeyError, TypeError, IndexError):
                self.close()
                raise SandboxFailed("the sandboxed remote half sent a malformed answer") from None
        if not isinstance(answer, dict):
            raise SandboxFailed("the sandboxed remote half sent a malformed answer")
        logs = answer.get("logs", [])
        if isinstance(logs, list):
            self.logs.extend(str(line)[: sandbox_child.MAX_LOG_CHARS] for line in logs[:20])
        if "error" in answer:
            kind = "refused" if answer.get("error") == "refused" else "failed"
            raise SandboxFailed(
                f"the algorithm's remote half {kind} ({str(answer.get('type', ''))[:40]})",
                kind=kind,
                detail=str(answer.get("message", ""))[:2000],
            )
        return answer.get("ok", {})


def _blas_env() -> dict[str, str]:
    """BLAS settings the portal runs with (some processors need them), passed on as they are."""
    return {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_"))}
