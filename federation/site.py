"""A site's half of a job: the context its handlers see, and the runner that answers requests.

The runner decodes a request frame, runs its operations in order on the site's data with the
algorithm's remote module, and encodes the reply. Whatever goes wrong becomes an error reply
naming the reason, never silence. Two rules protect the site's rows, whatever the module does:
a reply array may hold at most (p + 1)^2 numbers, and a site answering fewer complete rows than
the job's ``min_rows`` refuses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from federation.data import Table, check_binary, check_columns
from federation.errors import FipError, ProtocolError, SiteRefused
from federation.job import JobEvent, JobSpec, Target, random_stream
from federation.protocol import ErrorKind, ErrorReply, Reply, Request, decode, encode

log = logging.getLogger(__name__)

Result = dict[str, Any]
Handler = Callable[..., Result]
_MESSAGE_CHARS = 2000
OPEN = "fip.open"
CLOSE = "fip.close"


@dataclass
class SiteJob:
    """What a site's handlers work with: its data, the job, its own random stream, its state."""

    site: str
    spec: JobSpec
    data: Table
    rng: np.random.Generator
    is_central: bool
    state: dict[str, Any] = field(default_factory=dict)
    on_event: Callable[[JobEvent], None] | None = None

    @property
    def params(self) -> Mapping[str, Any]:
        return self.spec.params

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.spec.targets

    def log(self, message: str) -> None:
        """A line for this site's event log (it stays at the site)."""
        log.info(
            "site %s job %s: %s",
            self.site,
            self.spec.job_id,
            message,
            extra={"site_id": self.site, "job_id": self.spec.job_id},
        )
        if self.on_event is not None:
            self.on_event(JobEvent(kind="log", message=message, site=self.site))

    def refuse(self, message: str) -> NoReturn:
        """Stop: this site's data cannot take part, for the reason given."""
        raise SiteRefused(f"{self.data.label}: {message}")


