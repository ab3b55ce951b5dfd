"""What the running central portal holds: settings, database, security, mail, and the parts
that run jobs (the store, the orchestrator, the broker, the event logs, the site notifier),
each given its collaborators here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from federation.job import JobEvent
from federation.registry import Registry
from portal_central.accounts.limits import RateLimit
from portal_central.accounts.mail import Mailer
from portal_central.accounts.throttle import Throttle
from portal_central.algorithms_store import load_registry, sync_builtins
from portal_central.db import Database
from portal_central.jobs.eventlog import JobLogs
from portal_central.jobs.orchestrator import Orchestrator
from portal_central.jobs.store import RunStore
from portal_central.security import Passwords, Tokens
from portal_central.settings import CentralSettings
from portal_central.sites.connections import Connections
from portal_central.sites.notifier import SiteNotifier
from portal_common.broker import Broker
from portal_common.tasks import Tasks


@dataclass
class CentralState:
    settings: CentralSettings
    database: Database
    passwords: Passwords
    tokens: Tokens
    mailer: Mailer
    registry: Registry
    connections: Connections
    broker: Broker[JobEvent | str]
    """Every job's events (topic: the job's id) and sites coming and going."""
    tasks: Tasks
    store: RunStore
    logs: JobLogs
    orchestrator: Orchestrator
    notifier: SiteNotifier
    throttle: Throttle
    """Waits after failed sign-ins (per username and per client address), in the database."""
    sign_in_limit: RateLimit
    register_limit: RateLimit
    reset_limit: RateLimit
    """"Forgot password" requests per client address."""
    started_at: float = field(default_factory=time.time)
    """When this central started (seconds since the epoch): results of jobs that ended
    before it went with the restart."""

    @classmethod
    def create(cls, settings: CentralSettings) -> CentralState:
        database = Database(settings.database)
        broker: Broker[JobEvent | str] = Broker()

        def show_failure(job: int | None, what: str, error: BaseException) -> None:
            if job is not None:
                message = f"{what} failed at central: {error}"[:500]
                broker.publish(job, JobEvent(kind="warning", message=message))

        tasks = Tasks(on_failure=show_failure)
        connections = Connections(grace_seconds=settings.site_grace_seconds, broker=broker)
        store = RunStore(
            result_seconds=settings.result_expiry_minutes * 60,
            grace_seconds=settings.download_grace_seconds,
        )
        logs = JobLogs(database=database, tasks=tasks)
        notifier = SiteNotifier(
            database=database, connections=connections, store=store, tasks=tasks
        )
        shipped = Registry.with_builtins()
        with database.session() as session:
            sync_builtins(session=session, shipped=shipped)
        with database.session() as session:
            registry = load_registry(session=session, shipped=shipped)
        orchestrator = Orchestrator(
            database=database,
            registry=registry,
            connections=connections,
            store=store,
            logs=logs,
            broker=broker,
            tasks=tasks,
            request_deadline_seconds=settings.request_deadline_seconds,
        )
        # Listeners in this order: the store takes progress and the log the lines before the
        # pages and the sites are told.
        for listener in (store.on_event, logs.on_event, orchestrator.on_event, notifier.on_event):
            broker.listen(listener)
        return cls(
            settings=settings,
            database=database,
            passwords=Passwords(
                time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
            ),
            tokens=Tokens(settings.secret_key()),
            mailer=Mailer(settings, database),
            registry=registry,
            connections=connections,
            broker=broker,
            tasks=tasks,
            store=store,
            logs=logs,
            orchestrator=orchestrator,
            notifier=notifier,
            throttle=Throttle(settings),
            sign_in_limit=RateLimit(
                "sign-in requests", capacity=settings.token_requests_per_minute, window=60
            ),
            register_limit=RateLimit(
                "registrations", capacity=settings.register_requests_per_hour, window=3600
            ),
            reset_limit=RateLimit(
                "password reset requests", capacity=settings.reset_requests_per_hour, window=3600
            ),
        )
