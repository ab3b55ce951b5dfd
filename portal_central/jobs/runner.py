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
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from federation.data import Table, check_columns
from federation.errors import FipError, InputError
from federation.job import CENTRAL, JobEvent, JobSpec, Target
from federation.protocol import Cancel, ControlMessage, JobUpdate, Ready, Unready
from federation.registry import Registry
from federation.runtime import JobResult, run_job
from federation.site import SiteRunner
from federation.transport import InMemoryTransport, Transport
from portal_central.db import Database
from portal_central.errors import Conflict, FieldInvalid
from portal_central.jobs import status
from portal_central.models import Job
from portal_central.sites.connections import Connections, WebSocketTransport

log = logging.getLogger(__name__)
_HISTORY = 200


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


def spec_of(job: Job) -> JobSpec:
    """The engine's view of a stored job."""
    return JobSpec(
        job_id=str(job.id),
        algorithm=job.algorithm.name,
        version=job.algorithm.version,
        digest=job.algorithm.digest,
        columns=tuple(job.columns),
        targets=tuple(Target(t["index"], t["name"], t["type"]) for t in job.targets),
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
    ) -> None:
        self._database = database
        self._registry = registry
        self._connections = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()
        connections.on_change = self._site_changed
        self._expiry = result_expiry_seconds
        self._grace = download_grace_seconds
        self._runs: dict[int, Run] = {}
        self._loop_thread = threading.get_ident()

    def get(self, job_id: int) -> Run:
        return self._runs.setdefault(job_id, Run(job_id=job_id))

    # ------------------------------------------------------------- data and starting

    async def upload_central_data(self, job: Job, table: Table) -> None:
        """Hold central's table for the job (header checked) and start when everyone is ready."""
        if job.state not in ("created", "waiting"):
            raise Conflict(f"job {job.id} is {job.state}; its data cannot change now")
        try:
            check_columns(table, job.columns)
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
        if missing:
            return False
        transport = self.transport_for(spec)
        self._move(job_id, to="running", message="running")
        run.task = asyncio.create_task(self._execute(run, spec, transport), name=f"job-{job_id}")
        return True

    def missing_sites(self, job: Job) -> list[str]:
        """Participants that are not yet online with their user's Start clicked."""
        ready = self.get(job.id).ready
        return [
            site
            for site in (p.user.site_id or "" for p in job.participants)
            if not (self._connections.online(site) and site in ready)
        ]

    def site_status(self, job: Job) -> dict[str, str]:
        """For each participant: offline, online (not ready) or ready."""
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
            self._spawn(self.cancel(job_id, reason=f"cancelled at site {site_id}"))

    def ready_jobs(self, site_id: str) -> list[str]:
        return [str(job_id) for job_id, run in self._runs.items() if site_id in run.ready]

    def _site_changed(self, site_id: str) -> None:
        """A site came or went: waiting jobs that include it may start; pages refresh."""
        for job_id, run in list(self._runs.items()):
            if site_id in run.ready:
                self.publish(job_id, "state")
                self._spawn(self.start_if_ready(job_id))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _execute(self, run: Run, spec: JobSpec, transport: Transport) -> None:
        algorithm = self._registry.get(spec.algorithm, spec.version)
        assert run.data is not None
        local = SiteRunner(
            site=CENTRAL,
            data=run.data,
            remote=algorithm.remote,
            is_central=True,
            on_event=lambda event: self.publish(run.job_id, event),
        )
        try:
            result = await run_job(
                spec=spec,
                central_module=algorithm.central,
                local=local,
                transport=transport,
                on_event=lambda event: self.publish(run.job_id, event),
            )
        except asyncio.CancelledError:
            self._finish(run, to="cancelled", message=run.cancel_reason or "cancelled at central")
            return
        except FipError as error:
            self._finish(run, to="failed", message=str(error))
            return
        except Exception as error:  # noqa: BLE001 - a bug must fail the job, not the portal
            log.exception("job %s crashed", run.job_id)
            self._finish(
                run, to="failed", message=f"internal error: {type(error).__name__}: {error}"
            )
            return
        run.result = result
        run.purge_at = time.monotonic() + self._expiry
        self._finish(run, to="completed", message=_summary(result))

    def _finish(self, run: Run, *, to: str, message: str) -> None:
        run.data = None  # central's rows are dropped as soon as the job ends
        run.task = None
        with contextlib.suppress(Conflict):
            self._move(run.job_id, to=to, message=message)
        self.publish(run.job_id, "state")

    # ------------------------------------------------------------- cancel and results

    async def cancel(self, job_id: int, *, reason: str = "") -> None:
        """Stop a job everywhere: a running one at its next message, a waiting one at once."""
        run = self.get(job_id)
        run.cancel_reason = reason or "cancelled at central"
        task = run.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        self._move(job_id, to="cancelled", message=f"{run.cancel_reason} before it started")
        run.data = None
        run.ready.clear()
        self.publish(job_id, "state")

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

    def _publish(self, job_id: int, event: JobEvent | str) -> None:
        run = self.get(job_id)
        if isinstance(event, JobEvent):
            if event.kind == "progress" and event.fraction is not None:
                run.progress = event.fraction
                run.step = event.message
            else:
                run.events.append(event)
                del run.events[:-_HISTORY]
        for queue in list(run.subscribers):
            queue.put_nowait(event)
        if event == "state" or (isinstance(event, JobEvent) and event.kind == "progress"):
            self._spawn(self._tell_sites(job_id))

    async def _tell_sites(self, job_id: int) -> None:
        """Push the job's state and progress to every participant that is online."""
        with self._database.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            sites = [p.user.site_id or "" for p in job.participants]
            update = JobUpdate(
                job_id=str(job_id),
                state=job.state,
                message=job.message,
                progress=self.get(job_id).progress,
                step=self.get(job_id).step,
            )
        for site in sites:
            link = self._connections.link(site)
            if link is not None:
                with contextlib.suppress(Exception):
                    await link.send_control(update)

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

    def _move(self, job_id: int, *, to: str, message: str) -> None:
        with self._database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            status.advance(job, to=to, message=message)

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
        return count


def _summary(result: JobResult) -> str:
    report = result.report
    return (
        f"{len(result.imputed_cells)} imputed datasets; {report['round_trips']} round trips, "
        f"{report['seconds']:.1f} s"
    )
