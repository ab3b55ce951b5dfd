"""End to end: a site's connection cut mid-job and restored, and a site process killed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.data import read_csv
from federation.outputs import long_csv
from federation.registry import Registry
from federation.simulation import simulate
from tests.federation_env import (
    Federation,
    connect_site,
    job_of,
    start_federation,
    upload_and_start,
)
from tests.processes import TcpProxy, wait_for

PARAMS = {
    "imputations": 2,
    "iteration_before_first_imputation": 60,
    "iteration_between_imputations": 1,
}
TARGETS = [("bmi", "gaussian"), ("smoker", "logistic")]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A federation of this module's own: its last test kills a site (the shared one, in
    tests/federation_env.py, must outlive every module)."""
    yield from start_federation(tmp_path_factory.mktemp("reconnect"))


@pytest.fixture(scope="module")
def proxied(network: Federation) -> Iterator[TcpProxy]:
    """The first site reaches central through a relay the tests can cut."""
    port = int(network.central_url.rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    connect_site(network, network.sites[0], central_url=f"https://127.0.0.1:{proxy.port}")
    yield proxy
    proxy.close()


def _run(fed: Federation, files: dict[str, Path], name: str) -> int:
    columns = files["central"].read_text().splitlines()[0].split(",")
    with fed.admin() as admin:
        job_id: int = admin.post(
            "/api/jobs",
            json={
                "name": name,
                "algorithm": "SIMICE",
                "columns": columns,
                "participants": [s.site_id for s in fed.sites],
                "targets": [{"column": c, "type": t} for c, t in TARGETS],
                "imputations": PARAMS["imputations"],
                "parameters": {k: v for k, v in PARAMS.items() if k != "imputations"},
                "seed": 11,
            },
        ).json()["id"]
    upload_and_start(fed, job_id, files)
    return job_id


def test_a_cut_connection_restored_within_the_grace_period_loses_nothing(
    network: Federation, proxied: TcpProxy, demo_files: dict[str, Path]
) -> None:
    fed = network
    job_id = _run(fed, demo_files, "cut and restored")
    wait_for(lambda: job_of(fed, job_id)["state"] == "running", seconds=60, what="the job to run")
    connections_before = proxied.connections

    proxied.cut()

    wait_for(
        lambda: proxied.connections > connections_before, seconds=10, what="the site to reconnect"
    )
    wait_for(lambda: job_of(fed, job_id)["state"] != "running", seconds=60, what="the job to end")
    assert job_of(fed, job_id)["state"] == "completed", job_of(fed, job_id)
    with fed.admin() as admin:
        downloaded = admin.get(f"/api/jobs/{job_id}/result", params={"format": "long"}).content
    expected = asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get("SIMICE"),
            central=read_csv(demo_files["central"]),
            sites={
                s.site_id: read_csv(demo_files[d])
                for s, d in zip(fed.sites, ("north", "south"), strict=True)
            },
            targets=TARGETS,
            params=PARAMS,
            seed=11,
        )
    )
    assert downloaded == long_csv(expected)


def test_a_killed_site_fails_the_job_naming_it(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    south = fed.sites[1]
    job_id = _run(fed, demo_files, "site killed")
    wait_for(lambda: job_of(fed, job_id)["state"] == "running", seconds=60, what="the job to run")

    south.process.kill()

    # While central waits for it, the job's page says for whom and how long at most.
    waiting = f"waiting up to 6 s for {south.name.capitalize()} Hospital"
    wait_for(lambda: waiting in _page(fed, job_id), seconds=10, what="the page to say it waits")
    wait_for(lambda: job_of(fed, job_id)["state"] != "running", seconds=30, what="the job to fail")
    job = job_of(fed, job_id)
    assert job["state"] == "failed"
    assert job["message"] == (
        f"site '{south.site_id}': no answer (the site is offline and did not reconnect within 6 s)"
    )
    page = _page(fed, job_id)
    assert "SiteGone" not in page and "Run again" in page


def _page(fed: Federation, job_id: int) -> str:
    with fed.admin() as admin:
        return admin.get(f"/jobs/{job_id}").text
