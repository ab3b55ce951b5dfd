"""What the running site portal holds: settings, its small store, its jobs and the worker."""

from __future__ import annotations

from dataclasses import dataclass

from portal_site.jobs import LocalJobs
from portal_site.local_auth import LocalAuth
from portal_site.settings import SiteSettings
from portal_site.store import Store
from portal_site.worker import Worker


@dataclass
class SiteState:
    settings: SiteSettings
    store: Store
    jobs: LocalJobs
    worker: Worker
    auth: LocalAuth

    @classmethod
    def create(cls, settings: SiteSettings) -> SiteState:
        store = Store(settings.prepare().database)
        jobs = LocalJobs(
            approved=store.approved,
            policy=lambda: store.policy(settings.min_rows),
            keep_event=store.record_event,
            kept_events=store.events,
            sandbox_memory=settings.sandbox_memory_bytes,
        )
        auth = LocalAuth(
            store,
            port=settings.port,
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
        )
        if settings.local_password is not None and not auth.has_password():
            auth.choose(settings.local_password.get_secret_value())
        return cls(
            settings=settings,
            store=store,
            jobs=jobs,
            worker=Worker(settings=settings, store=store, jobs=jobs),
            auth=auth,
        )
