"""Central's side of a job: the context an algorithm's central half runs in, and the runner.

An algorithm's central half is a coroutine ``run(job)`` that asks and awaits::

    replies = await job.ask("gaussian_stats", target=t.index)   # every participant, summed later
    await job.tell("impute", target=t.index, alpha=alpha)       # rides on the next request
    job.emit_imputation((await job.local("completed"))["values"])   # central's own data only

Transport, the message codec, round-trip and byte accounting, progress, the report and clean
cancellation are written once here. Central is a participant: every ``ask`` also runs on
central's own data, in process, and its result comes first. Work on central's data runs in a
thread of the job's own (``federation.lane``), so a portal's event loop stays free, and every
``await`` is a point where a cancelled job stops. Arguments reach central's own handlers
exactly as they reach the sites: through the wire codec (read-only arrays, plain numbers).

``ask_sum`` runs an operation declared ``summed`` and returns only the sum over participants:
in a job with ``secure_aggregation`` the remote sites mask their replies and central decodes
only their sum (``federation.secure``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from algorithms import methods
from federation import secure
from federation.data import Table
from federation.errors import (
    CentralRefused,
    FipError,
    InputError,
    ProtocolError,
    SiteFailed,
    SiteLost,
)
from federation.job import CENTRAL, JobEvent, JobSpec, Target, random_stream
from federation.lane import Lane
from federation.protocol import ErrorReply, Frame, Op, Reply, Request, decode, encode, message_of
from federation.replies import PREPARE, Bounds, Dims, check_values
from federation.roles import code_table
from federation.site import CLOSE, OPEN, Result, SiteRunner, open_values, public_text
from federation.transport import Transport

log = logging.getLogger(__name__)

EventSink = Callable[[JobEvent], None]
_CLOSE_TIMEOUT = 5.0
_CHECK_ROWS = 65_536
"""Rows per block when an imputed dataset is checked against central's data."""
REQUEST_SECONDS = 600.0
"""How long central waits for a site's answer to one request, by default (reconnects included)."""


@dataclass
class Traffic:
    """Messages between central and the sites: a round trip is one request to every site."""

    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(repr=False)  # its arrays are large: never format them into a message
class JobResult:
    """A finished job: central's data, the imputed cells of each dataset, and the report.

    Only the cells that were missing are kept per imputation; :meth:`dataset` rebuilds a copy.
    """

    spec: JobSpec
    table: Table
    imputed_cells: list[np.ndarray]
    report: dict[str, Any]

    @property
    def missing(self) -> np.ndarray:
        mask: np.ndarray = np.isnan(self.table.values)
        return mask

    def dataset(self, m: int) -> np.ndarray:
        """Imputed dataset ``m`` (1..M); ``m = 0`` is the original with its missing cells."""
        values = self.table.values.copy()
        if m > 0:
            values[self.missing] = self.imputed_cells[m - 1]
        return values


