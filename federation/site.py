"""A site's half of a job: the context its handlers see, and the runner that answers requests.

The runner decodes a request frame, runs its operations in order on the site's data with the
algorithm's remote half, checks every result against the reply the algorithm declared
(``federation.replies``), and encodes the reply. Whatever goes wrong becomes an error reply of at
most 300 characters written by this runtime, never an algorithm's own text, never silence.

What the site answers is its own decision: its :class:`~federation.policy.Policy` is checked
when the job opens, and the requests of a job are counted against the fits it declared.

A built-in remote half runs in this process; any other runs in a sandbox process
(``federation.sandbox``) that holds only the job's data, and whose answers are checked here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NoReturn, Protocol

import numpy as np

from federation.data import Table, check_columns, check_target_values
from federation.errors import AlgorithmInvalid, FipError, ProtocolError, SiteRefused
from federation.job import JobEvent, JobSpec, Target, random_stream
from federation.policy import OPEN as OPEN_POLICY
from federation.policy import Policy, binary_levels
from federation.protocol import ErrorKind, ErrorReply, Reply, Request, decode, encode
from federation.registry import Algorithm, file_names
from federation.replies import PREPARE, Bounds, Dims, ReplySchema, Value, check_values
from federation.sandbox import Sandbox, SandboxFailed

log = logging.getLogger(__name__)

Result = dict[str, Any]
Handler = Callable[..., Result]
MESSAGE_CHARS = 300
"""The longest text a site sends: an error reply's message, written by the runtime."""
OPEN = "fip.open"
CLOSE = "fip.close"
SUMMARY: Mapping[str, Value] = {
    "rows": Value("int"),
    "rows_used": Value("count"),
    "observed": Value("int", ("c",)),
    "target_rows": Value("count", ("k",)),
}
"""The runtime's own part of the summary a site sends when a job opens (``left_out`` follows
the algorithm's declared reasons)."""


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


class RemoteHalf(Protocol):
    """Where an algorithm's remote half runs: in this process, or in a sandbox process."""

    def prepare(self, job: SiteJob) -> Result: ...

    def call(self, job: SiteJob, name: str, args: Mapping[str, Any], *, local: bool) -> Result: ...

    def close(self) -> None: ...


