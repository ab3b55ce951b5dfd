"""Jobs a user can manage: a new job like this one, run again, delete, cancel with a reason;
through the JSON API and the pages, each refusal with its message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from federation.demo import COLUMNS
from portal_central.app import create_app
from portal_central.models import JobEventRecord
from portal_central.settings import CentralSettings
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    chained_algorithm,
    create_admin,
    edited_csv,
    portal_state,
    token,
    wait_for_state,
)
from tests.processes import wait_for

TARGETS = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]
QUICK = {"iteration_before_first_imputation": 2, "iteration_between_imputations": 1}


def _create(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "demo imputation",
        "description": "bmi and smoker",
        "algorithm": chained_algorithm(overrides),
        "columns": list(COLUMNS),
        "targets": TARGETS,
        "imputations": 2,
        "parameters": dict(QUICK),
        "seed": 11,
        **overrides,
    }
    response = client.post("/api/jobs", json=body, headers=admin_auth(client))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def _upload(client: TestClient, job_id: int, path: Path) -> None:
    response = client.post(
        f"/api/jobs/{job_id}/data",
        files={"file": ("central.csv", path.read_bytes(), "text/csv")},
        headers=admin_auth(client),
    )
    assert response.status_code == 200, response.text


def _failed(client: TestClient, demo_files: dict[str, Path]) -> dict[str, Any]:
    """IMI fails on data that passes every check: with ridge 0, two equal predictor columns
    make the fit singular (central's checks cannot see that before the fit)."""
    job = _create(client, algorithm="IMI", targets=[TARGETS[0]], parameters={"ridge": 0})
    source = demo_files["central"]
    collinear = source.with_name("collinear-central.csv")
    edited_csv(source, collinear, complete=["smoker"], same_as={"cholesterol": "sbp"})
    _upload(client, job["id"], collinear)
    done = wait_for_state(client, job["id"], admin_auth(client))
    assert done["state"] == "failed", done
    return done


def _completed(client: TestClient, demo_files: dict[str, Path]) -> dict[str, Any]:
    job = _create(client)
    _upload(client, job["id"], demo_files["central"])
    done = wait_for_state(client, job["id"], admin_auth(client))
    assert done["state"] == "completed", done
    return done


# ------------------------------------------------------------------ run again


def test_a_failed_job_runs_again_as_a_new_job_with_its_definition(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    old = _failed(central, demo_files)
    response = central.post(f"/api/jobs/{old['id']}/run-again", headers=admin_auth(central))
    assert response.status_code == 201, response.text
    again = response.json()
    assert again["id"] != old["id"]
    assert again["state"] == "created"
    assert again["message"] == f"run again of job {old['id']}"
    for key in ("name", "algorithm", "digest", "columns", "targets", "parameters", "seed"):
        assert again[key] == old[key], key
    # The old job stays as the record of what happened.
    assert central.get(f"/api/jobs/{old['id']}", headers=admin_auth(central)).json()["state"] == (
        "failed"
    )


def test_a_cancelled_job_runs_again_with_its_sites(central: TestClient) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    cancelled = central.post(f"/api/jobs/{job['id']}/cancel", headers=admin_auth(central))
    assert cancelled.json()["state"] == "cancelled"
    again = central.post(f"/api/jobs/{job['id']}/run-again", headers=admin_auth(central)).json()
    assert [p["site_id"] for p in again["participants"]] == [site_id]
    # The site sees it as a new job to Start.
    site = bearer(token(central, "north", SITE_PASSWORD))
    listed = {j["id"]: j["state"] for j in central.get("/api/jobs", headers=site).json()}
    assert listed[again["id"]] == "created"


def test_run_again_is_refused_for_a_completed_or_running_job(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    done = _completed(central, demo_files)
    refused = central.post(f"/api/jobs/{done['id']}/run-again", headers=admin_auth(central))
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"job {done['id']} is completed; only a failed, cancelled or interrupted job runs again"
    )
    fresh = _create(central)
    refused = central.post(f"/api/jobs/{fresh['id']}/run-again", headers=admin_auth(central))
    assert refused.status_code == 409 and "is created" in refused.json()["detail"]


def test_a_comparison_runs_again_with_its_methods(central: TestClient) -> None:
    job = _create(central, compare=["IMICE"])
    central.post(f"/api/jobs/{job['id']}/cancel", headers=admin_auth(central))
    again = central.post(f"/api/jobs/{job['id']}/run-again", headers=admin_auth(central)).json()
    assert [m["algorithm"] for m in again["methods"]] == [m["algorithm"] for m in job["methods"]]
    assert all(m["state"] == "created" for m in again["methods"])
    method = job["methods"][1]["id"]
    refused = central.post(f"/api/jobs/{method}/run-again", headers=admin_auth(central))
    assert refused.status_code == 409 and "run the comparison again" in refused.json()["detail"]


def test_only_admins_run_again_clone_or_delete(central: TestClient) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    site = bearer(token(central, "north", SITE_PASSWORD))
    assert central.post(f"/api/jobs/{job['id']}/run-again", headers=site).status_code == 403
    assert central.get(f"/api/jobs/{job['id']}/definition", headers=site).status_code == 403
    assert central.delete(f"/api/jobs/{job['id']}", headers=site).status_code == 403
    assert central.post(f"/api/jobs/{job['id']}/cancel", headers=site).status_code == 403
    assert central.delete("/api/jobs/999999", headers=admin_auth(central)).status_code == 404


# ------------------------------------------------------------------ delete


def test_delete_removes_the_record_and_the_results_in_memory(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    done = _completed(central, demo_files)
    store = portal_state(central).store
    assert store.has_results(done["id"])
    response = central.delete(f"/api/jobs/{done['id']}", headers=admin_auth(central))
    assert response.status_code == 204
    assert central.get(f"/api/jobs/{done['id']}", headers=admin_auth(central)).status_code == 404
    assert done["id"] not in store


def test_delete_is_refused_while_the_job_holds_data(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    _upload(central, job["id"], demo_files["central"])  # waiting for the site, data in memory
    refused = central.delete(f"/api/jobs/{job['id']}", headers=admin_auth(central))
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"job {job['id']} is waiting; cancel it before deleting it"
    assert portal_state(central).store.view(job["id"]).data is not None


def test_deleting_a_comparison_deletes_its_methods(central: TestClient) -> None:
    job = _create(central, compare=["IMICE"])
    method = job["methods"][1]["id"]
    refused = central.delete(f"/api/jobs/{method}", headers=admin_auth(central))
    assert refused.status_code == 409 and "delete the comparison" in refused.json()["detail"]
    assert central.delete(f"/api/jobs/{job['id']}", headers=admin_auth(central)).status_code == 204
    for gone in (job["id"], *(m["id"] for m in job["methods"])):
        assert central.get(f"/api/jobs/{gone}", headers=admin_auth(central)).status_code == 404


# ------------------------------------------------------------------ cancel with a reason


def test_a_cancel_reason_is_shown_at_central_and_to_the_sites(central: TestClient) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    response = central.post(
        f"/api/jobs/{job['id']}/cancel",
        json={"reason": "wrong  target\nchosen"},
        headers=admin_auth(central),
    )
    assert response.status_code == 200, response.text
    message = "cancelled at central before it started: wrong target chosen"
    assert response.json()["message"] == message
    site = bearer(token(central, "north", SITE_PASSWORD))
    assert central.get(f"/api/jobs/{job['id']}", headers=site).json()["message"] == message


def test_a_cancel_reason_has_at_most_300_characters(central: TestClient) -> None:
    job = _create(central)
    refused = central.post(
        f"/api/jobs/{job['id']}/cancel", json={"reason": "x" * 301}, headers=admin_auth(central)
    )
    assert refused.status_code == 422
    assert "the reason has 301 characters; use at most 300" in refused.text
    assert central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central)).json()["state"] == (
        "created"
    )
    fine = central.post(
        f"/api/jobs/{job['id']}/cancel", json={"reason": "y" * 300}, headers=admin_auth(central)
    )
    assert fine.status_code == 200 and fine.json()["message"].endswith("y" * 300)


def test_cancelling_a_finished_job_is_refused(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    done = _failed(central, demo_files)
    refused = central.post(f"/api/jobs/{done['id']}/cancel", headers=admin_auth(central))
    assert refused.status_code == 409 and "cannot become cancelled" in refused.text


# ------------------------------------------------------------------ clone


def test_the_definition_of_a_job_is_a_body_for_a_new_one(central: TestClient) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id], compare=["IMICE"])
    definition = central.get(f"/api/jobs/{job['id']}/definition", headers=admin_auth(central))
    assert definition.status_code == 200
    body = definition.json()
    assert body["name"] == "demo imputation (copy)"
    assert body["compare"] == ["IMICE"] and body["participants"] == [site_id]
    created = central.post("/api/jobs", json=body, headers=admin_auth(central))
    assert created.status_code == 201, created.text
    copy = created.json()
    for key in ("algorithm", "columns", "targets", "parameters", "seed"):
        assert copy[key] == job[key], key
    assert [m["algorithm"] for m in copy["methods"]] == [m["algorithm"] for m in job["methods"]]


# ------------------------------------------------------------------ pages


def _input(page: BeautifulSoup, **attrs: str) -> Tag:
    found = page.find("input", attrs=dict(attrs.items()))
    assert isinstance(found, Tag), attrs
    return found


def _text(html: str) -> str:
    return BeautifulSoup(html, "html.parser").get_text(" ", strip=True)


def test_the_pages_clone_run_again_cancel_and_delete(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, site_id = approved_site(central, "north")
    old = _failed(central, demo_files)
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{old['id']}").text, "html.parser")
    assert page.find("button", string="Run again") is not None
    clone = page.find("a", string="New job like this")
    assert isinstance(clone, Tag) and clone["href"] == f"/jobs/new?like={old['id']}"

    wizard = BeautifulSoup(central.get(f"/jobs/new?like={old['id']}").text, "html.parser")
    assert _input(wizard, name="name")["value"] == "demo imputation (copy)"
    assert _input(wizard, name="seed")["value"] == "11"
    assert _input(wizard, name="target", value="bmi").has_attr("checked")
    assert not _input(wizard, name="target", value="smoker").has_attr("checked")
    assert "no file read" in wizard.get_text()
    assert central.get("/jobs/new?like=999999").status_code == 404

    again = central.post(
        f"/jobs/{old['id']}/run-again", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert again.status_code == 303
    new_id = int(again.headers["location"].rsplit("/", 1)[1])
    assert f"run again of job {old['id']}" in _text(central.get(f"/jobs/{new_id}").text)

    refused = central.post(f"/jobs/{new_id}/run-again", data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert "only a failed, cancelled or interrupted job runs again" in _text(refused.text)

    too_long = central.post(
        f"/jobs/{new_id}/cancel", data={"csrf_token": csrf, "reason": "z" * 301}
    )
    assert too_long.status_code == 422 and "use at most 300" in _text(too_long.text)
    cancelled = central.post(
        f"/jobs/{new_id}/cancel",
        data={"csrf_token": csrf, "reason": "data not ready"},
        follow_redirects=True,
    )
    assert "cancelled at central before it started: data not ready" in _text(cancelled.text)

    deleted = central.post(
        f"/jobs/{new_id}/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert deleted.status_code == 303 and deleted.headers["location"] == "/jobs"
    assert central.get(f"/jobs/{new_id}").status_code == 404
    del site_id


def test_the_page_refuses_to_delete_a_waiting_job(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    _upload(central, job["id"], demo_files["central"])
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job['id']}").text, "html.parser")
    assert page.find("button", string="Delete job") is None
    refused = central.post(f"/jobs/{job['id']}/delete", data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert "cancel it before deleting it" in _text(refused.text)


# ------------------------------------------------------------------ event logs, final states


@EVERY_DATABASE
def test_event_logs_survive_a_restart_of_central(
    central_settings: CentralSettings, demo_files: dict[str, Path]
) -> None:
    with TestClient(create_app(central_settings)) as first:
        create_admin(first)
        done = _completed(first, demo_files)
        before = first.get(f"/api/jobs/{done['id']}/events", headers=admin_auth(first)).json()
    assert any(e["message"].startswith("cycle 1: fitted 'bmi'") for e in before), before
    with TestClient(create_app(central_settings)) as second:
        after = second.get(f"/api/jobs/{done['id']}/events", headers=admin_auth(second)).json()
        assert after == before
        browser_sign_in(second, ADMIN["username"], ADMIN["password"])
        page = BeautifulSoup(second.get(f"/jobs/{done['id']}").text, "html.parser")
    text = page.get_text(" ", strip=True)
    assert "The results were not kept: central restarted" in text
    assert "Imputations (zip of CSVs)" not in text
    lines = [li.get_text(" ", strip=True) for li in page.select("ol.log li")]
    # Newest first, a cycle's two fits on one line: far fewer lines than events.
    first_cycle = [line for line in lines if "cycle 1: fitted" in line]
    assert (
        len(first_cycle) == 1 and "'bmi' on" in first_cycle[0] and "'smoker' on" in first_cycle[0]
    )
    assert len(lines) < len(before)
    newest = max(before, key=lambda e: e["at"])
    assert newest["message"] in lines[0]


def test_participants_show_the_state_the_job_ended_in(central: TestClient) -> None:
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    central.post(
        f"/api/jobs/{job['id']}/cancel", json={"reason": "later"}, headers=admin_auth(central)
    )
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job['id']}").text, "html.parser")
    rows = {
        code.get_text(): tr.get_text(" ", strip=True)
        for tr in page.select("table.list tbody tr")
        if (code := tr.find("code")) is not None
    }
    assert "cancelled" in rows[site_id] and "offline" not in rows[site_id]


def test_a_deleted_jobs_event_log_goes_with_it(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    done = _completed(central, demo_files)
    logs = portal_state(central).logs
    assert logs.events(done["id"])
    central.delete(f"/api/jobs/{done['id']}", headers=admin_auth(central))
    assert (
        central.get(f"/api/jobs/{done['id']}/events", headers=admin_auth(central)).status_code
        == 404
    )
    assert logs.events(done["id"]) == []


# ------------------------------------------------------------------ no silent failures


def test_a_run_that_fails_outside_the_algorithm_fails_its_job_and_is_logged(
    central: TestClient, demo_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in central's own handling of a run (here: its finishing step breaks) no longer
    leaves the job 'running' with the error unseen: the job fails and the log has the trace."""
    orchestrator = portal_state(central).orchestrator

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("finishing broke")

    job = _create(central)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(orchestrator, "_finish", broken)
        _upload(central, job["id"], demo_files["central"])
        done = wait_for_state(central, job["id"], admin_auth(central))
    assert done["state"] == "failed"
    assert done["message"] == ("central's run of the job stopped on an internal error; see its log")
    assert any("finishing broke" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_a_failing_background_task_is_shown_on_its_job(
    central: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    state = portal_state(central)

    async def unreachable(job_id: int, *, fresh: bool) -> None:
        raise ConnectionError("the sites' notifier is down")

    job = _create(central)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state.notifier, "tell", unreachable)
        central.post(f"/api/jobs/{job['id']}/cancel", headers=admin_auth(central))
        wait_for(
            lambda: any(e.kind == "warning" for e in state.logs.events(job["id"])),
            seconds=5,
            what="the warning",
        )
        events = central.get(f"/api/jobs/{job['id']}/events", headers=admin_auth(central)).json()
    assert {
        "kind": "warning",
        "site": None,
        "message": "telling the sites failed at central: the sites' notifier is down",
    }.items() <= next(e for e in events if e["kind"] == "warning").items()
    assert any("telling the sites failed" in r.getMessage() for r in caplog.records)


def test_centrals_data_of_a_waiting_job_expires_and_the_job_asks_for_it_again(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    """Central's rows do not wait forever for the sites: after the results' expiry time the
    job goes back to created, says why, and its page asks for the data again."""
    _, site_id = approved_site(central, "north")
    job = _create(central, participants=[site_id])
    _upload(central, job["id"], demo_files["central"])
    state = portal_state(central)
    assert state.store.view(job["id"]).data is not None
    state.orchestrator.sweep(now=time.monotonic() + state.store.result_seconds + 5)
    back = central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central)).json()
    assert back["state"] == "created", back
    assert back["message"] == (
        "central's data was discarded from memory after 60 min waiting for the sites; "
        "upload it again"
    )
    assert state.store.view(job["id"]).data is None
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job['id']}").text, "html.parser")
    text = page.get_text(" ", strip=True)
    assert "Upload central's own CSV to start" in text and "data in memory" not in text
    _upload(central, job["id"], demo_files["central"])  # and it waits again
    assert central.get(f"/api/jobs/{job['id']}", headers=admin_auth(central)).json()["state"] == (
        "waiting"
    )


def test_the_event_log_cache_is_bounded_and_reads_the_stored_lines(central: TestClient) -> None:
    """Central caches the logs of the jobs being looked at, at most ``capacity`` of them; a
    log that left the cache is read from the database again, whole."""
    from portal_central.jobs.eventlog import JobLogs
    from portal_common.tasks import Tasks

    state = portal_state(central)
    jobs = [_create(central)["id"] for _ in range(3)]
    logs = JobLogs(database=state.database, tasks=Tasks(), capacity=2)
    with state.database.session() as session:
        for job_id in jobs:
            session.add(JobEventRecord(job_id=job_id, at=1.0, kind="log", message=f"hi {job_id}"))
    for job_id in jobs:
        assert [e.message for e in logs.events(job_id)] == [f"hi {job_id}"]
        assert logs.cached() <= 2
    assert [e.message for e in logs.events(jobs[0])] == [f"hi {jobs[0]}"]


def test_the_site_notifier_forgets_a_job_once_it_ended(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    """What the notifier keeps to tell a job's sites (its audience, when it last told the
    progress) goes once the sites were told that the job ended."""
    notifier = portal_state(central).notifier
    done = _completed(central, demo_files)
    assert done["state"] == "completed"
    wait_for(lambda: notifier.known() == 0, seconds=10, what="the notifier to forget the job")