class SiteRunner:
    """Answers one job's requests at one site (central's own data included)."""

    def __init__(
        self,
        *,
        site: str,
        data: Table,
        remote: ModuleType,
        is_central: bool = False,
        on_event: Callable[[JobEvent], None] | None = None,
        min_rows_floor: int = 0,
    ) -> None:
        self.site = site
        self.data = data
        self._floor = min_rows_floor
        self._remote = remote
        self._is_central = is_central
        self._on_event = on_event
        self._job: SiteJob | None = None
        self._lock = threading.Lock()
        self._last_seq = -1
        self._last_reply = b""

    @property
    def job(self) -> SiteJob | None:
        return self._job

    def handle(self, frame: bytes) -> bytes:
        """Answer one request frame. A repeated ``seq`` gets the same reply, not a second run."""
        with self._lock:
            request = decode(frame)
            if not isinstance(request, Request):
                raise ProtocolError(f"a site expects requests, got a {request.type!r} message")
            if request.seq == self._last_seq:
                return self._last_reply
            if request.seq < self._last_seq:
                raise ProtocolError(f"stale request {request.seq} (last was {self._last_seq})")
            reply = self._answer(request)
            self._last_seq, self._last_reply = request.seq, reply
            return reply

    def _answer(self, request: Request) -> bytes:
        try:
            results = [self.call(op.name, op.args) for op in request.ops]
            for op, result in zip(request.ops, results, strict=True):
                self._guard(op.name, result)
            return encode(Reply(job_id=request.job_id, seq=request.seq, results=results))
        except SiteRefused as refusal:
            self._emit("warning", str(refusal))
            return self._error(request, "refused", str(refusal))
        except FipError as error:
            message = str(error)
            if not message.startswith(self.data.label):
                message = f"{self.data.label}: {message}"
            return self._error(request, "refused", message)
        except Exception as error:
            log.exception("site %s job %s: handler failed", self.site, request.job_id)
            return self._error(request, "failed", f"{type(error).__name__}: {error}")

    def call(self, name: str, args: Mapping[str, Any], *, local: bool = False) -> Result:
        """Run one operation. ``local`` allows the handlers reserved to central's own data."""
        if name == OPEN:
            return self._open(JobSpec.from_wire(args["spec"]))
        if name == CLOSE:
            self._job = None
            return {}
        if self._job is None:
            raise ProtocolError(f"operation '{name}' before the job was opened")
        handler = self._handler(name, local=local)
        result = handler(self._job, **args)
        return {} if result is None else result

    def _handler(self, name: str, *, local: bool) -> Handler:
        handlers: Mapping[str, Handler] = self._remote.HANDLERS
        if local:
            handlers = {**handlers, **getattr(self._remote, "LOCAL", {})}
        if name not in handlers:
            raise ProtocolError(f"the algorithm's remote half has no operation '{name}'")
        return handlers[name]

    def _open(self, spec: JobSpec) -> Result:
        check_columns(self.data, spec.columns)
        for target in spec.targets:
            if target.type == "logistic":
                check_binary(self.data, target.column)
        job = SiteJob(
            site=self.site,
            spec=spec,
            data=self.data,
            rng=random_stream(spec.seed, self.site),
            is_central=self._is_central,
            on_event=self._on_event,
        )
        counts = {
            "rows": self.data.rows,
            "observed": (~np.isnan(self.data.values)).sum(axis=0).astype(np.int64),
        }
        try:
            summary: Result = dict(self._remote.prepare(job))
            used = int(summary["rows_used"])
            # The site's own floor wins over a job that asks for less.
            minimum = max(int(spec.params["min_rows"]), self._floor)
            if not self._is_central and used < minimum:
                source = (
                    "this site's own floor"
                    if minimum > int(spec.params["min_rows"])
                    else "min_rows"
                )
                job.refuse(
                    f"only {used} usable row(s) of {self.data.rows}, fewer than the minimum of "
                    f"{minimum} ({source}); this site does not take part"
                )
        except SiteRefused as refusal:
            if self._is_central:
                raise
            # Counts still go back, so that central can tell a target nobody observes.
            self._emit("warning", str(refusal))
            return {**counts, "rows_used": 0, "left_out": {}, "refused": str(refusal)}
        left_out = {str(k): int(v) for k, v in summary.get("left_out", {}).items() if v}
        for reason, count in left_out.items():
            job.log(f"{count} row(s) left out: {reason}")
        self._job = job
        return {**summary, **counts, "rows_used": used, "left_out": left_out}

    def _guard(self, name: str, result: Result) -> None:
        """No reply may carry more than aggregates: at most (p + 1)^2 numbers in one value and
        twice that in a whole result, counting nested lists, and text longer than a message
        (8 characters a number)."""
        limit = (len(self.data.columns) + 1) ** 2
        total = 0
        for key, value in result.items():
            size = _size(value)
            if size > limit:
                raise SiteRefused(
                    f"operation '{name}' tried to send '{key}' with {size} numbers, more "
                    f"than an aggregate may hold ({limit}); nothing was sent"
                )
            total += size
        if total > 2 * limit:
            raise SiteRefused(
                f"operation '{name}' tried to send {total} numbers, more than aggregates may "
                f"hold ({2 * limit}); nothing was sent"
            )

    def _error(self, request: Request, kind: ErrorKind, message: str) -> bytes:
        return encode(
            ErrorReply(job_id=request.job_id, seq=request.seq, kind=kind, message=message)
        )

    def _emit(self, kind: str, message: str) -> None:
        if self._on_event is not None:
            self._on_event(JobEvent(kind=kind, message=message, site=self.site))  # type: ignore[arg-type]


def _size(value: Any) -> int:
    """How many numbers a reply value holds, wherever they are nested."""
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, str | bytes):  # a status message is fine; a long text counts as data
        return 1 if len(value) <= _MESSAGE_CHARS else len(value) // 8
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values()) + len(value)
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value)
    return 1
