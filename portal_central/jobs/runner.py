"""Running jobs at central: central's data and the results live here, in memory only.

One :class:`Run` per job holds central's uploaded table until the job ends, the imputed
results until they are downloaded (plus a short grace) or expire, and the recent events for
pages that subscribe. Nothing here is ever written to disk or to the database; the job's
row keeps only its state and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from federation.compare import comparison_report
from federation.data import Table, check_columns
from federation.errors import FipError, InputError
from federation.job import CENTRAL, JobEvent, JobSpec, target_from_wire
from federation.protocol import Cancel, ControlMessage, JobUpdate, Ready, Unready
from federation.registry import Registry
from federation.roles import code_table, spec_of_definition
from federation.runtime import REQUEST_SECONDS, JobResult, run_job
from federation.simulation import add_analysis
from federation.site import SiteRunner
from federation.transport import InMemoryTransport, Transport
from portal_central.db import Database
from portal_central.errors import Conflict, FieldInvalid
from portal_central.jobs import service, status
from portal_central.jobs.messages import for_viewer
from portal_central.models import Job, JobEventRecord, utcnow
from portal_central.sites.connections import Connections, WebSocketTransport

log = logging.getLogger(__name__)
_HISTORY = 200
_SAVE_INTERVAL = 0.5
"""Seconds between two writes of a job's new events to its stored log."""
PROGRESS_INTERVAL = 0.25
"""Seconds between two progress updates pushed to the sites of a job (the last one always
goes, at most this late)."""


@dataclass
class Run:
    """What central holds in memory for one job."""

    job_id: int
    data: Table | None = None
    task: asyncio.Task[None] | None = None
    result: JobResult | None = None
    progress: float = 0.0
    step: str = ""
    events: list[JobEvent] = field(default_factory=list)
    subscribers: set[asyncio.Queue[JobEvent | str]] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    """Sites whose user clicked Start (their data is loaded at the site)."""
    cancel_reason: str = ""
    purge_at: float | None = None
    downloaded: bool = False
    purged: str = ""
    """Why the results are gone, for the page ("downloaded and discarded", "expired")."""
    report: dict[str, Any] | None = None
    """The finished job's report (no rows in it): kept after the results go, for comparisons."""
    analysis: tuple[str, str] | None = None
    """An analysis model and family to fit on the datasets when the job completes."""
    audience: tuple[list[str], str, str] | None = None
    """The job's sites, state and message as last read for an update to them; progress
    updates reuse it, a state change reads them again."""
    progress_due: bool = False
    """A progress update to the sites is scheduled."""
    progress_told: float = 0.0
    """When (monotonic) the sites were last told the progress."""
    history_loaded: bool = False
    """``events`` holds the job's stored log too (read once, after a restart of central)."""
    unsaved: list[JobEvent] = field(default_factory=list)
    """Events not yet written to the job's stored log (written in batches, off the loop)."""
    save_due: bool = False


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


