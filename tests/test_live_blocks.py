"""One render path: a job page's live events (server-sent) are the very blocks of the page.

Each test renders the page and reads the real event stream of the real app (TestClient) from
the same state, and checks that every event's HTML is exactly its block in the page.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from federation.job import JobEvent
from portal_central.jobs.status import JobState
from portal_central.models import Job
from portal_site.state import SiteState
from portal_site.worker import CONNECTION
from tests.central_fixtures import admin_auth, portal_state
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
        events = dict(sse_events(response.iter_lines(), 6))  # the blocks as they were, then these
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
            events = dict(sse_events(response.iter_lines(), 4))  # after the blocks as they were
        page = client.get("/jobs/1").text
    assert set(events) == {"log", "status"}
    assert "data loaded: north.csv, 12 rows" in events["log"]
    assert "north.csv: 12 rows, held in memory only" in events["status"]
    for name, html in events.items():
        assert html in page, f"the {name} event differs from its block in the page"


def _first_event(response: object, wake: Callable[[], None]) -> tuple[str, str]:
    """The stream's first event, which must come by itself: should nothing come within 5 s,
    ``wake`` is called (so that the test ends) and the test fails."""
    woken = threading.Event()

    def wake_up() -> None:
        woken.set()
        wake()

    watchdog = threading.Timer(5.0, wake_up)
    watchdog.start()
    try:
        (first,) = sse_events(response.iter_lines(), 1)  # type: ignore[attr-defined]
    finally:
        watchdog.cancel()
    assert not woken.is_set(), "the stream sent nothing until something was published"
    return first


def _stream_of(page: str) -> str:
    """The address of a page's live stream, as its browser opens it (``sse-connect``)."""
    found = re.search(r'sse-connect="([^"]+)"', page)
    assert found is not None, "the page has a live stream"
    return unescape(found.group(1))


def test_a_job_page_opened_before_a_change_is_brought_up_to_date(central: TestClient) -> None:
    """The job is cancelled after its page was rendered and before the page's stream opened
    (the browser loads htmx first): nothing is published to the stream then, and the page
    would say "created" until the next event; the stream starts with the blocks as they are."""
    job_id = _api_job(central)
    _admin(central)
    page = central.get(f"/jobs/{job_id}").text
    assert "created" in page
    assert central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central)).is_success
    broker = portal_state(central).broker
    with central.stream("GET", _stream_of(page)) as response:
        name, block = _first_event(
            response, lambda: broker.publish(job_id, JobEvent(kind="progress", message="wake"))
        )
    assert name == "status"
    assert f'id="job-{job_id}-status"' in block and "cancelled" in block


def test_a_job_page_whose_job_did_not_change_gets_only_the_changes(central: TestClient) -> None:
    """Nothing happened to the job between its page and the page's stream (another job's news
    does not count): the stream sends no block again, since a swap right after the page loads
    could take a click meant for the block it replaces."""
    job_id = _api_job(central)
    _admin(central)
    page = central.get(f"/jobs/{job_id}").text
    broker = portal_state(central).broker
    broker.publish(job_id + 1, JobEvent(kind="log", message="another job's news"))
    with central.stream("GET", _stream_of(page)) as response:
        _wait_for_subscriber(lambda: broker.subscribers(job_id))
        broker.publish(job_id, JobEvent(kind="log", message="the first news", site="north"))
        name, block = _first_event(response, lambda: None)
    assert name == "log" and "the first news" in block


def test_a_sites_connection_badge_opened_before_a_change_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    """The worker connects after a page was rendered and before its stream opened: the badge
    stream starts with the connection as it is, not as the page was rendered; with no change
    in between it waits for the next one."""
    with site_client(site_settings(tmp_path / "site")) as client:
        state: SiteState = client.app.state.site  # type: ignore[attr-defined]
        worker, broker = state.worker, state.jobs.broker
        assert worker.status != "connected"
        page = client.get("/settings").text
        assert worker.status in page
        worker._set("connected", "https://central.example")  # nobody listens yet
        with client.stream("GET", _stream_of(page)) as response:
            name, badge = _first_event(response, lambda: broker.publish(CONNECTION, "wake"))
        assert name == "status"
        assert 'id="connection"' in badge and "connection-connected" in badge

        page = client.get("/settings").text
        with client.stream("GET", _stream_of(page)) as response:
            _wait_for_subscriber(lambda: broker.subscribers(CONNECTION))
            worker._set("reconnecting", "central went away")
            name, badge = _first_event(response, lambda: None)
    assert name == "status" and "connection-reconnecting" in badge
