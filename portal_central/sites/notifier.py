"""Pushing a job's state and progress to its sites over their WebSockets.

The notifier listens to the broker. A job's state change ("state") is sent to every participant
that is online, with its sites, state and message read afresh from the database; progress is
sent at most every ``PROGRESS_INTERVAL`` seconds (the latest always goes, at most this late),
reusing what was read for the last state. A job's pushes take turns, in the order of its events:
a read of the state that started earlier cannot land later and put an older state back (the
site's page said "waiting" through a whole run). A site that is offline reads the state when it
comes back. The notifier forgets a job once it has told its sites that the job ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass

from federation.job import JobEvent
from federation.protocol import JobUpdate
from federation.states import JobState
from portal_central.db import Database
from portal_central.jobs.messages import for_viewer
from portal_central.jobs.status import FINAL
from portal_central.jobs.store import RunStore
from portal_central.models import Job
from portal_central.sites.connections import Connections
from portal_common.tasks import Tasks

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.25
"""Seconds between two progress updates pushed to the sites of a job."""


@dataclass
class _Audience:
    sites: list[str]
    state: JobState
    message: str


class SiteNotifier:
    """Tells the sites of a job what central's page shows of it."""

    def __init__(
        self, *, database: Database, connections: Connections, store: RunStore, tasks: Tasks
    ) -> None:
        self._database = database
        self._connections = connections
        self._store = store
        self._tasks = tasks
        self._audiences: dict[int, _Audience] = {}
        self._progress_due: set[int] = set()
        self._progress_told: dict[int, float] = {}
        self._turns: dict[int, asyncio.Lock] = {}
        """Per job, the lock its pushes take in turn (first come, first served)."""

    def on_event(self, topic: Hashable, message: JobEvent | str) -> None:
        """A broker listener: a state change goes at once, progress throttled."""
        if not isinstance(topic, int):
            return
        if message == "state":
            self._tasks.spawn(self.tell(topic, fresh=True), what="telling the sites", job=topic)
        elif isinstance(message, JobEvent) and message.kind == "progress":
            if topic not in self._progress_due:
                self._progress_due.add(topic)
                self._tasks.spawn(self._tell_progress(topic), what="telling the sites", job=topic)

    def known(self) -> int:
        """How many jobs' audiences are held now."""
        return len(self._audiences) + len(self._progress_told) + len(self._turns)

    async def _tell_progress(self, job_id: int) -> None:
        told = self._progress_told.get(job_id, 0.0)
        await asyncio.sleep(max(0.0, told + PROGRESS_INTERVAL - time.monotonic()))
        self._progress_due.discard(job_id)
        self._progress_told[job_id] = time.monotonic()
        await self.tell(job_id, fresh=False)

    async def tell(self, job_id: int, *, fresh: bool) -> None:
        """Push the job's state and progress to every participant that is online; its sites,
        state and message are read from the database when ``fresh`` or not read before. After
        the pushes of the job's earlier events."""
        async with self._turns.setdefault(job_id, asyncio.Lock()):
            await self._tell(job_id, fresh=fresh)

    def _forget(self, job_id: int) -> None:
        self._audiences.pop(job_id, None)
        self._progress_told.pop(job_id, None)
        self._turns.pop(job_id, None)

    async def _tell(self, job_id: int, *, fresh: bool) -> None:
        audience = self._audiences.get(job_id)
        if fresh or audience is None:
            read = await asyncio.to_thread(self._read, job_id)
            if read is None:  # deleted meanwhile
                self._forget(job_id)
                return
            if audience is None:
                audience = self._audiences[job_id] = _Audience(*read)
            else:
                audience.sites, audience.state, audience.message = read
        run = self._store.view(job_id)
        for site in audience.sites:
            link = self._connections.link(site)
            if link is None:
                continue
            update = JobUpdate(
                job_id=str(job_id),
                state=audience.state,
                message=for_viewer(audience.message, state=audience.state, site_id=site),
                progress=run.progress,
                step=run.step,
            )
            try:
                await link.send_control(update)
            except Exception as error:  # noqa: BLE001 - gone meanwhile: it reads the state on return
                log.info("job %s: could not tell site %s its state: %r", job_id, site, error)
        if audience.state in FINAL:
            self._forget(job_id)

    def _read(self, job_id: int) -> tuple[list[str], JobState, str] | None:
        with self._database.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return None
            if job.parent_id is not None:  # a comparison's method: its sites follow the parent
                return [], JobState(job.state), job.message
            sites = [p.user.site_id or "" for p in job.participants]
            return sites, JobState(job.state), job.message
