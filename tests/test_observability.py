"""Metrics for Prometheus and logs as JSON lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi.testclient import TestClient

from federation.logs import JsonFormatter, log_config
from tests.central_fixtures import admin_headers
from tests.helpers import metric_samples
from tests.site_fixtures import site_client, site_settings


def test_central_metrics_count_jobs_by_state_and_sites(central: TestClient) -> None:
    columns = ["a", "b", "y"]
    for name in ("one", "two"):
        response = central.post(
            "/api/jobs",
            headers=admin_headers(central),
            json={
                "name": name,
                "algorithm": "IMI",
                "columns": columns,
                "targets": [{"column": "y", "type": "gaussian"}],
            },
        )
        assert response.status_code == 201

    response = central.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    assert samples['fip_jobs{state="created"}'] == 2
    assert samples['fip_jobs{state="completed"}'] == 0
    assert samples["fip_sites_online"] == 0
    assert samples["fip_messages_sent_total"] == 0 and samples["fip_bytes_received_total"] == 0
    assert "# TYPE fip_bytes_sent_total counter" in response.text

    # A scraper that asks for OpenMetrics gets it: the same samples, and the end marker.
    open_metrics = central.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    assert 'fip_jobs{state="created"} 2' in open_metrics.text


def test_site_metrics_and_health(tmp_path: Path) -> None:
    with site_client(site_settings(tmp_path), signed_in=False) as site:
        samples = metric_samples(site.get("/metrics").text)
        health = site.get("/health").json()

    assert samples == {
        "fip_site_connected": 0,
        "fip_site_messages_sent_total": 0,
        "fip_site_bytes_sent_total": 0,
    }
    assert health == {"status": "ok", "database": "ok", "central": "signed out"}


def test_logs_are_one_json_object_per_line_with_the_ids() -> None:
    record = logging.LogRecord(
        "portal_central.jobs", logging.INFO, __file__, 1, "job %s: %s", ("7", "ready"), None
    )
    record.job_id = "7"
    record.site_id = "k3x9ab"

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "job 7: ready"
    assert entry["level"] == "info" and entry["logger"] == "portal_central.jobs"
    assert (entry["job_id"], entry["site_id"]) == ("7", "k3x9ab")


def test_json_lines_unless_on_a_terminal() -> None:
    assert log_config(json_lines=True)["formatters"]["main"] == {"()": JsonFormatter}
    assert "format" in log_config(json_lines=False)["formatters"]["main"]
    assert log_config(json_lines=True)["loggers"]["uvicorn.access"]["propagate"] is True