@dataclass
class CentralJob:
    """What an algorithm's central half works with."""

    spec: JobSpec
    data: Table
    rng: np.random.Generator
    _local: SiteRunner
    _transport: Transport
    _sink: EventSink | None
    _lane: Lane = field(default_factory=lambda: Lane("central-job"))
    """The thread where central's own part runs, call after call (never on the loop)."""
    traffic: Traffic = field(default_factory=Traffic)
    site_summaries: dict[str, Result] = field(default_factory=dict)
    fits: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    imputed_cells: list[np.ndarray] = field(default_factory=list)
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per target: its method and, per chain (chains x cycles), the mean, SD and variance of
    central's imputed cells after each cycle (mice's chainMean and chainVar); with parallel
    chains also its R-hat."""
    chains: dict[str, Any] = field(default_factory=dict)
    """How the chained family ran its chains (kind, chains, cycles), for the report."""
    checks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _checks: dict[str, dict[str, Mapping[str, Any] | Callable[[], Mapping[str, Any]]]] = field(
        default_factory=dict
    )
    """Per kind of site check (``federation.site_checks``), per target, the latest result (a
    chained method's: that of its last cycle); their warnings are given when the job ends."""
    deadline: float = REQUEST_SECONDS
    """Seconds a site has to answer one request; past it the job fails naming the site."""
    _pending: list[Op] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _bounds: dict[str, Bounds] = field(default_factory=dict)
    secure: bool = False
    """Secure aggregation: the remote sites' summed replies reach central only masked."""
    fingerprints: dict[str, str] = field(default_factory=dict)
    """The remote sites' public keys as relayed, by site (secure aggregation)."""
    masked_rounds: int = 0
    restarts: int = 0
    _round: int = 0
    _magnitude: int = 0
    _summary_sums: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> Mapping[str, Any]:
        return self.spec.params

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.spec.targets

    @property
    def participants(self) -> tuple[str, ...]:
        """Central first, then the sites in the job's order."""
        return (CENTRAL, *self.spec.sites)

    async def ask(self, name: str, **args: Any) -> dict[str, Result]:
        """Run an operation at every participant; results by participant, central first.

        Instructions queued by :meth:`tell` travel in the same request, before this operation.
        """
        op = _as_sent(name, args)
        local = self._lane.run(self._local.call, name, op.args)
        if not self.spec.sites:
            return {CENTRAL: await local}
        ops = [*self._pending, op]
        self._pending = []
        results = await self._round_trip(ops, local=local)
        return {site: result[-1] for site, result in results.items()}

    async def ask_sum(self, name: str, **args: Any) -> Result:
        """Run a summed operation at every participant; the sum of their replies (``rows``
        values summed too). With secure aggregation the remote sites' replies arrive masked
        and central sees only their sum, to which it adds its own part in the clear."""
        if name not in self._local.replies.summed:
            raise FipError(f"ask_sum('{name}'): params.json does not declare '{name}' summed")
        if not self.secure:
            return _sum(list((await self.ask(name, **args)).values()))
        op = _as_sent(name, args)
        local = self._lane.run(self._local.call, name, op.args)
        pending, self._pending = self._pending, []
        own, remote = await asyncio.gather(local, self._masked_sum(name, op.args, pending))
        return _sum([own, remote])

    def summed(self, key: str) -> Any:
        """A value of the sites' summaries at open, summed over participants (with secure
        aggregation, the algorithm's summed values were sent masked: only the sum is known)."""
        if key in self._summary_sums:
            return _sum([{key: self.site_summaries[CENTRAL][key]}, self._summary_sums])[key]
        return _sum([{key: s[key]} for s in self.site_summaries.values()])[key]

    async def _masked_sum(self, name: str, args: Mapping[str, Any], pending: list[Op]) -> Result:
        """One masked round at every remote site, started again with fresh masks when a site
        was lost during it (at most ``MAX_RESTARTS`` times a job); the decoded remote sum."""
        declared = self._local.replies.operations[name]
        scale = secure.scale_for(
            rows=sum(int(s["rows_used"]) for s in self.site_summaries.values()),
            magnitude=self._magnitude,
            width=max(len(self.spec.columns), self.spec.design_width()),
            largest_argument=secure.largest_number(args),
            sites=len(self.spec.sites),
            degree=secure.degree(declared),
        )
        replaces: int | None = None
        while True:
            self._round += 1
            masked = Op(
                name=secure.MASKED,
                args={"op": name, "args": dict(args), "round": self._round, "scale": scale},
            )
            try:
                results = await self._round_trip([*pending, masked], replaces=replaces)
            except _RoundLost as lost:
                self.restarts += 1
                names = ", ".join(f"'{s}'" for s in lost.sites)
                if self.restarts > secure.MAX_RESTARTS:
                    raise SiteFailed(
                        dict.fromkeys(
                            lost.sites,
                            f"lost during masked rounds {secure.MAX_RESTARTS + 1} times; "
                            "the job stops",
                        )
                    ) from None
                self.log(f"site {names} was lost during a masked round: it starts again")
                # The request that first carried the instructions: a site that ran it, or any
                # restart of it, has run them.
                replaces = lost.seq if replaces is None else replaces
                continue
            self.masked_rounds += 1
            return secure.unmask_sum((r[-1] for r in results.values()), declared, scale)

    async def tell(self, name: str, **args: Any) -> None:
        """An instruction for every participant: central runs it now, sites with the next ask.

        Instructions still queued when ``run`` returns are not sent: the job has ended.
        """
        op = _as_sent(name, args)
        await self._lane.run(self._local.call, name, op.args)
        if self.spec.sites:
            self._pending.append(op)

    async def local(self, name: str, **args: Any) -> Result:
        """Run an operation on central's own data only (it may return rows: nothing is sent)."""
        op = _as_sent(name, args)
        return await self._lane.run(self._local.call, name, op.args, local=True)

    def emit_imputation(self, values: np.ndarray) -> None:
        """Deliver imputed dataset number ``len(imputations) + 1`` of central's data."""
        original = self.data.values
        if values.shape != original.shape:
            raise FipError(
                f"imputed dataset has shape {values.shape}, central's data has {original.shape}"
            )
        step = _CHECK_ROWS  # a block of rows at a time: no copy of every observed cell
        for start in range(0, original.shape[0], step):
            before, after = original[start : start + step], values[start : start + step]
            if (~np.isnan(before) & (after != before)).any():
                raise FipError("the algorithm changed observed values of central's data")
        for target in self.targets:
            left = int(np.isnan(values[:, target.column]).sum())
            if left:
                raise FipError(
                    f"imputed dataset {len(self.imputed_cells) + 1} leaves {left} cell(s) of "
                    f"target '{target.name}' missing"
                )
        self.imputed_cells.append(values[np.isnan(original)])

    def record_fit(
        self,
        *,
        target: Target,
        cycle: int,
        n: int,
        coefficients: np.ndarray | Mapping[str, float],
        sse: float | None = None,
        iterations: int | None = None,
        dropped: Sequence[str] = (),
        augmented: bool = False,
        chain: int | None = None,
    ) -> None:
        """Note a fit for the report: coefficients in design order (every other column, then
        the intercept) or as a mapping from those names to values (a subset is fine);
        ``dropped``, the predictors the fit left out as constant over its rows (mice's
        loggedEvents); ``augmented``, that separation made it add pseudo-rows; ``chain``, which
        of parallel chains (1-based) it belongs to."""
        names = methods.get(target.type).parameter_names(
            self.spec.predictors(target), target.levels
        )
        if isinstance(coefficients, Mapping):
            unknown = sorted(set(coefficients) - set(names))
            if unknown:
                raise FipError(f"record_fit: {unknown} are not predictors of '{target.name}'")
            named = {k: float(v) for k, v in coefficients.items()}
        else:
            if len(coefficients) != len(names):
                raise FipError(
                    f"record_fit: {len(coefficients)} coefficients for {len(names)} parameters "
                    f"of '{target.name}' ({', '.join(names)})"
                )
            named = dict(zip(names, map(float, coefficients), strict=True))
        entry: dict[str, Any] = {
            "target": target.name,
            "type": target.type,
            "cycle": cycle,
            **({"chain": chain} if chain is not None else {}),
            "n": n,
            "coefficients": named,
        }
        if sse is not None:
            entry["sse"] = float(sse)
        if iterations is not None:
            entry["iterations"] = iterations
        if dropped:
            unknown = sorted(set(dropped) - set(names))
            if unknown:
                raise FipError(f"record_fit: {unknown} are not predictors of '{target.name}'")
            entry["dropped"] = list(dropped)
        if augmented:
            entry["augmented"] = True
        self.fits.append(entry)
        self._send(
            JobEvent(
                kind="fit",
                message=f"cycle {cycle}: fitted '{target.name}' on {n} rows",
            )
        )

    def record_check(
        self,
        kind: str,
        target: Target,
        result: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    ) -> None:
        """Note a site check of a target's fit for the report (a later fit's replaces it);
        its ``warning``, if any, is given once when the job ends. A callable ``result`` is
        computed then, so that a check every fit records costs only the last fit's, and
        nothing between round trips."""
        self._checks.setdefault(kind, {})[target.name] = result

    def _settle_checks(self) -> None:
        """Every recorded check computed (:meth:`record_check`), into ``checks``."""
        for kind, results in self._checks.items():
            for name, result in results.items():
                value = result() if callable(result) else result
                self.checks.setdefault(kind, {})[name] = dict(value)

    def record_trace(
        self, target: Target, *, chain: int, cycle: int, mean: float, variance: float
    ) -> None:
        """Note the mean and variance of central's imputed cells of a target after a cycle of
        a chain (1-based); the report carries the SD beside the variance, and null for a
        number central's cells do not define (no missing cell; variance: fewer than two)."""
        entry = self.traces.setdefault(target.name, {"method": target.type, "chains": []})
        chains: list[list[dict[str, float | None]]] = entry["chains"]
        while len(chains) < chain:
            chains.append([])
        finite = math.isfinite(variance)
        chains[chain - 1].append(
            {
                "cycle": cycle,
                "mean": mean if math.isfinite(mean) else None,
                "sd": math.sqrt(variance) if finite else None,
                "variance": variance if finite else None,
            }
        )

    def progress(self, fraction: float, message: str = "") -> None:
        self._send(JobEvent(kind="progress", message=message, fraction=min(max(fraction, 0), 1)))

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.spec.job_id, message, extra={"job_id": self.spec.job_id})
        self._send(JobEvent(kind="log", message=message))

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("job %s: %s", self.spec.job_id, message, extra={"job_id": self.spec.job_id})
        self._send(JobEvent(kind="warning", message=message))

    def _send(self, event: JobEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    async def _round_trip(
        self,
        ops: list[Op],
        *,
        local: Awaitable[Result] | None = None,
        replaces: int | None = None,
    ) -> dict[str, list[Result]]:
        """One request to every site (central's own part running alongside), checked replies."""
        sites = self.spec.sites
        request = Request(job_id=self.spec.job_id, seq=next(self._seq), ops=ops, replaces=replaces)
        frame = Frame.of(encode(request), request)  # the transport reads it without decoding
        self.traffic.round_trips += 1
        self.traffic.bytes_sent += len(frame) * len(sites)
        remote = asyncio.gather(
            *(self._exchange(site, frame, ops) for site in sites), return_exceptions=True
        )
        results: dict[str, list[Result]] = {}
        if local is None:
            answers = await remote
        else:
            central_result, answers = await asyncio.gather(local, remote)
            results[CENTRAL] = [central_result]
        failures: dict[str, str] = {}
        lost: list[str] = []
        for site, answer in zip(sites, answers, strict=True):
            if isinstance(answer, SiteLost):
                lost.append(site)
                continue
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                failures[site] = public_text(str(answer) or type(answer).__name__)
                continue
            self.traffic.bytes_received += len(answer)
            try:
                reply = message_of(answer)  # decoded once: by the transport, or here
                if isinstance(reply, ErrorReply):
                    failures[site] = public_text(reply.message)
                elif not isinstance(reply, Reply) or reply.seq != request.seq:
                    failures[site] = "answered with an unexpected message"
                else:
                    results[site] = self._checked(site, ops, reply.results)
            except ProtocolError as error:
                failures[site] = public_text(f"sent a reply that is not what was declared: {error}")
        if lost and not failures and any(op.name == secure.MASKED for op in ops):
            raise _RoundLost(lost, request.seq)
        failures.update(dict.fromkeys(lost, "its connection was lost during the request"))
        if failures:
            raise SiteFailed(failures)
        return results

    async def _exchange(self, site: str, frame: bytes, ops: list[Op]) -> bytes:
        """One site's answer to a request, within the deadline. The exchange runs in this
        task (``asyncio.timeout``, not a task of its own as ``wait_for`` makes): every site's
        request is on its way before central's own part of the round starts in its thread,
        which would otherwise hold the GIL while the event loop sends."""
        try:
            async with asyncio.timeout(self.deadline):
                return await self._transport.exchange(site, frame)
        except SiteLost:
            raise
        except TimeoutError:
            names = "+".join(op.name for op in ops)
            raise FipError(
                f"did not answer '{names}' within {self.deadline:g} s (the request deadline)"
            ) from None
        except FipError as error:
            raise FipError(f"no answer ({error})") from None
        except OSError as error:
            raise FipError(f"no answer ({type(error).__name__}: {error})") from None

    def _checked(self, site: str, ops: list[Op], results: list[Result]) -> list[Result]:
        """A site's results as its algorithm declared them; ``ProtocolError`` says what is off."""
        if len(results) != len(ops):
            raise ProtocolError(f"{len(results)} result(s) for {len(ops)} operation(s)")
        dims = self.spec.dims()
        checked: list[Result] = []
        for op, result in zip(ops, results, strict=True):
            if op.name in (CLOSE, secure.KEYS):
                checked.append({})
            elif op.name == OPEN:
                checked.append(self._declared_rows(site, result, dims))
            elif op.name == secure.MASKED:
                checked.append(self._masked_reply(site, op, result, dims))
            else:
                target = op.args.get("target")
                checked.append(
                    self._local.replies.check(
                        op.name,
                        result,
                        dims=dims,
                        bounds=self._bounds.get(site),
                        target=target if isinstance(target, int) else None,
                    )
                )
        return checked

    def _masked_reply(self, site: str, op: Op, result: Result, dims: Dims) -> Result:
        """A masked reply: limbs of the declared shapes; ``rows`` values as the site declared."""
        name = str(op.args["op"])
        declared = self._local.replies.operations[name]
        target = op.args["args"].get("target")
        target = target if isinstance(target, int) else None
        secure.check_masked(name, result, declared, dims.as_map(target))
        rows = {k: v for k, v in declared.items() if v.kind == "rows"}
        if not rows:
            return dict(result)
        counts = check_values(
            name,
            {k: result[k] for k in rows},
            rows,
            dims=dims,
            bounds=self._bounds.get(site),
            target=target,
        )
        return {**result, **counts}

    def _declared_rows(self, site: str, result: Result, dims: Dims) -> Result:
        """A site's summary at open, and the rows it declares: what its later counts must fit."""
        summary = check_values(
            OPEN,
            result,
            open_values(self._local.replies, secure=self.secure),
            dims=dims,
            bounds=Bounds(rows_used=np.iinfo(np.int64).max, target_rows={}),
        )
        rows, used = int(summary["rows"]), int(summary["rows_used"])
        target_rows = [int(n) for n in summary["target_rows"]]
        if not 0 <= used <= rows or any(n > used for n in target_rows):
            raise ProtocolError(
                f"declared {used} usable row(s) of {rows} and {target_rows} per target: "
                "the counts contradict each other"
            )
        if (np.asarray(summary["observed"]) > rows).any():
            raise ProtocolError(f"declared more observed cells in a column than its {rows} rows")
        self._bounds[site] = Bounds(
            rows_used=used,
            target_rows={t.index: n for t, n in zip(self.targets, target_rows, strict=True)},
        )
        return summary

    async def _open(self) -> None:
        spec_args = {"spec": self.spec.to_wire()}
        try:
            # prepare runs on central's whole table: in the job's thread, like every handler
            self.site_summaries[CENTRAL] = await self._lane.run(self._local.call, OPEN, spec_args)
        except FipError as error:
            message = str(error)
            raise CentralRefused(
                message if message.startswith(self.data.label) else f"{self.data.label}: {message}"
            ) from None
        if self.spec.sites:
            opened = await self._round_trip([Op(name=OPEN, args=spec_args)])
            self.site_summaries.update({site: result[0] for site, result in opened.items()})
        if self.secure:
            await self._agree_keys()
        self._check_targets()

    async def _agree_keys(self) -> None:
        """Relay the remote sites' public keys (with the next request) and note their
        fingerprints; the algorithm's summed summary values follow in a masked round."""
        words = []
        magnitudes = [secure.magnitude_of(self.data.values)]
        for site in self.spec.sites:
            summary = self.site_summaries[site]
            magnitude = int(summary[secure.MAGNITUDE])
            if not 0 <= magnitude <= secure.MAX_MAGNITUDE:
                raise SiteFailed({site: f"declared a magnitude of {magnitude}, not 0..1100"})
            magnitudes.append(magnitude)
            public = secure.key_bytes(summary[secure.PUBLIC_KEY])
            self.fingerprints[site] = secure.fingerprint(public)
            words.append(summary[secure.PUBLIC_KEY])
        self._magnitude = max(magnitudes)
        self._pending.append(
            Op(name=secure.KEYS, args={"sites": list(self.spec.sites), "keys": np.stack(words)})
        )
        for site, fingerprint in self.fingerprints.items():  # shown on central's job page
            self._send(
                JobEvent(
                    kind="log",
                    message=f"secure aggregation: public key relayed, fingerprint {fingerprint}",
                    site=site,
                )
            )
        replies = self._local.replies
        if PREPARE in replies.summed and replies.operations.get(PREPARE):
            pending, self._pending = self._pending, []
            self._summary_sums = await self._masked_sum(PREPARE, {}, pending)

    def _check_targets(self) -> None:
        for target in self.targets:
            counts = {s: int(r["observed"][target.column]) for s, r in self.site_summaries.items()}
            if sum(counts.values()) == 0:
                raise InputError(
                    f"target '{target.name}' has no observed value at any site: nothing to fit"
                )
            if counts[CENTRAL] == self.data.rows:
                self.warn(
                    f"target '{target.name}' has no missing value in {self.data.label}: "
                    "each imputed dataset equals the original in that column"
                )

    async def _close(self) -> None:
        # Not in the job's thread: a call still running there (a cancelled job's, an uploaded
        # half stuck in its sandbox) would hold it up, where closing ends that sandbox.
        await asyncio.to_thread(self._local.call, CLOSE, {})
        if not self.spec.sites:
            return
        try:
            await asyncio.wait_for(self._round_trip([Op(name=CLOSE)]), _CLOSE_TIMEOUT)
        except (FipError, TimeoutError, OSError) as error:
            log.warning("job %s: closing at the sites failed: %s", self.spec.job_id, error)


async def run_job(
    *,
    spec: JobSpec,
    central_module: ModuleType,
    local: SiteRunner,
    transport: Transport,
    on_event: EventSink | None = None,
    deadline: float = REQUEST_SECONDS,
) -> JobResult:
    """Run a whole job: open every site, run the central half, close, and build the report.

    Cancelling the task that awaits this stops the algorithm at its next message and still
    closes the job at every site (bounded by a few seconds) before the cancellation goes on.
    """
    if CENTRAL in spec.sites or len(set(spec.sites)) != len(spec.sites):
        raise InputError(f"site names must be unique and not '{CENTRAL}': {list(spec.sites)}")
    started = time.perf_counter()
    secure.check_job(local.replies, spec.params, spec.sites)
    local.data = code_table(local.data, spec)  # the job's layout: what central imputes
    job = CentralJob(
        spec=spec,
        data=local.data,
        rng=random_stream(spec.seed, f"{CENTRAL}/parameters"),
        _local=local,
        _transport=transport,
        _sink=on_event,
        deadline=deadline,
        secure=secure.enabled(spec.params),
    )
    try:
        await job._open()
        await central_module.run(job)
        job._settle_checks()
        for results in job.checks.values():
            for result in results.values():
                if result.get("warning"):
                    job.warn(str(result["warning"]))
        if job._pending:
            log.debug(
                "job %s: %d instruction(s) left unsent at the end", spec.job_id, len(job._pending)
            )
    finally:
        try:
            await job._close()
        finally:
            job._lane.close()
    expected = int(spec.params["imputations"])
    if len(job.imputed_cells) != expected:
        raise ProtocolError(
            f"the algorithm produced {len(job.imputed_cells)} imputed datasets, not {expected}"
        )
    job.progress(1.0, "completed")
    report = _report(job, seconds=time.perf_counter() - started)
    return JobResult(spec=spec, table=job.data, imputed_cells=job.imputed_cells, report=report)


def _report(job: CentralJob, *, seconds: float) -> dict[str, Any]:
    spec = job.spec
    sites = []
    replies = job._local.replies
    names = [t.name for t in spec.targets]
    for name in job.participants:
        summary = job.site_summaries[name]
        left_out = {
            replies.left_out_label(label, names): int(count)
            for label, count in zip(replies.left_out, summary["left_out"], strict=True)
            if count
        }
        sites.append(
            {
                "name": name,
                "rows": int(summary["rows"]),
                "rows_used": int(summary["rows_used"]),
                "left_out": left_out,
            }
        )
    report: dict[str, Any] = {
        "algorithm": spec.algorithm,
        "version": spec.version,
        "digest": spec.digest,
        "params": dict(spec.params),
        "seed": spec.seed,
        "targets": [
            {"name": t.name, "index": t.index, "type": t.type}
            | ({"levels": list(t.levels)} if t.levels else {})
            | ({"labels": list(t.labels)} if t.labels else {})
            | {"predictors": [spec.columns[i] for i in spec.design(t).sources]}
            for t in spec.targets
        ],
        **({"factors": {k: list(v) for k, v in spec.factors.items()}} if spec.factors else {}),
        **({"carried": list(spec.carried)} if spec.carried else {}),
        **({"notes": list(job.data.notes)} if job.data.notes else {}),
        "sites": sites,
        "fits": job.fits,
        "warnings": job.warnings,
        **({"chains": job.chains} if job.chains else {}),
        **({"traces": job.traces} if job.traces else {}),
        **({"site_checks": job.checks} if job.checks else {}),
        "round_trips": job.traffic.round_trips,
        "bytes_sent": job.traffic.bytes_sent,
        "bytes_received": job.traffic.bytes_received,
        "seconds": round(seconds, 6),
    }
    if job.secure:
        report["secure_aggregation"] = {
            "central_saw": "the sum over the remote sites of every summed reply, and each "
            "site's row counts; no site's own sums",
            "masked_rounds": job.masked_rounds,
            "restarts": job.restarts,
            "fingerprints": dict(job.fingerprints),
        }
    return report


class _RoundLost(Exception):
    """Sites were lost during a masked round (and are back): it starts again."""

    def __init__(self, sites: list[str], seq: int) -> None:
        super().__init__(", ".join(sites))
        self.sites = sites
        self.seq = seq


def _sum(parts: list[Result]) -> Result:
    """Replies added key by key, in order (whole numbers stay whole)."""
    total: Result = {}
    for key in parts[0]:
        value = parts[0][key]
        for part in parts[1:]:
            value = value + part[key]
        total[key] = value
    return total


def _as_sent(name: str, args: Mapping[str, Any]) -> Op:
    """The operation as a site receives it: through the codec, arrays read-only."""
    message = decode(encode(Request(job_id="", seq=0, ops=[Op(name=name, args=dict(args))])))
    assert isinstance(message, Request)
    return message.ops[0]
