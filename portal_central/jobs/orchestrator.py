"""Running jobs at central: when a job starts, how a comparison runs its methods, retry, cancel.

The orchestrator decides; it holds nothing itself. Central's rows and the results are in the
:class:`~portal_central.jobs.store.RunStore`, state changes are written by
:class:`~portal_central.jobs.moves.JobMoves`, events go to the broker (the pages, the event
log and the site notifier listen there), and the sites are reached through ``Connections``.
A job starts when central's data is in and every participant is online with its user's Start
clicked; the broker tells the orchestrator when a site comes or goes (topic ``SITES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from federation.compare import comparison_report
from federation.data import Table, check_columns
from federation.errors import CentralRefused, FipError, InputError
from federation.job import CENTRAL, JobEvent, JobSpec, target_from_wire
from federation.protocol import Cancel, ControlMessage, Ready, Unready
from federation.registry import Registry
from federation.roles import coding_of, spec_of_definition
from federation.runtime import REQUEST_SECONDS, JobResult, run_job
from federation.simulation import add_analysis
from federation.site import SiteRunner
from federation.transport import InMemoryTransport, Transport
from portal_central.db import Database
from portal_central.errors import Conflict, FieldInvalid
from portal_central.jobs import reports, service, status
from portal_central.jobs.eventlog import JobLogs
from portal_central.jobs.messages import CENTRAL_REFUSED
from portal_central.jobs.moves import JobMoves
from portal_central.jobs.status import FINAL, JobState
from portal_central.jobs.store import Expired, Run, RunStore
from portal_central.models import Job
from portal_central.sites.connections import SITES, Connections, WebSocketTransport
from portal_common.broker import Broker
from portal_common.tasks import Tasks

log = logging.getLogger(__name__)


def spec_of(job: Job) -> JobSpec:
    """The engine's view of a stored job."""
    parts = spec_of_definition(
        job.columns, [target_from_wire(t) for t in job.targets], job.roles or {}
    )
    return replace(
        parts,
        job_id=str(job.id),
        algorithm=job.algorithm.name,
        version=job.algorithm.version,
        digest=job.algorithm.digest,
        params=dict(job.params),
        seed=job.seed,
        sites=tuple(p.user.site_id or "" for p in job.participants),
    )


