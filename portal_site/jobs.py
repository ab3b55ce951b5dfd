"""The site's jobs: what central says of them, and what the site holds in memory for them.

For each job the site keeps, in memory only: the uploaded CSV (checked against the job), the
verified remote half of the algorithm, and the runner that answers central. All of it is
dropped when the job ends, is cancelled, or the site portal stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

from federation import rows, secure
from federation.data import Table, read_csv, read_csv_chunks
from federation.errors import AlgorithmInvalid, InputError
from federation.job import JobEvent, JobSpec, target_to_wire
from federation.policy import Policy
from federation.protocol import (
    Cancel,
    ControlMessage,
    JobUpdate,
    Ready,
    Welcome,
)
from federation.registry import Algorithm, Registry, file_names, package_digest, read_algorithm
from federation.roles import ROLE_FIELDS, check_upload, spec_of_definition, spec_text_columns
from federation.site import SiteRunner
from portal_common.broker import Broker
from portal_common.states import FINAL, JobState
from portal_site.central import CentralError
from portal_site.job_info import JobInfo, MalformedJob, Method, parse_job

log = logging.getLogger(__name__)
_HISTORY = 200


class SiteError(Exception):
    """Something the site's user must fix; the message says what."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass
class LocalJob:
    job_id: str
    info: JobInfo
    """What central says of the job (replaced whenever central says more)."""
    table: Table | None = None
    algorithm: Algorithm | None = None
    runner: SiteRunner | None = None
    runners: dict[str, SiteRunner] = field(default_factory=dict)
    """A comparison's methods at this site, by their child job's id: all on this job's data."""
    started: bool = False
    progress: float = 0.0
    step: str = ""
    rows_used: int = 0
    kept_fingerprints: dict[str, str] = field(default_factory=dict)
    site_id: str = ""
    """This site, as the job's runners were made for it (its own key on the job's page)."""
    events: list[JobEvent] = field(default_factory=list)

    @property
    def state(self) -> JobState:
        return self.info.state

    @property
    def fingerprints(self) -> dict[str, str]:
        """Secure aggregation: the sites' public keys as central relayed them (this site's own
        included), kept after the job ends so that its user can compare them with central's."""
        if self.runner is not None and self.runner.fingerprints:
            self.kept_fingerprints = self.runner.fingerprints
        return self.kept_fingerprints

    @property
    def digest(self) -> str:
        return self.info.digest

    @property
    def methods(self) -> tuple[Method, ...]:
        """A comparison's methods (child jobs), as central lists them; empty for other jobs."""
        return self.info.methods


@dataclass(frozen=True)
class RemoteCode:
    """What a site's approval covers, as downloaded and checked against the digest: the remote
    half (the only code that runs here) and params.json (its parameters and declared replies).
    Nothing of it has run."""

    name: str
    version: str
    digest: str
    source: str
    params: str
    builtin: bool
    approved: bool


Send = Callable[[ControlMessage], Coroutine[Any, Any, None]]
Fetch = Callable[[str], Coroutine[Any, Any, Any]]


