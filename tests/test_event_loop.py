"""Nothing blocks the event loop: central answers /health while an upload is being parsed.

The parse is held open by a gate (it waits, in the parsing thread, until /health has answered
or 30 s have passed) and the test checks the order of the two, never a duration: parsing on
the loop would hold /health until the gate gave up.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from federation.data import TableReader
from federation.demo import COLUMNS
from tests.central_fixtures import admin_auth, approved_site

GATE_SECONDS = 30.0


def test_health_answers_while_an_upload_is_parsed(
    central: TestClient, demo_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, site_id = approved_site(central, "north")
    created = central.post(
        "/api/jobs",
        json={
            "name": "loop",
            "algorithm": "SIMICE",
            "columns": list(COLUMNS),
            "targets": [
                {"column": "bmi", "type": "gaussian"},
                {"column": "smoker", "type": "logistic"},
            ],
            "participants": [site_id],
        },
        headers=admin_auth(central),
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    parsing, answered = threading.Event(), threading.Event()
    order: list[str] = []

    finish = TableReader.finish

    def gated_finish(reader: TableReader) -> Any:
        parsing.set()
        answered.wait(GATE_SECONDS)
        order.append("parse ended")
        return finish(reader)

    monkeypatch.setattr(TableReader, "finish", gated_finish)
    upload: dict[str, Any] = {}

    def send_upload() -> None:
        upload["response"] = central.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", demo_files["central"].read_bytes(), "text/csv")},
            headers=admin_auth(central),
        )

    uploader = threading.Thread(target=send_upload)
    uploader.start()
    try:
        assert parsing.wait(GATE_SECONDS), "the upload reached the parser"
        health = central.get("/health")
        order.append("health answered")
        answered.set()
    finally:
        answered.set()
        uploader.join(GATE_SECONDS * 2)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert order == ["health answered", "parse ended"], "/health waited for the parse"
    assert upload["response"].status_code == 200, upload["response"].text
    assert upload["response"].json()["state"] == "waiting"