class Orchestrator:
    """Start rules, comparisons, retry and cancel for every job."""

    def __init__(
        self,
        *,
        database: Database,
        registry: Registry,
        connections: Connections,
        store: RunStore,
        logs: JobLogs,
        broker: Broker[JobEvent | str],
        tasks: Tasks,
        request_deadline_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self._database = database
        self._registry = registry
        self._connections = connections
        self._store = store
        self._logs = logs
        self._broker = broker
        self._tasks = tasks
        self._deadline = request_deadline_seconds
        self.moves = JobMoves(database=database, store=store, broker=broker)
        self._starting: set[int] = set()

    def publish(self, job_id: int, event: JobEvent | str) -> None:
        """An event of the job ("state": its state changed), from any thread."""
        self._broker.publish(job_id, event)

    # ------------------------------------------------------------- data and starting

    async def upload_central_data(self, job: Job, table: Table) -> None:
        """Hold central's table for the job (header checked) and start when everyone is ready."""
        if job.parent_id is not None:
            raise Conflict(
                f"job {job.id} is a method of comparison {job.parent_id}: give central's data to "
                "the comparison"
            )
        if job.state not in (JobState.CREATED, JobState.WAITING):
            raise Conflict(f"job {job.id} is {job.state}; its data cannot change now")
        try:
            check_columns(table, job.columns)
            coding_of(table, spec_of(job))  # refused as the job would (without its copy)
        except InputError as error:
            raise FieldInvalid(str(error), field="file") from None
        self._store.hold_data(job.id, table)
        if job.state == JobState.CREATED:
            moved = await asyncio.to_thread(
                self.moves.move,
                job.id,
                to=JobState.WAITING,
                message="central's data is in; waiting for the sites",
            )
            if not moved:
                return
        self.publish(job.id, "state")
        await self.start_if_ready(job.id)

    async def start_if_ready(self, job_id: int) -> bool:
        """Start the job when central's data is in and every site is ready."""
        run = self._store.get(job_id)
        if run is None or run.data is None or run.task is not None:
            return False
        found = await asyncio.to_thread(self._startable, job_id)
        if found is None or run.data is None or run.task is not None:
            return False
        if job_id in self._starting:
            return False
        spec, comparison = found
        self._starting.add(job_id)  # a second call meanwhile does not start it again
        try:
            moved = await asyncio.to_thread(
                self.moves.move, job_id, to=JobState.RUNNING, message="running"
            )
        finally:
            self._starting.discard(job_id)
        if not moved:
            return False
        self.publish(job_id, "state")  # the sites and pages follow it to running
        work = self._compare(run) if comparison else self._execute(run, spec)
        run.task = asyncio.create_task(work, name=f"job-{job_id}")
        run.task.add_done_callback(self._job_done)
        return True

    def _startable(self, job_id: int) -> tuple[JobSpec, bool] | None:
        """The job's spec and whether it is a comparison, when it is waiting with everyone ready."""
        with self._database.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.WAITING or self.missing_sites(job):
                return None
            return spec_of(job), job.is_comparison

    def _job_done(self, task: asyncio.Task[None]) -> None:
        """A job's run ended: a failure outside the algorithm (the engine's own errors are the
        job's message already) is logged and fails the job, instead of leaving it running."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        job_id = int(task.get_name().removeprefix("job-"))
        log.error("job %s: its run at central failed", job_id, exc_info=error)
        run = self._store.get(job_id)
        if run is not None and run.task is task:
            run.task = None
        self.moves.fail_unrecorded(
            job_id, "central's run of the job stopped on an internal error; see its log"
        )

    def missing_sites(self, job: Job) -> list[str]:
        """Participants that are not yet online with their user's Start clicked."""
        ready = self._store.view(job.id).ready
        return [
            site
            for site in (p.user.site_id or "" for p in job.participants)
            if not (self._connections.online(site) and site in ready)
        ]

    def site_status(self, job: Job) -> dict[str, str]:
        """For each participant: offline, online (not ready) or ready; once the job ended, the
        state it ended in (completed, failed, cancelled, interrupted)."""
        if job.state in FINAL:  # the job ended: each site ended with it
            return {p.user.site_id or "": job.state for p in job.participants}
        ready = self._store.view(job.id).ready
        status_of = {}
        for participant in job.participants:
            site = participant.user.site_id or ""
            if not self._connections.online(site):
                status_of[site] = "offline"
            else:
                status_of[site] = "ready" if site in ready else "online"
        return status_of

    def transport_for(self, spec: JobSpec) -> Transport:
        if spec.sites:
            return WebSocketTransport(self._connections)
        return InMemoryTransport({})

    def ready_jobs(self, site_id: str) -> list[str]:
        return [str(job_id) for job_id in self._store.ready_jobs(site_id)]

    # ------------------------------------------------------------- what sites say

    async def on_control(self, site_id: str, message: ControlMessage) -> None:
        """Ready, Unready and Cancel from a site's worker."""
        if not isinstance(message, Ready | Unready | Cancel):
            return
        try:
            job_id = int(message.job_id)
        except ValueError:
            return
        state = await asyncio.to_thread(self._state_for_site, job_id, site_id)
        if state is None:
            log.warning("site %s spoke of job %s it is not part of", site_id, message.job_id)
            return
        if isinstance(message, Ready) and state in (JobState.CREATED, JobState.WAITING):
            self._store.open(job_id).ready.add(site_id)
            self.publish(job_id, JobEvent(kind="log", message="ready", site=site_id))
            self.publish(job_id, "state")
            await self.start_if_ready(job_id)
        elif isinstance(message, Unready) and state in (JobState.CREATED, JobState.WAITING):
            run = self._store.get(job_id)
            if run is not None:
                run.ready.discard(site_id)
            self.publish(job_id, "state")
        elif isinstance(message, Cancel) and state not in FINAL:
            # Not awaited: closing the job waits for this very site's replies, which arrive
            # on the connection whose messages are being handled here.
            self._tasks.spawn(
                self.cancel(job_id, reason=f"cancelled at site {site_id}"),
                what="cancelling the job",
                job=job_id,
            )

    def _state_for_site(self, job_id: int, site_id: str) -> str | None:
        with self._database.session() as session:
            job = session.get(Job, job_id)
            if job is None or all(p.user.site_id != site_id for p in job.participants):
                return None
            return job.state

    def on_event(self, topic: Hashable, message: JobEvent | str) -> None:
        """A broker listener: a site came or went, so waiting jobs that include it may start
        and their pages refresh."""
        if topic != SITES or not isinstance(message, str):
            return
        for job_id in self._store.ready_jobs(message):
            self.publish(job_id, "state")
            self._tasks.spawn(self.start_if_ready(job_id), what="starting the job", job=job_id)

    # ------------------------------------------------------------- running

    async def _execute(self, run: Run, spec: JobSpec) -> None:
        assert run.data is not None
        to, message = await self._engine(run, spec, run.data)
        if to == JobState.WAITING:  # central's file refused before any site was asked
            self._store.drop_data(run)
            run.task = None
            with contextlib.suppress(Conflict):
                await asyncio.to_thread(self.moves.move, run.job_id, to=to, message=message)
            self.publish(run.job_id, "state")
            return
        await self._finish(run, to=to, message=message)

    async def _engine(
        self, run: Run, spec: JobSpec, data: Table, *, relay: _Relay | None = None
    ) -> tuple[JobState, str]:
        """Run one job's algorithm on central's ``data``: its final state and message. The
        results go to the store, the report to the database; ``relay`` also shows the events
        on a comparison's page."""
        algorithm = self._registry.get(spec.algorithm, spec.version)

        def on_event(event: JobEvent) -> None:
            self.publish(run.job_id, event)
            if relay is not None:
                self.publish(relay.parent_id, relay.event(event))

        local = SiteRunner(
            site=CENTRAL, data=data, algorithm=algorithm, is_central=True, on_event=on_event
        )
        try:
            result = await run_job(
                spec=spec,
                central_module=algorithm.central,
                local=local,
                transport=self.transport_for(spec),
                on_event=on_event,
                deadline=self._deadline,
            )
        except asyncio.CancelledError:
            return JobState.CANCELLED, run.cancel_reason or "cancelled at central"
        except CentralRefused as error:  # not a failure: a corrected file can follow
            return JobState.WAITING, f"{CENTRAL_REFUSED}{error}; upload a corrected file"
        except FipError as error:
            return JobState.FAILED, str(error)
        except Exception as error:  # noqa: BLE001 - a bug must fail the job, not the portal
            log.exception("job %s crashed", run.job_id)
            return (
                JobState.FAILED,
                f"internal error at central ({type(error).__name__}); see its log",
            )
        finally:
            local.close()
        if run.analysis is not None:
            add_analysis(result, *run.analysis)
        self._store.keep_result(run, result)
        await asyncio.to_thread(self._keep_report, run.job_id, result.report)
        return JobState.COMPLETED, _summary(result)

    def _keep_report(self, job_id: int, report: dict[str, Any]) -> None:
        try:
            with self._database.session() as session:
                reports.save(session=session, job_id=job_id, report=report)
        except SQLAlchemyError:  # the results are still here; only a later comparison lacks it
            log.exception("job %s: could not store its report", job_id)
            self.publish(
                job_id,
                JobEvent(kind="warning", message="central could not store the job's report"),
            )

    async def _compare(self, run: Run) -> None:
        """Run a comparison's methods that have not run yet, one after the other, on central's
        data; then the comparison is completed, or partial when some method failed."""
        parent_id = run.job_id
        todo = await asyncio.to_thread(self._todo, parent_id)
        assert run.data is not None
        for k, (child_id, spec) in enumerate(todo):
            child = self._store.open(child_id)
            if not (
                await asyncio.to_thread(self._start_child, child_id)
            ):  # marked failed: the comparison goes on, and ends partial
                continue
            self.publish(child_id, "state")
            relay = _Relay(parent_id=parent_id, method=spec.algorithm, done=k, of=len(todo))
            self.publish(parent_id, JobEvent(kind="log", message=f"{spec.algorithm}: started"))
            to, message = await self._engine(child, spec, run.data, relay=relay)
            if to == JobState.WAITING:  # one method's refusal: the comparison's others go on
                to = JobState.FAILED
            if to == JobState.CANCELLED:  # the reason was given to the comparison, not its method
                message = run.cancel_reason or message
            await asyncio.to_thread(self.moves.move, child_id, to=to, message=message)
            self.publish(child_id, "state")
            self.publish(
                parent_id, JobEvent(kind="log", message=f"{spec.algorithm}: {to}: {message}")
            )
            if to == JobState.CANCELLED:
                await asyncio.to_thread(self.moves.cancel_children, parent_id, reason=message)
                await self._finish(run, to=JobState.CANCELLED, message=message)
                return
        methods = await asyncio.to_thread(self._method_states, parent_id)
        failed = [name for name, state in methods if state != JobState.COMPLETED]
        if not failed:
            await self._finish(
                run, to=JobState.COMPLETED, message=f"{len(methods)} methods compared"
            )
            return
        self._store.park_data(run)  # central keeps the data (and the sites theirs) for a retry
        await asyncio.to_thread(
            self.moves.move,
            parent_id,
            to=JobState.PARTIAL,
            message=f"{', '.join(failed)} did not complete; retry, or cancel to release the data",
        )
        self.publish(parent_id, "state")

    def _todo(self, parent_id: int) -> list[tuple[int, JobSpec]]:
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            return [(c.id, spec_of(c)) for c in parent.methods if c.state == JobState.CREATED]

    def _start_child(self, child_id: int) -> bool:
        return self.moves.move(child_id, to=JobState.WAITING, message="") and self.moves.move(
            child_id, to=JobState.RUNNING, message="running"
        )

    def _method_states(self, parent_id: int) -> list[tuple[str, str]]:
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            return [(c.algorithm.name, c.state) for c in parent.methods]

    async def _finish(self, run: Run, *, to: JobState, message: str) -> None:
        self._store.drop_data(run)  # central's rows are dropped as soon as the job ends
        run.task = None
        with contextlib.suppress(Conflict):
            await asyncio.to_thread(self.moves.move, run.job_id, to=to, message=message)
        self.publish(run.job_id, "state")

    # ------------------------------------------------------------- retry and cancel

    async def retry(self, child_id: int) -> int:
        """Run a comparison's failed method again (a new child job); the parent's id."""
        parent_id = await asyncio.to_thread(self._new_attempt, child_id)
        run = self._store.get(parent_id)
        if run is not None and run.data is not None:
            self._store.hold_data(parent_id, run.data)  # its rows are in use again
        self.publish(parent_id, JobEvent(kind="log", message=f"retrying job {child_id}"))
        self.publish(parent_id, "state")
        await self.start_if_ready(parent_id)
        return parent_id

    def _new_attempt(self, child_id: int) -> int:
        with self._database.session() as session:
            child = session.get(Job, child_id)
            assert child is not None
            attempt = service.new_attempt(session=session, child=child)
            parent = child.parent
            assert parent is not None
            status.advance(
                parent, to=JobState.WAITING, message=f"retrying {attempt.algorithm.name}"
            )
            return parent.id

    async def cancel(self, job_id: int, *, reason: str = "", note: str = "") -> None:
        """Stop a job everywhere: a running one at its next message, a waiting one at once.
        ``reason`` says who cancelled ("cancelled at central" unless given); ``note`` is the
        user's own reason, shown at central and to the sites after it."""
        job_id, state = await asyncio.to_thread(self._cancel_target, job_id)
        run = self._store.open(job_id)
        who = reason or "cancelled at central"
        why = f": {note}" if note else ""
        run.cancel_reason = f"{who}{why}"
        task = run.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        when = "" if state == JobState.PARTIAL else " before it started"
        await asyncio.to_thread(
            self.moves.move, job_id, to=JobState.CANCELLED, message=f"{who}{when}{why}"
        )
        await asyncio.to_thread(self.moves.cancel_children, job_id, reason=who)
        self._store.drop_data(run)
        run.ready.clear()
        self.publish(job_id, "state")

    def _cancel_target(self, job_id: int) -> tuple[int, str]:
        """The job a cancel stops (a comparison's method stops its comparison) and its state."""
        with self._database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.parent is not None:
                job = job.parent
            return job.id, job.state

    def forget(self, job_ids: list[int]) -> None:
        """Drop what central holds for deleted jobs: results, readiness, cached events."""
        for job_id in job_ids:
            self._store.forget(job_id)
            self._logs.forget(job_id)

    # ------------------------------------------------------------- reports

    def comparison(self, parent: Job) -> dict[str, Any]:
        """The side-by-side report of a comparison's methods, from their stored reports (they
        hold no data, and outlive a restart of central). Call with ``parent``'s session open."""
        session = _session_of(parent)
        methods = list(parent.methods)
        stored = reports.load(session=session, job_ids=[c.id for c in methods])
        entries = [
            {
                "algorithm": child.algorithm.name,
                "status": child.state,
                "message": child.message,
                "report": stored.get(child.id),
            }
            for child in methods
        ]
        return comparison_report(entries, reference=parent.algorithm.name)

    # ------------------------------------------------------------- expiry and shutdown

    def sweep(self, now: float | None = None) -> None:
        """Discard what the store's time is up for; a job whose central rows went while it
        waited goes back to created (a comparison waiting for a retry is cancelled)."""
        self._expired(self._store.sweep(now))

    def _expired(self, expired: list[Expired]) -> None:
        for job_id, what in expired:
            if what == "data":
                self._data_expired(job_id)
            self.publish(job_id, "state")

    def _data_expired(self, job_id: int) -> None:
        minutes = f"{self._store.result_seconds / 60:g} min"
        with self._database.session() as session:
            job = session.get(Job, job_id)
            state = job.state if job is not None else None
        if state == JobState.WAITING:
            self.moves.move(
                job_id,
                to=JobState.CREATED,
                message=f"central's data was discarded from memory after {minutes} waiting "
                "for the sites; upload it again",
            )
        elif state == JobState.PARTIAL:
            self.moves.move(
                job_id,
                to=JobState.CANCELLED,
                message=f"central's data was discarded from memory {minutes} after the last "
                "method ran; run the comparison again to retry",
            )
            self.moves.cancel_children(job_id, reason="central's data was discarded")

    async def sweep_forever(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            expired = self._store.sweep()  # on the loop, where the store is changed
            if expired:
                await asyncio.to_thread(self._expired, expired)

    async def shutdown(self) -> None:
        tasks = [r.task for r in self._store.runs() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the jobs' last events are published on the loop
        await self._tasks.cancel_all()
        self._logs.flush()  # the logs' last lines, before central stops


def _session_of(job: Job) -> Any:
    from sqlalchemy.orm import object_session

    session = object_session(job)
    assert session is not None, "read a comparison with its job's session open"
    return session


@dataclass(frozen=True)
class _Relay:
    """Shows a comparison's running method on the comparison's own page."""

    parent_id: int
    method: str
    done: int
    of: int

    def event(self, event: JobEvent) -> JobEvent:
        if event.kind == "progress" and event.fraction is not None:
            fraction = (self.done + event.fraction) / self.of
            return replace(event, fraction=fraction, message=f"{self.method}: {event.message}")
        return replace(event, message=f"{self.method}: {event.message}")


def _summary(result: JobResult) -> str:
    report = result.report
    secured = (
        "; securely aggregated: central saw only the sum of the sites' replies"
        if "secure_aggregation" in report
        else ""
    )
    return (
        f"{len(result.imputed_cells)} imputed datasets; {report['round_trips']} round trips, "
        f"{report['seconds']:.1f} s{secured}"
    )
