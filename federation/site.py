"""A site's half of a job: the context its handlers see, and the runner that answers requests.

The runner decodes a request frame, runs its operations in order on the site's data with the
algorithm's remote half, checks every result against the reply the algorithm declared
(``federation.replies``), and encodes the reply. Whatever goes wrong becomes an error reply of at
most 300 characters written by this runtime, never an algorithm's own text, never silence.

What the site answers is its own decision: its :class:`~federation.policy.Policy` is checked
when the job opens, and the requests of a job are counted against the fits it declared.

A built-in remote half runs in this process; any other runs in a sandbox process
(``federation.sandbox``) that holds only the job's data, and whose answers are checked here.

In a job with ``secure_aggregation`` (``federation.secure``) a remote site makes a key pair when
the job opens, answers summed operations only masked, and refuses them in the clear.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple, NoReturn, Protocol

import numpy as np

from federation.data import Table, check_target_values
from federation.errors import AlgorithmInvalid, FipError, ProtocolError, SiteRefused
from federation.job import JobEvent, JobSpec, Target, random_stream
from federation.policy import OPEN as OPEN_POLICY
from federation.policy import Policy, binary_levels
from federation.protocol import ErrorKind, ErrorReply, Op, Reply, Request, decode, encode
from federation.registry import Algorithm, file_names
from federation.replies import PREPARE, Bounds, Dims, ReplySchema, Value, check_values
from federation.roles import LevelError, code_table
from federation.sandbox import Sandbox, SandboxFailed
from federation.secure import (
    EXTRA_REQUESTS,
    KEYS,
    MAGNITUDE,
    MASKED,
    PUBLIC_KEY,
    SiteMasks,
    check_job,
    degree,
    enabled,
    key_words,
    largest_number,
    magnitude_of,
    scale_for,
)
from federation.secure import SUMMARY as SECURE_SUMMARY

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

    def __init__(self, algorithm: Algorithm, *, memory: int | None = None) -> None:
        self._algorithm = algorithm
        self._memory = memory
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
            memory=self._memory,
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


class Answer(NamedTuple):
    """A reply frame and the message it holds (what the site's portal notes in its ledger,
    without decoding the frame it just made)."""

    frame: bytes
    message: Reply | ErrorReply


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
        sandbox_memory: int | None = None,
    ) -> None:
        """``sandbox`` runs the remote half in a process of its own; by default every
        algorithm but a built-in one is sandboxed, holding at most ``sandbox_memory`` bytes of
        data if given."""
        self.site = site
        self.data = data
        self.algorithm = algorithm
        self.replies = algorithm.replies
        self.policy = policy or OPEN_POLICY
        isolate = (not algorithm.builtin) if sandbox is None else sandbox
        self.remote: RemoteHalf = (
            Sandboxed(algorithm, memory=sandbox_memory) if isolate else InProcess(algorithm.remote)
        )
        self._is_central = is_central
        self._on_event = on_event
        self._opened = False
        self.expected: dict[str, Any] = {}
        """What this site's user saw of the job when starting it (JobSpec field -> value), when
        the portal knows it: central must open that job, not another."""
        self.secure_required = False
        """The site's user started the job securely aggregated (a comparison's method, whose
        parameters :attr:`expected` does not pin): central must open it so."""
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
        self._last_reply = Answer(b"", ErrorReply(job_id="", seq=-1, kind="failed", message=""))
        self.masks: SiteMasks | None = None
        """This site's key pair and pairwise seeds in a securely aggregated job."""
        self._withheld: Result = {}
        """The algorithm's summed summary values, sent only masked (secure aggregation)."""
        self._history = b""
        """Secure aggregation: a running digest of every operation this site ran in the job
        (masked rounds aside), which enters every mask, so that masks cancel only among sites
        that central asked the very same things in the same order."""
        self._magnitude = 0
        """Secure aggregation: every value of this site's table is below 2 ** this."""
        self._stopped = False
        """This site answers nothing more in the job: it did not answer a masked round."""
        self._last_error = -1
        """The ``seq`` of the last request answered with an error."""

    @property
    def job(self) -> SiteJob | None:
        return self._job

    @property
    def budget(self) -> int:
        """The most requests this job may make of this site (0 before it opened)."""
        return self._budget

    def handle(self, frame: bytes) -> bytes:
        """Answer one request frame. A repeated ``seq`` gets the same reply, not a second run."""
        return self.answer(decode(frame)).frame

    def answer(self, request: Request | Reply | ErrorReply) -> Answer:
        """Answer a decoded request (:meth:`handle`; a portal that decoded the frame to route
        it calls this, so that a frame is decoded once): the reply frame and its message."""
        with self._lock:
            if not isinstance(request, Request):
                raise ProtocolError(f"a site expects requests, got a {request.type!r} message")
            if request.seq == self._last_seq:
                return self._last_reply
            if request.seq < self._last_seq:
                raise ProtocolError(f"stale request {request.seq} (last was {self._last_seq})")
            # A masked round started again: a site that ran the request it replaces does not
            # run its instructions twice; it answers only the fresh masked round.
            if request.replaces is not None and (
                self.masks is None or all(op.name != MASKED for op in request.ops)
            ):
                raise ProtocolError("only a masked round of a secure job is started again")
            ran = request.replaces is not None and request.replaces <= self._last_seq
            reply = self._answer(request, skip_instructions=ran)
            self._last_seq, self._last_reply = request.seq, reply
            return reply

    def _answer(self, request: Request, *, skip_instructions: bool = False) -> Answer:
        masked = self.masks is not None and any(op.name == MASKED for op in request.ops)
        if self._stopped and any(op.name != CLOSE for op in request.ops):
            return self._error(
                request,
                "refused",
                f"{self.data.label}: this site did not answer a masked round of the job and "
                "answers nothing more in it",
            )
        try:
            return self._answered(request, skip_instructions=skip_instructions)
        finally:
            # An error answering a masked round (a value too large for the scale, say) tells
            # central one bit of the site's data: one a job, never a search.
            if masked and self._last_error == request.seq:
                self._stopped = True

    def _answered(self, request: Request, *, skip_instructions: bool) -> Answer:
        try:
            # Every operation run counts, however they are sent (not those a restart skips).
            self.requests += sum(
                1 for op in request.ops if op.name == MASKED or not skip_instructions
            )
            if self._budget and self.requests > self._budget:
                raise SiteRefused(
                    f"the job asked for more operations than it declared ({self._budget - 2} "
                    f"fit(s) at {self.policy.max_newton_rounds} each, this site's "
                    "max_newton_rounds); nothing more is answered"
                )
            results = [
                {} if skip_instructions and op.name != MASKED else self._run(op.name, op.args)
                for op in request.ops
            ]
            self.numbers_sent += sum(_numbers(r) for r in results)
            reply = Reply(job_id=request.job_id, seq=request.seq, results=results)
            return Answer(encode(reply), reply)
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

    def _run(self, name: str, args: Mapping[str, Any]) -> Result:
        """One operation of a request, as it may leave: checked, and masked when it must be."""
        if name == MASKED:
            return self._masked(args)
        if self.masks is not None and name in self.replies.summed:
            raise SiteRefused(
                f"{self.data.label}: this job is securely aggregated, so '{name}' is answered "
                "only masked; central asked for it in the clear and nothing was sent"
            )
        result = self._guard(name, args, self.call(name, args))
        if self.masks is not None:  # open (which made the masks), the keys, instructions
            self._history = hashlib.sha256(self._history + asked(name, args, 0)).digest()
        return result

    def _masked(self, args: Mapping[str, Any]) -> Result:
        """A summed operation's reply, checked as declared, then masked for the round."""
        name, inner = args.get("op"), args.get("args")
        round_number, scale = args.get("round"), args.get("scale")
        if (
            self.masks is None
            or not isinstance(name, str)
            or not isinstance(inner, dict)
            or not isinstance(round_number, int)
            or not isinstance(scale, int)
            or isinstance(round_number, bool)
            or isinstance(scale, bool)
            or not -1100 <= scale <= 1100
            or not 0 <= round_number < 2**63
        ):
            raise ProtocolError("a masked round outside a securely aggregated job, or malformed")
        if name not in self.replies.summed:
            raise SiteRefused(f"{self.data.label}: '{name}' is not a summed operation")
        assert self._job is not None and self._bounds is not None
        finest = scale_for(
            rows=self._bounds.rows_used,
            magnitude=self._magnitude,
            width=max(len(self._job.spec.columns), self._job.spec.design_width()),
            largest_argument=largest_number(inner),
            sites=len(self._job.spec.sites),
            degree=degree(self.replies.operations.get(name, {})),
        )
        if scale > finest:  # what central chooses from every site's rows and magnitude is not
            raise SiteRefused(
                f"{self.data.label}: central chose the fixed-point scale 2^{scale}, finer than "
                f"this job allows (2^{finest} from this site's own rows and magnitude alone); "
                "nothing was sent"
            )
        if name == PREPARE:
            result, inner = self._withheld, {}
        else:
            result = self._guard(name, inner, self.call(name, inner))
        return self.masks.mask(
            name,
            result,
            self.replies.operations[name],
            round_number=round_number,
            scale=scale,
            context=hashlib.sha256(self._history + asked(name, inner, scale)).digest(),
        )

    @property
    def fingerprints(self) -> dict[str, str]:
        """The public keys of a securely aggregated job's sites, as their users compare them."""
        return {} if self.masks is None else dict(self.masks.fingerprints)

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
        if name == KEYS:
            if self.masks is None:
                raise ProtocolError("keys relayed for a job that is not securely aggregated")
            self.masks.agree(list(args.get("sites", [])), args.get("keys"))
            return {}
        if self._job is None:
            raise ProtocolError(f"operation '{name}' before the job was opened")
        return self.remote.call(self._job, name, args, local=local)

    def close(self) -> None:
        """The job is over here: its state and any sandbox process go."""
        self._job = None
        self.remote.close()

    def _open(self, spec: JobSpec) -> Result:
        try:  # the job's columns in its order; factors and text targets coded by its levels
            self.data = code_table(self.data, spec, show_values=self._is_central)
        except LevelError as error:
            if not self._is_central:  # the values stay in this site's own log
                self._emit("log", error.private)
            raise
        self._check_spec(spec)
        for target in spec.targets:
            check_target_values(
                self.data,
                target.column,
                target.type,
                show_values=self._is_central,
                levels=target.levels,
            )
        secure = enabled(spec.params) and not self._is_central
        if self.secure_required and not secure:
            raise SiteRefused(
                f"{self.data.label}: this job was started here securely aggregated, but central "
                "opened it without secure aggregation; this site does not take part"
            )
        if secure:
            try:
                check_job(self.replies, spec.params, spec.sites)
            except FipError as error:
                raise SiteRefused(f"{self.data.label}: {error}") from None
            self.masks = SiteMasks(
                site=self.site,
                job_id=spec.job_id,
                sites=len(spec.sites),
                expected=tuple(spec.sites),
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
                design_width=spec.design_width(),
                levels=binary_levels(self.data.values, spec.columns),
            )
            if reasons:
                self.remote.close()
                self._refuse_by_policy(reasons)
            self._budget = self.replies.request_budget(
                spec.params,
                targets=len(spec.targets),
                rounds=self.policy.max_newton_rounds,
                chains=spec.chains,
            ) + (EXTRA_REQUESTS if secure else 0)
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
        if self.masks is not None:
            if PREPARE in self.replies.summed:  # sent only masked, summed over the sites
                self._withheld = {k: extras.pop(k, None) for k in self.replies.operations[PREPARE]}
            extras[PUBLIC_KEY] = key_words(self.masks.public)
            self._magnitude = magnitude_of(self.data.values)
            extras[MAGNITUDE] = self._magnitude
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
            checked = check_values(
                OPEN,
                summary,
                open_values(self.replies, secure=self.masks is not None),
                dims=self._dims,
                bounds=Bounds(rows_used=self.data.rows, target_rows={}),
            )
            if self._withheld:
                self._withheld = check_values(
                    PREPARE,
                    self._withheld,
                    self.replies.operations[PREPARE],
                    dims=self._dims,
                    bounds=Bounds(rows_used=self.data.rows, target_rows={}),
                )
            return checked
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
                if (sorted(seen[name]) if name == "sites" else seen.get(name))
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
        if name in (OPEN, CLOSE, KEYS):
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

    def _error(self, request: Request, kind: ErrorKind, message: str) -> Answer:
        self._last_error = request.seq
        error = ErrorReply(
            job_id=request.job_id, seq=request.seq, kind=kind, message=public_text(message)
        )
        return Answer(encode(error), error)

    def _emit(self, kind: str, message: str) -> None:
        if self._on_event is not None:
            self._on_event(JobEvent(kind=kind, message=message, site=self.site))  # type: ignore[arg-type]


def open_values(replies: ReplySchema, *, secure: bool = False) -> dict[str, Value]:
    """The declared summary at open: the runtime's values, then the algorithm's. A remote
    site of a securely aggregated job adds its public key and magnitude, and sends the
    algorithm's summed values only masked, later."""
    reasons = len(replies.left_out)
    algorithm = replies.operations.get(PREPARE, {})
    if secure:
        algorithm = {**({} if PREPARE in replies.summed else algorithm), **SECURE_SUMMARY}
    return {**SUMMARY, "left_out": Value("count", (reasons,)), **algorithm}


def asked(name: str, args: Mapping[str, Any], scale: int) -> bytes:
    """A digest of a masked round's question: every site asked the same has the same one."""
    frame = encode(Request(job_id="", seq=scale, ops=[Op(name=name, args=dict(args))]))
    return hashlib.sha256(frame).digest()


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
