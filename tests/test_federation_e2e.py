"""End to end: central and two sites as separate processes, over TLS, through the JSON APIs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup

from federation.data import read_csv
from federation.outputs import dataset_csv, long_csv, zip_bytes
from federation.registry import Registry
from federation.simulation import simulate
from tests.federation_env import Federation, start_federation, upload_and_start
from tests.processes import wait_for


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A federation of this module's own: the sites must list this module's job alone."""
    yield from start_federation(tmp_path_factory.mktemp("e2e"))


def _job(fed: Federation, *, name: str, seed: int, columns: list[str]) -> int:
    with fed.admin() as admin:
        response = admin.post(
            "/api/jobs",
            json={
                "name": name,
                "algorithm": "SIMICE",
                "columns": columns,
                "participants": [s.site_id for s in fed.sites],
                "targets": [
                    {"column": "bmi", "type": "gaussian"},
                    {"column": "smoker", "type": "logistic"},
                ],
                "imputations": 3,
                "parameters": {
                    "iteration_before_first_imputation": 2,
                    "iteration_between_imputations": 1,
                },
                "seed": seed,
            },
        )
        assert response.status_code == 201, response.text
        job_id: int = response.json()["id"]
        return job_id


def _state(fed: Federation, job_id: int) -> str:
    with fed.admin() as admin:
        state: str = admin.get(f"/api/jobs/{job_id}").json()["state"]
        return state


def test_a_job_runs_across_processes_and_equals_the_simulation(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    columns = demo_files["central"].read_text().splitlines()[0].split(",")
    job_id = _job(fed, name="e2e", seed=7, columns=columns)

    for site, data in zip(fed.sites, ("north", "south"), strict=True):
        with site.api() as api:
            jobs = api.get("/api/jobs").json()
            assert [j["id"] for j in jobs] == [str(job_id)]
            uploaded = api.post(
                f"/api/jobs/{job_id}/data",
                files={"file": (f"{data}.csv", demo_files[data].read_bytes())},
            )
            assert uploaded.status_code == 200, uploaded.text
            started = api.post(f"/api/jobs/{job_id}/start")
            assert started.status_code == 200, started.text
    with fed.admin() as admin:
        response = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", demo_files["central"].read_bytes())},
        )
        assert response.status_code == 200, response.text
    wait_for(
        lambda: _state(fed, job_id) not in ("waiting", "running"), seconds=60, what="the job to end"
    )
    with fed.admin() as admin:
        job = admin.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "completed", job
        downloaded = admin.get(f"/api/jobs/{job_id}/result", params={"format": "long"})
        archive = admin.get(f"/api/jobs/{job_id}/result", params={"format": "zip"})
        report = admin.get(f"/api/jobs/{job_id}/report").json()
        assert downloaded.status_code == 200
        page = admin.get(f"/jobs/{job_id}").text  # every site's rows used and left out

    expected = asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get("SIMICE"),
            central=read_csv(demo_files["central"], label="central.csv"),
            sites={
                s.site_id: read_csv(demo_files[d], label=f"{d}.csv")
                for s, d in zip(fed.sites, ("north", "south"), strict=True)
            },
            targets=[("bmi", "gaussian"), ("smoker", "logistic")],
            params={
                "imputations": 3,
                "iteration_before_first_imputation": 2,
                "iteration_between_imputations": 1,
            },
            seed=7,
        )
    )
    # Streamed over TLS (chunked, no Content-Length), equal to the files built whole.
    assert downloaded.content == long_csv(expected)
    assert archive.status_code == 200 and archive.content == zip_bytes(expected)
    assert downloaded.headers.get("transfer-encoding") == "chunked"
    assert [f["coefficients"] for f in report["fits"]] == [
        f["coefficients"] for f in expected.report["fits"]
    ]
    assert [s["name"] for s in report["sites"]] == ["central", *(s.site_id for s in fed.sites)]
    assert [s["left_out"] for s in report["sites"]] == [
        s["left_out"] for s in expected.report["sites"]
    ]
    rows_table = BeautifulSoup(page, "html.parser").select_one(f"#job-{job_id}-rows")
    assert rows_table is not None
    shown = [
        [td.get_text(" ", strip=True) for td in tr.select("td")]
        for tr in rows_table.select("tbody tr")
    ]
    assert [row[:3] for row in shown] == [
        [s["name"], str(s["rows"]), str(s["rows_used"])] for s in report["sites"]
    ]

    with fed.admin() as admin:
        metrics = admin.get("/metrics").text
    assert "fip_sites_online 2" in metrics
    assert 'fip_jobs{state="completed"} 1' in metrics
    sent = next(line for line in metrics.splitlines() if line.startswith("fip_messages_sent_total"))
    assert int(sent.split()[1]) == 2 * report["round_trips"]  # one frame per site per round trip

    # Each site's ledger (written in batches, off its event loop) lists every reply it sent.
    controls = {"ready", "unready", "cancel", "policy"}
    for site in fed.sites:
        with site.api() as api:
            ledger = api.get("/api/ledger").json()
        replies = [e for e in ledger if e["job_id"] == str(job_id) and e["kind"] not in controls]
        assert len(replies) == report["round_trips"], site.name
        kinds = {entry["kind"] for entry in replies}
        assert "fip.open" in kinds and any("gaussian_stats" in k for k in kinds)
        assert all(entry["bytes"] > 0 for entry in ledger)


