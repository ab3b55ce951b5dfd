"""What a read of a job costs central: SQL statements and CPU per request.

Starts central in process (a TestClient on a fresh SQLite database, cheap argon2), approves
three sites, creates a comparison job on them (the reference, CSLMICE, AVGMMICE and IMICE: a
parent with four child jobs) and a plain job, then reads them N times each::

    python bench/job_reads.py [--requests N | --quick]

and prints, per kind of read, the SQL statements each request runs (a SQLAlchemy
``before_cursor_execute`` counter on central's engine) and the CPU milliseconds per request
(``time.process_time``, this process: the client and the server run in it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import event

from federation.demo import COLUMNS
from portal_central.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.central_fixtures import (  # noqa: E402
    ADMIN,
    admin_auth,
    approved_site,
    browser_sign_in,
    create_admin,
    make_settings,
    portal_state,
)

TARGETS = [{"column": "bmi", "type": "gaussian"}, {"column": "smoker", "type": "logistic"}]


def _job(client: TestClient, sites: list[str], **extra: object) -> int:
    body = {
        "name": "bench",
        "algorithm": "CSLMICE",
        "columns": list(COLUMNS),
        "targets": TARGETS,
        "participants": sites,
        "imputations": 2,
        "seed": 1,
        **extra,
    }
    response = client.post("/api/jobs", json=body, headers=admin_auth(client))
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(Path(folder) / "central", f"sqlite:///{folder}/central.db")
        with TestClient(create_app(settings)) as client:
            create_admin(client)
            sites = [approved_site(client, name)[1] for name in ("north", "south", "east")]
            comparison = _job(client, sites, compare=["AVGMMICE", "IMICE"])
            plain = _job(client, sites[:2])
            statements = [0]

            def count_statement(*_: object) -> None:
                statements[0] += 1

            event.listen(
                portal_state(client).database.engine, "before_cursor_execute", count_statement
            )
            api = admin_auth(client)
            print(f"{count} requests each; statements and CPU ms per request")
            _measure(
                client,
                count,
                statements,
                "GET /api/jobs/{comparison}",
                f"/api/jobs/{comparison}",
                api,
            )
            _measure(client, count, statements, "GET /api/jobs/{plain}", f"/api/jobs/{plain}", api)
            _measure(client, count, statements, "GET /api/jobs (2 jobs)", "/api/jobs", api)
            browser_sign_in(client, ADMIN["username"], ADMIN["password"])  # a cookie from now
            _measure(
                client, count, statements, "page /jobs/{comparison}", f"/jobs/{comparison}", {}
            )
            _measure(client, count, statements, "page /jobs/{plain}", f"/jobs/{plain}", {})
            _measure(client, count, statements, "page /jobs (2 jobs)", "/jobs", {})


def _measure(
    client: TestClient,
    count: int,
    statements: list[int],
    label: str,
    url: str,
    headers: dict[str, str],
) -> None:
    client.get(url, headers=headers)  # warm
    statements[0] = 0
    start = time.process_time()
    for _ in range(count):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text[:200])
    cpu = (time.process_time() - start) / count * 1000
    print(f"{label:28s} {statements[0] / count:5.1f} statements {cpu:7.2f} ms CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    parser.add_argument("--quick", action="store_true", help="20 requests of each kind")
    options = parser.parse_args()
    main(20 if options.quick else options.requests)