class Runs:
    """Every job's in-memory run, and the moves between states that come with it."""

    def __init__(
        self,
        *,
        database: Database,
        registry: Registry,
        connections: Connections,
        result_expiry_seconds: float,
        download_grace_seconds: float,
        request_deadline_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self._database = database
        self._registry = registry
        self._connections = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()
        connections.on_change = self._site_changed
        self._expiry = result_expiry_seconds
        self._grace = download_grace_seconds
        self._deadline = request_deadline_seconds
        self._runs: dict[int, Run] = {}
        self._loop_thread = threading.get_ident()

    def get(self, job_id: int) -> Run:
        return self._runs.setdefault(job_id, Run(job_id=job_id))

    # ------------------------------------------------------------- data and starting

    async def upload_central_data(self, job: Job, table: Table) -> None:
        """Hold central's table for the job (header checked) and start when everyone is ready."""
        if job.parent_id is not None:
            raise Conflict(
                f"job {job.id} is a method of comparison {job.parent_id}: give central's data to "
                "the comparison"
            )
        if job.state not in ("created", "waiting"):
            raise Conflict(f"job {job.id} is {job.state}; its data cannot change now")
        try:
            check_columns(table, job.columns)
            code_table(table, spec_of(job))
        except InputError as error:
            raise FieldInvalid(str(error), field="file") from None
        run = self.get(job.id)
        run.data = table
        if job.state == "created":
            self._move(job.id, to="waiting", message="central's data is in; waiting for the sites")
        self.publish(job.id, "state")
        await self.start_if_ready(job.id)

    async def start_if_ready(self, job_id: int) -> bool:
        """Start the job when central's data is in and every site is ready; say who is missing."""
        run = self.get(job_id)
        with self._database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.state != "waiting" or run.data is None or run.task is not None:
                return False
            spec = spec_of(job)
            missing = self.missing_sites(job)
            comparison = job.is_comparison
        if missing:
            return False
        if not self._move(job_id, to="running", message="running"):
            return False
        work = self._compare(run) if comparison else self._execute(run, spec)
        run.task = asyncio.create_task(work, name=f"job-{job_id}")
        run.task.add_done_callback(self._job_done)
        return True

    def _job_done(self, task: asyncio.Task[None]) -> None:
        """A job's run ended: a failure outside the algorithm (the engine's own errors are the
        job's message already) is logged and fails the job, instead of leaving it running."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        job_id = int(task.get_name().removeprefix("job-"))
        log.error("job %s: its run at central failed", job_id, exc_info=error)
        run = self._runs.get(job_id)
        if run is not None and run.task is task:
            run.task = None
        self._fail_unrecorded(
            job_id, "central's run of the job stopped on an internal error; see its log"
        )

    def missing_sites(self, job: Job) -> list[str]:
        """Participants that are not yet online with their user's Start clicked."""
        ready = self.get(job.id).ready
        return [
            site
            for site in (p.user.site_id or "" for p in job.participants)
            if not (self._connections.online(site) and site in ready)
        ]

    def site_status(self, job: Job) -> dict[str, str]:
        """For each participant: offline, online (not ready) or ready; once the job ended, the
        state it ended in (completed, failed, cancelled, interrupted)."""
        if job.state in status.FINAL:  # the job ended: each site ended with it
            return {p.user.site_id or "": job.state for p in job.participants}
        ready = self.get(job.id).ready
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

    # ------------------------------------------------------------- what sites say

    async def on_control(self, site_id: str, message: ControlMessage) -> None:
        """Ready, Unready and Cancel from a site's worker."""
        if not isinstance(message, Ready | Unready | Cancel):
            return
        try:
            job_id = int(message.job_id)
        except ValueError:
            return
        with self._database.session() as session:
            job = session.get(Job, job_id)
            if job is None or all(p.user.site_id != site_id for p in job.participants):
                log.warning("site %s spoke of job %s it is not part of", site_id, message.job_id)
                return
            state = job.state
        run = self.get(job_id)
        if isinstance(message, Ready) and state in ("created", "waiting"):
            run.ready.add(site_id)
            self.publish(job_id, JobEvent(kind="log", message="ready", site=site_id))
            self.publish(job_id, "state")
            await self.start_if_ready(job_id)
        elif isinstance(message, Unready) and state in ("created", "waiting"):
            run.ready.discard(site_id)
            self.publish(job_id, "state")
        elif isinstance(message, Cancel) and state not in status.FINAL:
            # Not awaited: closing the job waits for this very site's replies, which arrive
            # on the connection whose messages are being handled here.
            self._spawn(
                self.cancel(job_id, reason=f"cancelled at site {site_id}"),
                job_id=job_id,
                what="cancelling the job",
            )

    def ready_jobs(self, site_id: str) -> list[str]:
        return [str(job_id) for job_id, run in self._runs.items() if site_id in run.ready]

    def _site_changed(self, site_id: str) -> None:
        """A site came or went: waiting jobs that include it may start; pages refresh."""
        for job_id, run in list(self._runs.items()):
            if site_id in run.ready:
                self.publish(job_id, "state")
                self._spawn(self.start_if_ready(job_id), job_id=job_id, what="starting the job")

    def _spawn(self, coroutine: Any, *, job_id: int | None = None, what: str = "") -> None:
        """Run ``coroutine`` in the background; if it fails, the failure is logged and, for a
        job's task, shown in the job's event log as ``what`` failed."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._background.discard(task)
            if task.cancelled() or (error := task.exception()) is None:
                return
            log.error("job %s: %s failed", job_id, what or "a background task", exc_info=error)
            if job_id is not None:
                message = f"{what or 'a background task'} failed at central: {error}"
                self.publish(job_id, JobEvent(kind="warning", message=message[:500]))

        task.add_done_callback(done)

    async def _execute(self, run: Run, spec: JobSpec) -> None:
        assert run.data is not None
        to, message = await self._engine(run, spec, run.data)
        self._finish(run, to=to, message=message)

    async def _engine(
        self, run: Run, spec: JobSpec, data: Table, *, relay: _Relay | None = None
    ) -> tuple[str, str]:
        """Run one job's algorithm on central's ``data``: its final state and message. The
        results stay in ``run``; ``relay`` also shows the events on a comparison's page."""
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
            return "cancelled", run.cancel_reason or "cancelled at central"
        except FipError as error:
            return "failed", str(error)
        except Exception as error:  # noqa: BLE001 - a bug must fail the job, not the portal
            log.exception("job %s crashed", run.job_id)
            return "failed", f"internal error at central ({type(error).__name__}); see its log"
        finally:
            local.close()
        if run.analysis is not None:
            add_analysis(result, *run.analysis)
        run.result = result
        run.report = result.report
        run.purge_at = time.monotonic() + self._expiry
        return "completed", _summary(result)

    async def _compare(self, run: Run) -> None:
        """Run a comparison's methods that have not run yet, one after the other, on central's
        data; then the comparison is completed, or partial when some method failed."""
        parent_id = run.job_id
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            todo = [(c.id, spec_of(c)) for c in parent.methods if c.state == "created"]
        assert run.data is not None
        for k, (child_id, spec) in enumerate(todo):
            child = self.get(child_id)
            if not (
                self._move(child_id, to="waiting", message="")
                and self._move(child_id, to="running", message="running")
            ):
                continue  # marked failed: the comparison goes on, and ends partial
            self.publish(child_id, "state")
            relay = _Relay(parent_id=parent_id, method=spec.algorithm, done=k, of=len(todo))
            self.publish(parent_id, JobEvent(kind="log", message=f"{spec.algorithm}: started"))
            to, message = await self._engine(child, spec, run.data, relay=relay)
            if to == "cancelled":  # the reason was given to the comparison, not to its method
                message = run.cancel_reason or message
            self._move(child_id, to=to, message=message)
            self.publish(child_id, "state")
            self.publish(
                parent_id, JobEvent(kind="log", message=f"{spec.algorithm}: {to}: {message}")
            )
            if to == "cancelled":
                self._cancel_children(parent_id, reason=message)
                self._finish(run, to="cancelled", message=message)
                return
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            methods = [(c.algorithm.name, c.state) for c in parent.methods]
        failed = [name for name, state in methods if state != "completed"]
        if not failed:
            self._finish(run, to="completed", message=f"{len(methods)} methods compared")
            return
        run.task = None  # central keeps the data (and the sites theirs) for a retry
        self._move(
            parent_id,
            to="partial",
            message=f"{', '.join(failed)} did not complete; retry, or cancel to release the data",
        )
        self.publish(parent_id, "state")

    def _cancel_children(self, parent_id: int, *, reason: str) -> None:
        """Children that have not run are cancelled with their comparison."""
        with self._database.session() as session:
            parent = session.get(Job, parent_id)
            assert parent is not None
            for child in parent.children:
                if child.state in ("created", "waiting"):
                    status.advance(child, to="cancelled", message=f"{reason} before it ran")

    async def retry(self, child_id: int) -> int:
        """Run a comparison's failed method again (a new child job); the parent's id."""
        with self._database.session() as session:
            child = session.get(Job, child_id)
            assert child is not None
            attempt = service.new_attempt(session=session, child=child)
            parent = child.parent
            assert parent is not None
            status.advance(parent, to="waiting", message=f"retrying {attempt.algorithm.name}")
            parent_id = parent.id
        self.publish(parent_id, JobEvent(kind="log", message=f"retrying job {child_id}"))
        self.publish(parent_id, "state")
        await self.start_if_ready(parent_id)
        return parent_id

    def comparison(self, parent: Job) -> dict[str, Any]:
        """The side-by-side report of a comparison's methods, from their reports in memory."""
        entries = [
            {
                "algorithm": child.algorithm.name,
                "status": child.state,
                "message": child.message,
                "report": self.get(child.id).report,
            }
            for child in parent.methods
        ]
        return comparison_report(entries, reference=parent.algorithm.name)

    def _finish(self, run: Run, *, to: str, message: str) -> None:
        run.data = None  # central's rows are dropped as soon as the job ends
        run.task = None
        with contextlib.suppress(Conflict):
            self._move(run.job_id, to=to, message=message)
        self.publish(run.job_id, "state")

    # ------------------------------------------------------------- cancel and results

    async def cancel(self, job_id: int, *, reason: str = "", note: str = "") -> None:
        """Stop a job everywhere: a running one at its next message, a waiting one at once.
        ``reason`` says who cancelled ("cancelled at central" unless given); ``note`` is the
        user's own reason, shown at central and to the sites after it."""
        with self._database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.parent is not None:  # a method of a comparison: the comparison stops
                job = job.parent
            job_id, state = job.id, job.state
        run = self.get(job_id)
        who = reason or "cancelled at central"
        why = f": {note}" if note else ""
        run.cancel_reason = f"{who}{why}"
        task = run.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        when = "" if state == "partial" else " before it started"
        self._move(job_id, to="cancelled", message=f"{who}{when}{why}")
        self._cancel_children(job_id, reason=who)
        run.data = None
        run.ready.clear()
        self.publish(job_id, "state")

    def forget(self, job_ids: list[int]) -> None:
        """Drop what central holds for deleted jobs: results, reports, events, readiness."""
        for job_id in job_ids:
            run = self._runs.pop(job_id, None)
            if run is not None:
                run.data = run.result = None

    def downloaded(self, job_id: int) -> None:
        """A download started: keep the results a short grace, for the other format."""
        run = self.get(job_id)
        if run.result is not None:
            run.downloaded = True
            run.purge_at = min(run.purge_at or float("inf"), time.monotonic() + self._grace)

    def sweep(self, now: float | None = None) -> None:
        """Discard results whose time is up."""
        moment = time.monotonic() if now is None else now
        for run in self._runs.values():
            if run.result is not None and run.purge_at is not None and run.purge_at <= moment:
                run.result = None
                run.purge_at = None
                run.purged = (
                    "downloaded, then discarded from memory"
                    if run.downloaded
                    else "not downloaded in time, and discarded from memory"
                )
                self.publish(run.job_id, "state")

    async def sweep_forever(self, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.sweep()

    async def shutdown(self) -> None:
        for run in self._runs.values():
            if run.task is not None:
                run.task.cancel()
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the jobs' last events are published on the loop
        for run in list(self._runs.values()):  # the logs' last lines, before central stops
            batch, run.unsaved = run.unsaved, []
            self._write_events(run.job_id, batch)

    # ------------------------------------------------------------- events

    def publish(self, job_id: int, event: JobEvent | str) -> None:
        """Record and fan out an event ("state" means: the job's state changed).

        Safe from worker threads (central's own handlers run there): it hops to the loop.
        """
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._publish, job_id, event)
        else:
            self._publish(job_id, event)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the portal's event loop (called once at start-up)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def events(self, job_id: int) -> list[JobEvent]:
        """The job's event log, oldest first: the stored one (it outlives restarts) and what
        came since."""
        run = self.get(job_id)
        self._load_history(run)
        return run.events

    def _load_history(self, run: Run) -> None:
        if run.history_loaded:
            return
        run.history_loaded = True
        with self._database.session() as session:
            rows = session.scalars(
                select(JobEventRecord)
                .where(JobEventRecord.job_id == run.job_id)
                .order_by(JobEventRecord.id.desc())
                .limit(_HISTORY)
            ).all()
            stored = [
                JobEvent(kind=r.kind, message=r.message, site=r.site, at=r.at)  # type: ignore[arg-type]
                for r in reversed(rows)
            ]
        run.events[:0] = stored
        del run.events[:-_HISTORY]

    async def _save_events(self, run: Run) -> None:
        """Write the events that came in meanwhile to the job's stored log, in a worker thread."""
        await asyncio.sleep(_SAVE_INTERVAL)
        batch, run.unsaved, run.save_due = run.unsaved, [], False
        await asyncio.to_thread(self._write_events, run.job_id, batch)

    def _write_events(self, job_id: int, batch: list[JobEvent]) -> None:
        if not batch:
            return
        try:
            with self._database.session() as session:
                if session.get(Job, job_id) is None:
                    return  # deleted meanwhile
                session.add_all(
                    JobEventRecord(
                        job_id=job_id,
                        at=e.at,
                        kind=e.kind,
                        site=e.site,
                        message=e.message[:10_000],
                    )
                    for e in batch
                )
        except SQLAlchemyError:
            log.exception("job %s: could not store %d event(s) of its log", job_id, len(batch))

    def _publish(self, job_id: int, event: JobEvent | str) -> None:
        run = self.get(job_id)
        if isinstance(event, JobEvent):
            if event.kind == "progress" and event.fraction is not None:
                run.progress = event.fraction
                run.step = event.message
            else:
                self._load_history(run)
                run.events.append(event)
                del run.events[:-_HISTORY]
                run.unsaved.append(event)
                if not run.save_due:
                    run.save_due = True
                    self._spawn(self._save_events(run))
        for queue in list(run.subscribers):
            queue.put_nowait(event)
        if event == "state":
            self._spawn(
                self._tell_sites(job_id, fresh=True), job_id=job_id, what="telling the sites"
            )
        elif isinstance(event, JobEvent) and event.kind == "progress" and not run.progress_due:
            run.progress_due = True
            self._spawn(self._tell_progress(run), job_id=job_id, what="telling the sites")

    async def _tell_progress(self, run: Run) -> None:
        """The progress to the sites, at most every ``PROGRESS_INTERVAL`` seconds: events that
        come in meanwhile are folded into this update, which sends the latest."""
        await asyncio.sleep(max(0.0, run.progress_told + PROGRESS_INTERVAL - time.monotonic()))
        run.progress_due = False
        run.progress_told = time.monotonic()
        await self._tell_sites(run.job_id, fresh=False)

    async def _tell_sites(self, job_id: int, *, fresh: bool) -> None:
        """Push the job's state and progress to every participant that is online; the sites,
        state and message are read from the database when ``fresh`` (a state change) or not
        read before."""
        run = self.get(job_id)
        if fresh or run.audience is None:
            with self._database.session() as session:
                job = session.get(Job, job_id)
                if job is None or job.parent_id is not None:  # sites follow the comparison
                    run.audience = ([], "", "")
                    return
                sites = [p.user.site_id or "" for p in job.participants]
                run.audience = (sites, job.state, job.message)
        sites, state, message = run.audience
        for site in sites:
            link = self._connections.link(site)
            if link is not None:
                update = JobUpdate(
                    job_id=str(job_id),
                    state=state,
                    message=for_viewer(message, state=state, site_id=site),
                    progress=run.progress,
                    step=run.step,
                )
                try:
                    await link.send_control(update)
                except Exception as error:  # noqa: BLE001 - gone meanwhile: it reads the state on return
                    log.info("job %s: could not tell site %s its state: %r", job_id, site, error)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: int) -> AsyncIterator[asyncio.Queue[JobEvent | str]]:
        queue: asyncio.Queue[JobEvent | str] = asyncio.Queue()
        run = self.get(job_id)
        run.subscribers.add(queue)
        try:
            yield queue
        finally:
            run.subscribers.discard(queue)

    # ------------------------------------------------------------- state

    def _move(self, job_id: int, *, to: str, message: str) -> bool:
        """Record a job's new state. When the database refuses the write, the job is marked
        failed instead (if that can still be written) and False is returned: a job must not
        sit in a state that nothing will ever move it out of."""
        try:
            with self._database.session() as session:
                job = session.get(Job, job_id)
                assert job is not None
                status.advance(job, to=to, message=message)
            return True
        except SQLAlchemyError as error:
            cause = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        log.error("job %s: could not record its state '%s': %s", job_id, to, cause)
        self._fail_unrecorded(job_id, f"central could not record the state '{to}': {cause}")
        return False

    def _fail_unrecorded(self, job_id: int, reason: str) -> None:
        """Mark a job failed after a refused state write: the one move outside the transition
        table, from whatever state the database still holds; central drops its data."""
        run = self._runs.get(job_id)
        if run is not None:
            run.data = run.result = None
        try:
            with self._database.session() as session:
                job = session.get(Job, job_id)
                if job is not None and job.state not in status.FINAL:
                    job.state, job.message, job.finished_at = "failed", reason, utcnow()
        except SQLAlchemyError:
            log.exception("job %s: could not mark it failed either", job_id)
        self.publish(job_id, "state")

    def interrupt_unfinished(self) -> int:
        """At start-up: jobs that were waiting or running lost central's data with the restart."""
        count = 0
        with self._database.session() as session:
            for job in session.scalars(select(Job).where(Job.state.in_(status.ACTIVE))):
                status.advance(
                    job,
                    to="interrupted",
                    message="central restarted; its data was held in memory only. "
                    "Create the job again and upload the data.",
                )
                count += 1
                for child in job.children:
                    if child.state == "created":
                        status.advance(child, to="cancelled", message="central restarted")
        return count


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
