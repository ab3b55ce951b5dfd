"""Benchmark: how long central's event loop is held while an upload is parsed.

Run::

    .venv/bin/python bench/loop.py                      # 250,000 rows x 20 columns
    .venv/bin/python bench/loop.py --rows 50000         # a quicker run
    .venv/bin/python bench/loop.py --repo /tmp/before   # another checkout (before)

What it measures: central in process (``TestClient``, SQLite in a temporary folder, the
repository's own test fixtures for settings, the admin and one approved site), a SIMI job
whose one participant never connects (the job waits and runs nothing). One thread posts a
``--rows`` x 20 CSV (generated in memory) to ``POST /api/jobs/{id}/data``; another asks
``GET /health`` over and over until the upload has answered. It prints the upload's time, the
median and the longest /health answer during the upload, the median /health answer with
nothing else running (measured first, same process), and the ratio longest / idle median:
the loop was held at least that long. It asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _csv(rows: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, 20))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[:, 0] = np.where(np.isnan(values[:, 0]), 0.0, values[:, 0])  # x1 complete
    header = ",".join(f"x{k + 1}" for k in range(20))
    lines = [header]
    for row in values:
        lines.append(",".join("" if np.isnan(v) else f"{v:.6f}" for v in row))
    return ("\n".join(lines) + "\n").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))

    from fastapi.testclient import TestClient

    from portal_central.app import create_app
    from tests.central_fixtures import admin_auth, approved_site, create_admin, make_settings

    content = _csv(args.rows)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = make_settings(root / "central", f"sqlite:///{root / 'central.db'}")
        with TestClient(create_app(settings)) as client:
            create_admin(client)
            _, site_id = approved_site(client, "north")
            headers = admin_auth(client)
            job = client.post(
                "/api/jobs",
                json={
                    "name": "loop",
                    "algorithm": "SIMI",
                    "columns": [f"x{k + 1}" for k in range(20)],
                    "targets": [{"column": "x2", "type": "gaussian"}],
                    "participants": [site_id],
                },
                headers=headers,
            ).json()

            def health() -> float:
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                return time.perf_counter() - started

            idle = [health() for _ in range(50)]
            done = threading.Event()
            upload: dict[str, float | int] = {}

            def send() -> None:
                started = time.perf_counter()
                response = client.post(
                    f"/api/jobs/{job['id']}/data",
                    files={"file": ("central.csv", content, "text/csv")},
                    headers=headers,
                )
                upload["seconds"] = time.perf_counter() - started
                upload["status"] = response.status_code
                done.set()

            sender = threading.Thread(target=send)
            sender.start()
            during: list[float] = []
            while not done.is_set():
                during.append(health())
            sender.join()

    idle_median = statistics.median(idle)
    print(f"repository: {args.repo}")
    print(f"upload: {args.rows:,} rows x 20 columns, {len(content) / 1e6:.1f} MB")
    print(f"upload answered {upload['status']} in {upload['seconds']:.2f} s")
    print(f"/health idle: median {idle_median * 1000:.1f} ms ({len(idle)} requests)")
    print(
        f"/health during the upload: {len(during)} requests, median "
        f"{statistics.median(during) * 1000:.1f} ms, longest {max(during) * 1000:.1f} ms"
    )
    print(f"longest / idle median: {max(during) / idle_median:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