class InProcess:
    """A built-in remote half: shipped with the portal, run in its process."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def prepare(self, job: SiteJob) -> Result:
        return dict(self._module.prepare(job))

    def call(self, job: SiteJob, name: str, args: Mapping[str, Any], *, local: bool) -> Result:
        handlers: Mapping[str, Handler] = self._module.HANDLERS
        if local:
            handlers = {**handlers, **getattr(self._module, "LOCAL", {})}
        if name not in handlers:
            raise ProtocolError(f"the algorithm's remote half has no operation '{name}'")
        result = handlers[name](job, **args)
        return {} if result is None else dict(result)

    def close(self) -> None:
        return None


class Sandboxed:
    """An uploaded remote half, run in a process of its own started when the job opens."""

    def __init__(self, algorithm: Algorithm) -> None:
        self._algorithm = algorithm
        self._sandbox: Sandbox | None = None

    @property
    def pid(self) -> int | None:
        return None if self._sandbox is None else self._sandbox.pid

    def prepare(self, job: SiteJob) -> Result:
        self.close()
        algorithm = self._algorithm
        self._sandbox = Sandbox(
            name=algorithm.name,
            file_name=file_names(algorithm.name)[1],
            source=algorithm.remote_source,
        )
        try:
            self._algorithm.replies.check_handlers(
                file_names(algorithm.name)[1], list(self._sandbox.handlers)
            )
        except AlgorithmInvalid as error:  # its handler names are the upload's own words
            raise SandboxFailed(
                "the algorithm's remote half does not answer what it declared", detail=str(error)
            ) from None
        summary = self._sandbox.open(
            site=job.site,
            spec=job.spec.to_wire(),
            label=job.data.label,
            columns=list(job.data.columns),
            values=job.data.values,
            is_central=job.is_central,
            rng=job.rng,
        )
        self._relay(job)
        return summary

    def call(self, job: SiteJob, name: str, args: Mapping[str, Any], *, local: bool) -> Result:
        if self._sandbox is None:
            raise ProtocolError(f"operation '{name}' before the job was opened")
        try:
            return self._sandbox.call(name, dict(args), local=local)
        finally:
            self._relay(job)

    def _relay(self, job: SiteJob) -> None:
        """The sandbox's log lines go to the site's own event log, never to central."""
        if self._sandbox is not None:
            lines, self._sandbox.logs = self._sandbox.logs, []
            for line in lines:
                job.log(f"(sandbox) {line}")

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


class SiteRunner:
    """Answers one job's requests at one site (central's own data included)."""

    def __init__(
        self,
        *,
        site: str,
        data: Table,
        algorithm: Algorithm,
        is_central: bool = False,
        on_event: Callable[[JobEvent], None] | None = None,
        policy: Policy | None = None,
        sandbox: bool | None = None,
    ) -> None:
        """``sandbox`` runs the remote half in a process of its own; by default every
        algorithm but a built-in one is sandboxed."""
        self.site = site
        self.data = data
        self.algorithm = algorithm
        self.replies = algorithm.replies
        self.policy = policy or OPEN_POLICY
        isolate = (not algorithm.builtin) if sandbox is None else sandbox
        self.remote: RemoteHalf = Sandboxed(algorithm) if isolate else InProcess(algorithm.remote)
        self._is_central = is_central
        self._on_event = on_event
        self._opened = False
        self.expected: dict[str, Any] = {}
        """What this site's user saw of the job when starting it (JobSpec field -> value), when
        the portal knows it: central must open that job, not another."""
        self._job: SiteJob | None = None
        self._bounds: Bounds | None = None
        self._dims: Dims | None = None
        self._budget = 0
        self.requests = 0
        """Operations answered in this job (open included), against :attr:`budget`."""
        self.numbers_sent = 0
        """Numbers in every reply sent: what the site's job page shows while it runs."""
        self._lock = threading.Lock()
        self._last_seq = -1
        self._last_reply = b""

    @property
    def job(self) -> SiteJob | None:
        return self._job

    @property
    def budget(self) -> int:
        """The most requests this job may make of this site (0 before it opened)."""
        return self._budget

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
            self.requests += len(request.ops)  # every operation counts, however they are sent
            if self._budget and self.requests > self._budget:
                raise SiteRefused(
                    f"the job asked for more operations than it declared ({self._budget - 2} "
                    f"fit(s) at {self.policy.max_newton_rounds} each, this site's "
                    "max_newton_rounds); nothing more is answered"
                )
            results = []
            for op in request.ops:
                result = self.call(op.name, op.args)
                results.append(self._guard(op.name, op.args, result))
            self.numbers_sent += sum(_numbers(r) for r in results)
            return encode(Reply(job_id=request.job_id, seq=request.seq, results=results))
        except SiteRefused as refusal:
            self._emit("warning", str(refusal))
            return self._error(request, "refused", str(refusal))
        except SandboxFailed as error:
            # The sandboxed code's own text may hold data: it stays in this site's log.
            self._emit("warning", f"{error} {error.detail}".strip())
            return self._error(
                request, "refused" if error.kind == "refused" else "failed", str(error)
            )
        except FipError as error:
            message = str(error)
            if not message.startswith(self.data.label):
                message = f"{self.data.label}: {message}"
            return self._error(request, "refused", message)
        except Exception as error:
            log.exception("site %s job %s: handler failed", self.site, request.job_id)
            self._emit("warning", f"{type(error).__name__}: {error}")
            return self._error(
                request, "failed", f"an operation failed at this site ({type(error).__name__})"
            )

    def call(self, name: str, args: Mapping[str, Any], *, local: bool = False) -> Result:
        """Run one operation. ``local`` allows the handlers reserved to central's own data."""
        if name == OPEN:
            if self._opened:
                raise ProtocolError("the job is open already: it opens once")
            self._opened = True
            try:
                return self._open(JobSpec.from_wire(args["spec"]))
            except BaseException:
                self.close()
                raise
        if name == CLOSE:
            self.close()
            return {}
        if self._job is None:
            raise ProtocolError(f"operation '{name}' before the job was opened")
        return self.remote.call(self._job, name, args, local=local)

    def close(self) -> None:
        """The job is over here: its state and any sandbox process go."""
        self._job = None
        self.remote.close()

    def _open(self, spec: JobSpec) -> Result:
        check_columns(self.data, spec.columns)
        self._check_spec(spec)
        for target in spec.targets:
            check_target_values(
                self.data,
                target.column,
                target.type,
                show_values=self._is_central,
                levels=target.levels,
            )
        if not self._is_central:
            reasons = self.policy.check_job(
                columns=spec.columns, participants=1 + len(set(spec.sites))
            )
            if self.data.rows < self.policy.min_rows:  # before the half sees any row
                reasons.append(
                    f"only {self.data.rows} usable row(s) of {self.data.rows}, fewer than the "
                    f"minimum of {self.policy.min_rows} (this site's own min_rows); this site "
                    "does not take part"
                )
            if reasons:
                self._refuse_by_policy(reasons)
        job = SiteJob(
            site=self.site,
            spec=spec,
            data=self.data,
            rng=random_stream(spec.seed, self.site),
            is_central=self._is_central,
            on_event=self._on_event,
        )
        result = self._summary(spec, self.remote.prepare(job))
        self._bounds = Bounds(
            rows_used=int(result["rows_used"]),
            target_rows={
                t.index: int(n) for t, n in zip(spec.targets, result["target_rows"], strict=True)
            },
        )
        if not self._is_central:
            reasons = self.policy.check_data(
                rows=self.data.rows,
                rows_used=self._bounds.rows_used,
                job_min_rows=int(spec.params.get("min_rows") or 0),
                target_rows={t.name: self._bounds.target_rows[t.index] for t in spec.targets},
                design_width=len(spec.columns),
                levels=binary_levels(self.data.values, spec.columns),
            )
            if reasons:
                self.remote.close()
                self._refuse_by_policy(reasons)
            self._budget = self.replies.request_budget(
                spec.params, targets=len(spec.targets), rounds=self.policy.max_newton_rounds
            )
            self.requests = 1
        names = [t.name for t in spec.targets]
        for reason, count in zip(self.replies.left_out, result["left_out"], strict=True):
            if count:
                label = self.replies.left_out_label(reason, names)
                job.log(f"{int(count)} row(s) left out: {label}")
        self._job = job
        return result

    def _summary(self, spec: JobSpec, prepared: Result) -> Result:
        """What the site says of its data when a job opens: the runtime's counts and the
        algorithm's declared values, checked like any reply."""
        used = _whole(prepared.get("rows_used"), "rows_used")
        target_rows = prepared.get("target_rows")
        if target_rows is None:
            target_rows = np.full(len(spec.targets), used, dtype=np.int64)
        left_out = prepared.get("left_out", {})
        if not isinstance(left_out, Mapping) or not set(left_out) <= set(self.replies.left_out):
            raise SiteRefused(
                f"{self.data.label}: prepare gave left-out reasons that its params.json does not "
                "declare; nothing was sent"
            )
        extras = {
            k: v for k, v in prepared.items() if k not in ("rows_used", "target_rows", "left_out")
        }
        summary: Result = {
            "rows": self.data.rows,
            "rows_used": used,
            "observed": (~np.isnan(self.data.values)).sum(axis=0).astype(np.int64),
            "target_rows": np.asarray(target_rows),
            "left_out": np.array(
                [_whole(left_out.get(label, 0), label) for label in self.replies.left_out],
                dtype=np.int64,
            ),
            **extras,
        }
        self._dims = spec.dims()
        try:
            return check_values(
                OPEN,
                summary,
                open_values(self.replies),
                dims=self._dims,
                bounds=Bounds(rows_used=self.data.rows, target_rows={}),
            )
        except ProtocolError as error:  # its key names are the algorithm's own words
            self._emit("warning", f"{error}; nothing was sent")
            raise SiteRefused(
                f"{self.data.label}: the summary of 'prepare' is not what the algorithm "
                "declared; nothing was sent"
            ) from None

    def _check_spec(self, spec: JobSpec) -> None:
        """The job as central sent it must be one this site can hold central to: the job this
        site's user started (when the portal says which), parameters that fit the algorithm's
        schema, each target once, and this site among the participants exactly once."""
        if self.expected:
            seen = spec.to_wire()
            differs = [
                name
                for name, value in self.expected.items()
                if (sorted(seen[name]) if name == "sites" else seen[name])
                != (sorted(value) if name == "sites" else value)
            ]
            if differs:
                raise SiteRefused(
                    f"{self.data.label}: the job central opened differs from the one started "
                    f"here in its {', '.join(differs)}; this site does not take part"
                )
        problem = self.algorithm.parameter_problem(spec.params)
        if problem is not None:
            raise SiteRefused(f"{self.data.label}: the job's parameters do not fit: {problem}")
        indices = [t.index for t in spec.targets]
        if len(set(indices)) != len(indices) or not all(
            1 <= i <= len(spec.columns) for i in indices
        ):
            raise SiteRefused(f"{self.data.label}: the job names a target twice or out of range")
        if not self._is_central and list(spec.sites).count(self.site) != 1:
            raise SiteRefused(
                f"{self.data.label}: the job does not list this site exactly once among its sites"
            )
        if len(set(spec.sites)) != len(spec.sites):
            raise SiteRefused(f"{self.data.label}: the job lists a site twice")

    def _refuse_by_policy(self, reasons: list[str]) -> NoReturn:
        raise SiteRefused(f"{self.data.label}: " + "; ".join(reasons))

    def _guard(self, name: str, args: Mapping[str, Any], result: Result) -> Result:
        """The result as declared, or a refusal: nothing undeclared leaves the site."""
        if name in (OPEN, CLOSE):
            return result
        assert self._dims is not None
        target = args.get("target")
        try:
            return self.replies.check(
                name,
                result,
                dims=self._dims,
                bounds=self._bounds,
                target=target if isinstance(target, int) else None,
            )
        except ProtocolError as error:
            self._emit("warning", f"{error}; nothing was sent")
            raise SiteRefused(
                f"{self.data.label}: the reply of '{name}' is not what the algorithm declared; "
                "nothing was sent"
            ) from None

    def _error(self, request: Request, kind: ErrorKind, message: str) -> bytes:
        return encode(
            ErrorReply(
                job_id=request.job_id, seq=request.seq, kind=kind, message=public_text(message)
            )
        )

    def _emit(self, kind: str, message: str) -> None:
        if self._on_event is not None:
            self._on_event(JobEvent(kind=kind, message=message, site=self.site))  # type: ignore[arg-type]


def open_values(replies: ReplySchema) -> dict[str, Value]:
    """The declared summary at open: the runtime's values, then the algorithm's."""
    reasons = len(replies.left_out)
    return {
        **SUMMARY,
        "left_out": Value("count", (reasons,)),
        **replies.operations.get(PREPARE, {}),
    }


def public_text(message: str) -> str:
    """A text fit to leave a site or to be stored: one line, at most 300 characters."""
    line = " ".join(str(message).split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ProtocolError(f"prepare's '{name}' must be a whole number")
    return int(value)


def _numbers(result: Result) -> int:
    return sum(int(np.size(v)) for v in result.values())