class LocalJobs:
    """Every job this site knows of. Talks to central through the worker's callables."""

    def __init__(
        self,
        *,
        approved: Callable[[str], bool],
        policy: Callable[[], Policy] = Policy,
        keep_event: Callable[[str, JobEvent], None] | None = None,
        kept_events: Callable[[str], list[JobEvent]] | None = None,
        broker: Broker[JobEvent | str] | None = None,
        sandbox_memory: int | None = None,
    ) -> None:
        """``sandbox_memory``: the most bytes of data an uploaded remote half's sandbox may
        hold (None: no limit of its own)."""
        self._jobs: dict[str, LocalJob] = {}
        self._sandbox_memory = sandbox_memory
        self.broker: Broker[JobEvent | str] = broker or Broker()
        """The site's events: a job's under its id, the connection's under ``CONNECTION``."""
        self.broker.listen(self._record)
        self._keep_event = keep_event
        self._kept_events = kept_events
        """Where the jobs' event logs are kept (the site's database), to outlive a restart."""
        self._kept: dict[str, list[JobEvent]] = {}
        """Stored logs read for jobs about to be merged in."""
        self._approved = approved
        self._policy = policy
        """The site's disclosure policy, as its user set it (read afresh for every job)."""
        self._builtins = {a.digest: a for a in Registry.with_builtins().all()}
        self._checked: dict[str, Algorithm] = {}
        """Algorithms downloaded from central and checked against their digest, by digest."""
        self.site_id = ""
        self.send: Send | None = None
        self.fetch_json: Fetch | None = None
        self.fetch_text: Fetch | None = None

    # ------------------------------------------------------------ what central says

    async def refresh(self) -> list[LocalJob]:
        """The jobs this site is in, fresh from central."""
        listing = await self._fetch_json("/api/jobs")
        if not isinstance(listing, list):
            raise SiteError("central sent a malformed job listing: not a list", status=502)
        infos = [_parsed(raw) for raw in listing]
        for info in infos:
            await self._read_kept_events(str(info.id))
            self._merge(info)
        return [self._jobs[str(i.id)] for i in sorted(infos, key=lambda i: i.id, reverse=True)]

    async def load(self, job_id: str) -> LocalJob:
        info = _parsed(await self._fetch_json(f"/api/jobs/{job_id}"))
        await self._read_kept_events(str(info.id))
        return self._merge(info)

    def known(self) -> list[LocalJob]:
        return sorted(self._jobs.values(), key=lambda j: int(j.job_id), reverse=True)

    def get(self, job_id: str) -> LocalJob | None:
        return self._jobs.get(job_id)

    def owner(self, job_id: str) -> LocalJob | None:
        """The job whose data answers for ``job_id``: itself, or the comparison it is part of."""
        job = self._jobs.get(job_id)
        if job is None:
            job = next((j for j in self._jobs.values() if job_id in j.runners), None)
        return job

    async def _read_kept_events(self, job_id: str) -> None:
        """A job new to this portal: its stored event log, read in a worker thread."""
        if job_id not in self._jobs and self._kept_events is not None:
            self._kept[job_id] = await asyncio.to_thread(self._kept_events, job_id)

    def _merge(self, info: JobInfo) -> LocalJob:
        job_id = str(info.id)
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = LocalJob(job_id=job_id, info=info)
            job.events = self._kept.pop(job_id, [])
        else:
            job.info = info
        if job.state in FINAL:
            self._drop(job, f"the job is {job.state}")
        return job

    async def on_control(self, message: ControlMessage) -> None:
        if isinstance(message, Welcome):
            self.site_id = message.site_id
            for local in self._jobs.values():
                if local.started and local.job_id not in message.ready and local.state not in FINAL:
                    await self._send(Ready(job_id=local.job_id))
        elif isinstance(message, JobUpdate):
            job = self._jobs.get(message.job_id)
            if job is None:
                return
            job.info = job.info.model_copy(
                update={"state": message.state, "message": message.message}
            )
            if message.progress is not None:
                job.progress = message.progress
                job.step = message.step
            if message.state in FINAL:
                self._drop(job, f"the job is {message.state}")
            self.publish(job, "state")

    # ------------------------------------------------------------ the user's actions

    async def upload(
        self, job: LocalJob, content: bytes | bytearray | AsyncIterable[bytes], filename: str
    ) -> Table:
        """Read the CSV (its bytes, or its chunks as they arrive: parsed as they come, never
        held whole), check it against the job (columns, targets, rows) and hold it in memory.
        The parsing runs in worker threads: the event loop carries the socket to central."""
        self._may_change_data(job)
        label = filename or "uploaded file"
        try:
            text = spec_text_columns(self._spec(job))
            if isinstance(content, bytes | bytearray):
                table = await asyncio.to_thread(read_csv, content, label=label, text=text)
            else:
                table = await read_csv_chunks(content, label=label, text=text)
        except InputError as error:
            raise SiteError(str(error), status=422, field="file") from None
        await asyncio.to_thread(self._check, job, table)
        self._may_change_data(job)  # started or ended while the file was read
        job.table = table
        self.publish(
            job, JobEvent(kind="log", message=f"data loaded: {table.label}, {table.rows} rows")
        )
        self.publish(job, "state")
        return table

    @staticmethod
    def _may_change_data(job: LocalJob) -> None:
        if job.started:
            raise SiteError("the job is started; cancel it to change the data", status=409)
        if job.state in FINAL:
            raise SiteError(f"the job is {job.state}", status=409)

    def _check(self, job: LocalJob, table: Table) -> None:
        try:
            check_upload(table, self._spec(job))
        except InputError as error:
            raise SiteError(str(error), status=422, field="file") from None
        minimum = max(int(job.info.parameters.get("min_rows") or 0), self.policy.min_rows)
        if table.rows < minimum:
            raise SiteError(
                f"{table.label}: {table.rows} rows, fewer than this job's minimum of {minimum} "
                "(min_rows)",
                status=422,
                field="file",
            )

    def forecast(self, job: LocalJob) -> rows.RowsForecast | None:
        """For the site's own page: the uploaded table's missing cells per column and the rows
        the job will leave out and why (for a built-in algorithm, whose rules are known here);
        None before an upload. Computed here and shown here only: nothing of it is sent."""
        if job.table is None:
            return None
        builtin = self._builtins.get(job.digest)
        return rows.forecast(
            job.table,
            [t.name for t in job.info.targets],
            chained=builtin.capabilities.multiple_targets if builtin is not None else None,
        )

    async def remote_code(self, job: LocalJob) -> RemoteCode:
        """The job's remote half: built in, or downloaded from central and checked by digest."""
        job.algorithm = await self._verified(job.info)
        return self._code(job.algorithm)

    async def remote_codes(self, job: LocalJob) -> list[RemoteCode]:
        """Every remote half that runs here for the job: its own, or a comparison's methods
        that this site takes part in."""
        if not job.methods:
            return [await self.remote_code(job)]
        return [self._code(await self._verified(m)) for m in self._my_methods(job)]

    @property
    def policy(self) -> Policy:
        return self._policy()

    def _code(self, algorithm: Algorithm) -> RemoteCode:
        _, remote, params = file_names(algorithm.name)
        return RemoteCode(
            name=algorithm.name,
            version=algorithm.version,
            digest=algorithm.digest,
            source=algorithm.files[remote].decode(),
            params=algorithm.files[params].decode(),
            builtin=algorithm.digest in self._builtins,
            approved=self._trusted(algorithm),
        )

    def _trusted(self, algorithm: Algorithm) -> bool:
        return algorithm.digest in self._builtins or self._approved(algorithm.digest)

    def _my_methods(self, job: LocalJob) -> list[Method]:
        return [m for m in job.methods if self.site_id in m.participants]

    async def start(self, job: LocalJob) -> None:
        """Mark the site ready: data loaded, remote half trusted; central starts when all are."""
        if job.state in FINAL:
            raise SiteError(f"the job is {job.state}", status=409)
        if job.table is None:
            raise SiteError("upload this site's CSV first", status=409, field="file")
        runners: dict[str, SiteRunner] = {}
        methods: list[JobInfo] | list[Method] = (job.methods and self._my_methods(job)) or [
            job.info
        ]
        for method in methods:
            algorithm = await self._verified(method)
            if not self._trusted(algorithm):
                raise SiteError(
                    f"approve the remote half of {algorithm.name} {algorithm.version} "
                    f"(digest {algorithm.digest[:12]}…) before starting",
                    status=409,
                )
            runners[str(method.id)] = self._runner(job, algorithm, method)
        if not job.methods:
            job.algorithm = await self._verified(job.info)
            job.runner = job.runner or runners[job.job_id]
        else:
            job.runners = runners
        job.started = True  # before Ready leaves: central may ask at once
        try:
            await self._send(Ready(job_id=job.job_id))
        except Exception:
            job.started = False  # central never heard it: not ready, data still replaceable
            _close(job)
            raise
        self.publish(job, JobEvent(kind="log", message="started: this site is ready"))
        self.publish(job, "state")

    def _runner(self, job: LocalJob, algorithm: Algorithm, method: JobInfo | Method) -> SiteRunner:
        """Only for an approved (or built-in) digest: a built-in runs in this process, any other
        remote half in a sandbox process started when the job opens. Central must then open
        the job the user saw: ``method`` (the job, or a comparison's method) as listed now."""
        assert job.table is not None and self._trusted(algorithm)
        job.site_id = self.site_id
        runner = SiteRunner(
            site=self.site_id,
            data=job.table,
            algorithm=algorithm,
            on_event=lambda event: self.publish(job, event),
            policy=self.policy,
            sandbox_memory=self._sandbox_memory,
        )
        spec = self._spec(job)
        runner.expected = {
            "algorithm": algorithm.name,
            "version": algorithm.version,
            "digest": algorithm.digest,
            **{k: v for k, v in spec.to_wire().items() if k in ("columns", *ROLE_FIELDS)},
            "targets": [target_to_wire(t) for t in job.info.targets],
            "sites": list(method.site_ids),
        }
        if not job.methods:  # a comparison's methods take the parameters that fit each
            runner.expected["params"] = dict(job.info.parameters)
        else:  # ... but every one of them masks when the comparison says so
            runner.secure_required = secure.enabled(job.info.parameters)
        return runner

    @staticmethod
    def _spec(job: LocalJob) -> JobSpec:
        """The job's columns, targets and roles as central listed them (what the user saw)."""
        return spec_of_definition(job.info.columns, job.info.targets, job.info.roles.to_wire())

    async def cancel(self, job: LocalJob) -> None:
        """Cancel the job everywhere (central stops it at every site) and drop the data here."""
        if job.state in FINAL:
            raise SiteError(f"the job is already {job.state}", status=409)
        await self._send(Cancel(job_id=job.job_id, reason="cancelled at the site"))
        self._drop(job, "cancelled here")
        self.publish(job, "state")

    async def _verified(self, info: JobInfo | Method) -> Algorithm:
        """The algorithm a job (or a comparison's method) names: built in, or its files from
        central checked against the pinned digest."""
        digest = info.digest
        if digest in self._builtins:
            return self._builtins[digest]
        if digest in self._checked:
            return self._checked[digest]
        name, version = info.algorithm, info.version
        files = {
            file: (
                await self._fetch_text(f"/api/algorithms/{name}/{version}/files/{file}")
            ).encode()
            for file in file_names(name)
        }
        found = package_digest(files)
        if found != digest:
            raise SiteError(
                f"the files central sent for {name} {version} have digest {found[:16]}…, not the "
                f"job's pinned {digest[:16]}…: refused (they may have been tampered with)",
                status=409,
            )
        try:
            algorithm = read_algorithm(name, files)  # from the bytes: none of it runs here
        except AlgorithmInvalid as error:
            raise SiteError(f"the algorithm cannot be used here: {error}", status=409) from None
        self._checked[digest] = algorithm
        return algorithm

    # ------------------------------------------------------------ answering central

    async def runner(self, job_id: str) -> SiteRunner | None:
        """The runner that answers central for a job, or None (:meth:`answering` says why)."""
        try:
            return await self.answering(job_id)
        except SiteError:
            return None

    async def answering(self, job_id: str) -> SiteRunner:
        """The runner that answers central for a job, or for a method of a started comparison
        (one retried since Start is looked up at central and runs on the comparison's data);
        ``SiteError`` gives the real reason there is none, for central to show."""
        no_data = (
            f"this site holds no data for job {job_id}: it was not started here, or the site "
            "portal restarted and its data went with it"
        )
        job = self._jobs.get(job_id)
        if job is not None:
            if job.runner is None:
                raise SiteError(no_data, status=409)
            return job.runner
        for parent in self._jobs.values():
            if job_id in parent.runners:
                return parent.runners[job_id]
        try:
            info = _parsed(await self._fetch_json(f"/api/jobs/{job_id}"))
        except SiteError as error:
            raise SiteError(
                f"this site could not look up job {job_id} at central: {error.message}",
                status=502,
            ) from None
        comparison = self._jobs.get(str(info.parent))
        if comparison is None or not comparison.started or comparison.table is None:
            raise SiteError(no_data, status=409)
        algorithm = await self._verified(info)
        started = {r.algorithm.digest for r in comparison.runners.values()}
        if not self._trusted(algorithm) or algorithm.digest not in started:
            # A retry runs a method this site started, never another.
            raise SiteError(
                f"job {job_id} runs {algorithm.name} {algorithm.version}, which this site did "
                "not start for the comparison: refused",
                status=409,
            )
        comparison.runners[job_id] = self._runner(comparison, algorithm, info)
        return comparison.runners[job_id]

    def _drop(self, job: LocalJob, why: str) -> None:
        had = job.table is not None
        _close(job)
        job.table = None
        job.started = False
        if had:
            self.publish(
                job, JobEvent(kind="log", message=f"{why}: the data was dropped from memory")
            )

    def drop_all(self) -> None:
        for job in self._jobs.values():
            _close(job)
            job.table = None
            job.started = False

    # ------------------------------------------------------------ events

    def publish(self, job: LocalJob, event: JobEvent | str) -> None:
        """Record and fan out an event ("state": the job's state changed); safe from the
        runner's worker threads (the broker hops to the loop)."""
        self.broker.publish(job.job_id, event)

    def _record(self, topic: Hashable, event: JobEvent | str) -> None:
        """A broker listener: a job's event joins its log (kept in the site's database)."""
        job = self._jobs.get(topic) if isinstance(topic, str) else None
        if job is None or not isinstance(event, JobEvent):
            return
        job.events.append(event)
        del job.events[:-_HISTORY]
        if self._keep_event is not None and event.kind != "progress":
            self._keep_event(job.job_id, event)

    def subscribe(
        self, job: LocalJob
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[JobEvent | str]]:
        return self.broker.subscribe(job.job_id)

    # ------------------------------------------------------------ plumbing

    async def _send(self, message: ControlMessage) -> None:
        if self.send is None:
            raise SiteError("not connected to central: check Settings", status=409)
        await self.send(message)

    async def _fetch_json(self, path: str) -> Any:
        return await self._fetch(self.fetch_json, path)

    async def _fetch_text(self, path: str) -> str:
        text: str = await self._fetch(self.fetch_text, path)
        return text

    async def _fetch(self, fetch: Fetch | None, path: str) -> Any:
        if fetch is None:
            raise SiteError("not signed in to central: check Settings", status=409)
        try:
            return await fetch(path)
        except CentralError as error:
            status = error.status if error.status in (401, 403, 404) else 502
            raise SiteError(str(error), status=status) from None


def _parsed(raw: object) -> JobInfo:
    """A job of central's, read once where it arrives (see portal_site.job_info)."""
    try:
        return parse_job(raw)
    except MalformedJob as error:
        log.warning("%s", error)
        raise SiteError(str(error), status=502) from None


def _close(job: LocalJob) -> None:
    """Stop whatever answers for the job here (a sandbox process dies with its data)."""
    job.fingerprints  # noqa: B018 - keeps the key fingerprints for the job's page
    for runner in (job.runner, *job.runners.values()):
        if runner is not None:
            runner.close()
    job.runner = None
    job.runners = {}
