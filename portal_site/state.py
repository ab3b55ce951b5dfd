"""What the running site portal holds: settings, its small store, its jobs and the worker."""

from __future__ import annotations

from dataclasses import dataclass

from portal_site.jobs import LocalJobs
from portal_site.settings import SiteSettings
from portal_site.store import Store
from portal_site.worker import Worker


@dataclass
class SiteState:
    settings: SiteSettings
    store: Store
    jobs: LocalJobs
    worker: Worker

    @classmethod
    def create(cls, settings: SiteSettings) -> SiteState:
        store = Store(settings.prepare().database)
        jobs = LocalJobs(approved=store.approved, min_rows_floor=settings.min_rows)
        return cls(
            settings=settings,
            store=store,
            jobs=jobs,
            worker=Worker(settings=settings, store=store, jobs=jobs),
        )