def test_a_categorical_and_a_pmm_target_run_across_processes(
    network: Federation, demo_files: dict[str, Path], tmp_path: Path
) -> None:
    """One SIMICE job over TLS with a categorical target (its levels in the job, sent to every
    site) and a pmm one: it equals the simulation, its categorical imputations are levels and
    its pmm imputations values central observed."""
    fed = network
    rng = np.random.default_rng(5)
    files = {}
    for name, path in demo_files.items():
        demo = read_csv(path, label=f"{name}.csv")
        age = demo.values[:, demo.columns.index("age")]
        drawn = np.digitize(age + rng.normal(0, 8, age.size), [50.0, 62.0]) + 1.0
        drawn[rng.random(age.size) < 0.15] = np.nan
        values = np.column_stack([demo.values, drawn])
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_bytes(dataset_csv((*demo.columns, "stage"), values))
    columns = files["central"].read_text().splitlines()[0].split(",")
    targets = [("bmi", "pmm"), ("smoker", "logistic"), ("stage", "categorical")]
    params = {"iteration_before_first_imputation": 2, "iteration_between_imputations": 1}
    with fed.admin() as admin:
        response = admin.post(
            "/api/jobs",
            json={
                "name": "e2e methods",
                "algorithm": "SIMICE",
                "columns": columns,
                "participants": [s.site_id for s in fed.sites],
                "targets": [
                    {"column": c, "type": t, **({"levels": [1, 2, 3]} if c == "stage" else {})}
                    for c, t in targets
                ],
                "imputations": 2,
                "parameters": params,
                "seed": 9,
            },
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
    upload_and_start(fed, job_id, files)
    wait_for(
        lambda: _state(fed, job_id) not in ("waiting", "running"), seconds=90, what="the job to end"
    )
    with fed.admin() as admin:
        job = admin.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "completed", job
        downloaded = admin.get(f"/api/jobs/{job_id}/result", params={"format": "long"})
        report = admin.get(f"/api/jobs/{job_id}/report").json()

    central = read_csv(files["central"], label="central.csv")
    expected = asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get("SIMICE"),
            central=central,
            sites={
                s.site_id: read_csv(files[d], label=f"{d}.csv")
                for s, d in zip(fed.sites, ("north", "south"), strict=True)
            },
            targets=targets,
            params={"imputations": 2, **params},
            seed=9,
            levels={"stage": (1.0, 2.0, 3.0)},
        )
    )
    assert downloaded.content == long_csv(expected)
    assert {f["type"] for f in report["fits"]} == {"pmm", "logistic", "categorical"}
    stage: int = columns.index("stage")
    bmi: int = columns.index("bmi")
    observed_bmi = central.values[~np.isnan(central.values[:, bmi]), bmi]
    for m in (1, 2):
        imputed = expected.dataset(m)
        assert set(np.unique(imputed[expected.missing[:, stage], stage])) <= {1.0, 2.0, 3.0}
        assert np.isin(imputed[expected.missing[:, bmi], bmi], observed_bmi).all()
