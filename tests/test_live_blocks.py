"""One render path: a job page's live events (server-sent) are the very blocks of the page.

Each test renders the page and reads the real event stream of the real app (TestClient) from
the same state, and checks that every event's HTML is exactly its block in the page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from federation.job import JobEvent
from portal_central.jobs.status import JobState
from portal_central.models import Job
from portal_site.state import SiteState
from tests.central_fixtures import portal_state
from tests.helpers import sse_events
from tests.site_fixtures import site_client, site_settings
from tests.test_central_wizard import _admin, _api_job
from tests.test_site_trust import GOOD_CSV, Central, job_info


def _wait_for_subscriber(subscribers: Callable[[], int]) -> None:
    deadline = time.monotonic() + 5
    while not subscribers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert subscribers(), "the page's stream subscribed to the job's events"


@pytest.mark.slow
def test_centrals_live_events_are_the_blocks_of_its_job_page(central: TestClient) -> None:
    job_id = _api_job(central)
    _admin(central)
    state = portal_state(central)
    with state.database.session() as session:  # as if its sites had started it
        job = session.get(Job, job_id)
        assert job is not None
        job.state = JobState.RUNNING
    state.store.open(job_id)
    broker = state.broker
    with central.stream("GET", f"/jobs/{job_id}/events") as response:
        _wait_for_subscriber(lambda: broker.subscribers(job_id))
        broker.publish(job_id, JobEvent(kind="progress", message="cycle 2 of 5", fraction=0.4))
        broker.publish(job_id, JobEvent(kind="log", message="cycle 2: fitted 'bmi'", site="north"))
        broker.publish(job_id, "state")
        events = dict(sse_events(response.iter_lines(), 3))
    page = central.get(f"/jobs/{job_id}").text
    assert set(events) == {"progress", "log", "status"}
    assert "40% cycle 2 of 5" in events["progress"]
    assert "cycle 2: fitted" in events["log"]
    assert events["progress"] in events["status"], "the bar is part of the status block"
    for name, html in events.items():
        assert html in page, f"the {name} event differs from its block in the page"


@pytest.mark.slow
def test_a_sites_live_events_are_the_blocks_of_its_job_page(tmp_path: Path) -> None:
    central = Central()  # central's side of the network, as in tests/test_site_trust.py
    central.jobs = [job_info()]
    with site_client(site_settings(tmp_path / "site")) as client:
        state: SiteState = client.app.state.site  # type: ignore[attr-defined]
        jobs = state.jobs
        jobs.fetch_json, jobs.fetch_text, jobs.send = (
            central.fetch_json,
            central.fetch_text,
            central.send,
        )
        job = asyncio.run(jobs.load("1"))
        with client.stream("GET", "/jobs/1/events") as response:
            _wait_for_subscriber(lambda: jobs.broker.subscribers("1"))
            asyncio.run(jobs.upload(job, GOOD_CSV, "north.csv"))  # a log line, then a state
            events = dict(sse_events(response.iter_lines(), 2))
        page = client.get("/jobs/1").text
    assert set(events) == {"log", "status"}
    assert "data loaded: north.csv, 12 rows" in events["log"]
    assert "north.csv: 12 rows, held in memory only" in events["status"]
    for name, html in events.items():
        assert html in page, f"the {name} event differs from its block in the page"
