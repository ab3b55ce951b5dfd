"""The event log as people read it: newest first, a cycle's fits on one line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from federation.job import JobEvent
from portal_common.eventlog import grouped
from portal_site.job_info import parse_job
from portal_site.jobs import LocalJobs
from portal_site.store import Store
from tests.test_site_trust import job_info


def _fit(cycle: int, target: str, at: float, site: str | None = None) -> JobEvent:
    return JobEvent(
        kind="fit", message=f"cycle {cycle}: fitted '{target}' on 8 rows", at=at, site=site
    )


def test_a_cycles_fits_share_a_line_and_the_newest_comes_first() -> None:
    events = [
        JobEvent(kind="log", message="opened", at=1.0),
        _fit(1, "bmi", 2.0),
        _fit(1, "smoker", 3.0),
        _fit(2, "bmi", 4.0),
        _fit(2, "smoker", 5.0),
        JobEvent(kind="log", message="imputed dataset 1 of 2 after cycle 2", at=6.0),
        _fit(3, "bmi", 7.0),
    ]
    lines = grouped(events)
    assert [line.message for line in lines] == [
        "cycle 3: fitted 'bmi' on 8 rows",
        "imputed dataset 1 of 2 after cycle 2",
        "cycle 2: fitted 'bmi' on 8 rows, 'smoker' on 8 rows",
        "cycle 1: fitted 'bmi' on 8 rows, 'smoker' on 8 rows",
        "opened",
    ]
    assert lines[2].at == 5.0
    assert [e.message for e in events][1] == "cycle 1: fitted 'bmi' on 8 rows"  # not modified


def test_fits_of_other_sites_or_kinds_stay_apart() -> None:
    events = [
        _fit(1, "bmi", 1.0, site="north"),
        _fit(1, "smoker", 2.0, site="south"),
        JobEvent(kind="warning", message="cycle 1: fitted 'x' on 8 rows", at=3.0),
    ]
    assert len(grouped(events)) == 3


def test_a_sites_event_log_survives_a_restart_of_its_portal(tmp_path: Path) -> None:
    """The site portal's jobs keep their logs in its database: a new store and a new set of
    jobs on the same file (a restarted portal) show the same lines; progress is not logged."""
    url = f"sqlite:///{tmp_path / 'site.db'}"
    info = job_info(job_id=7, state="running")

    def open_site() -> tuple[Store, LocalJobs]:
        store = Store(url)
        jobs = LocalJobs(
            approved=store.approved, keep_event=store.record_event, kept_events=store.events
        )
        return store, jobs

    store, jobs = open_site()
    job = jobs._merge(parse_job(info))
    jobs.publish(job, JobEvent(kind="log", message="data loaded: north.csv, 120 rows", at=1.0))
    jobs.publish(job, JobEvent(kind="progress", message="cycle 1", fraction=0.5, at=2.0))
    jobs.publish(job, JobEvent(kind="log", message="started: this site is ready", at=3.0))
    store.dispose()

    store, jobs = open_site()
    listed = {"7": info, "8": job_info(job_id=8)}

    async def central(path: str) -> Any:
        return dict(listed[path.rsplit("/", 1)[-1]])

    jobs.fetch_json = central
    try:
        again = asyncio.run(jobs.load("7"))  # the stored log is read in a worker thread
        assert [(e.at, e.kind, e.message) for e in again.events] == [
            (1.0, "log", "data loaded: north.csv, 120 rows"),
            (3.0, "log", "started: this site is ready"),
        ]
        assert asyncio.run(jobs.load("8")).events == []
    finally:
        store.dispose()
