"""End to end over TLS: a securely aggregated SIMICE job across processes equals the simulation
(masked or not); both sides show the same key fingerprints; the ledger says "masked"; a cut
connection restored within the grace period completes the job; a killed site fails it by name."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.data import read_csv
from federation.outputs import long_csv
from federation.registry import Registry
from federation.runtime import JobResult
from federation.simulation import simulate
from tests.federation_env import Federation, connect_site, job_of, upload_and_start
from tests.processes import TcpProxy, wait_for

PARAMS: dict[str, Any] = {
    "imputations": 2,
    "iteration_before_first_imputation": 3,
    "iteration_between_imputations": 1,
}
TARGETS = [("bmi", "gaussian"), ("smoker", "logistic")]
_KEY = r"((?:[0-9a-f]{4} ){7}[0-9a-f]{4})"
_CENTRAL_KEY = re.compile(
    r"<code>([^<]+)</code> secure aggregation: public key relayed, fingerprint " + _KEY
)
_SITE_KEY = re.compile(r"<li>([^<:]+?)( \(this site's own key\))?: <code>" + _KEY + "</code></li>")


@pytest.fixture(scope="module")
def proxied(network: Federation) -> Iterator[TcpProxy]:
    """The first site reaches central through a relay the tests can cut."""
    port = int(network.central_url.rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    connect_site(network, network.sites[0], central_url=f"https://127.0.0.1:{proxy.port}")
    yield proxy
    proxy.close()


def _start(fed: Federation, files: dict[str, Path], name: str, params: dict[str, Any]) -> int:
    columns = files["central"].read_text().splitlines()[0].split(",")
    with fed.admin() as admin:
        response = admin.post(
            "/api/jobs",
            json={
                "name": name,
                "algorithm": "SIMICE",
                "columns": columns,
                "participants": [s.site_id for s in fed.sites],
                "targets": [{"column": c, "type": t} for c, t in TARGETS],
                "imputations": params["imputations"],
                "parameters": {
                    **{k: v for k, v in params.items() if k != "imputations"},
                    "secure_aggregation": True,
                },
                "seed": 11,
            },
        )
        assert response.status_code == 201, response.text
        job_id: int = response.json()["id"]
    upload_and_start(fed, job_id, files)
    return job_id


def _simulated(
    fed: Federation, files: dict[str, Path], params: dict[str, Any], **extra: Any
) -> JobResult:
    return asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get("SIMICE"),
            central=read_csv(files["central"], label="central.csv"),
            sites={
                s.site_id: read_csv(files[d], label=f"{d}.csv")
                for s, d in zip(fed.sites, ("north", "south"), strict=True)
            },
            targets=TARGETS,
            params={**params, **extra},
            seed=11,
        )
    )


def test_a_secure_job_over_tls_equals_the_simulation_masked_or_not(
    network: Federation, proxied: TcpProxy, demo_files: dict[str, Path]
) -> None:
    fed = network
    job_id = _start(fed, demo_files, "secure", PARAMS)
    wait_for(
        lambda: job_of(fed, job_id)["state"] not in ("waiting", "running"),
        seconds=60,
        what="the job to end",
    )
    assert job_of(fed, job_id)["state"] == "completed", job_of(fed, job_id)
    with fed.admin() as admin:
        downloaded = admin.get(f"/api/jobs/{job_id}/result", params={"format": "long"}).content
        report = admin.get(f"/api/jobs/{job_id}/report").json()
        page = admin.get(f"/jobs/{job_id}").text

    masked = _simulated(fed, demo_files, PARAMS, secure_aggregation=True)
    assert downloaded == long_csv(masked)  # the decoded sums do not depend on the masks
    plain = _simulated(fed, demo_files, PARAMS)
    for a, b in zip(plain.report["fits"], report["fits"], strict=True):
        x, y = (
            np.array(list(a["coefficients"].values())),
            np.array(list(b["coefficients"].values())),
        )
        if a["type"] == "gaussian":
            np.testing.assert_allclose(y, x, rtol=1e-9)
        else:
            np.testing.assert_allclose(y, x, atol=1.5e-5, rtol=0)
    for x, y in zip(plain.imputed_cells, masked.imputed_cells, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-8, atol=1e-12)

    assert "securely aggregated" in job_of(fed, job_id)["message"]
    secure = report["secure_aggregation"]
    assert secure["masked_rounds"] > 0 and "sum" in secure["central_saw"]
    fingerprints = secure["fingerprints"]
    assert set(fingerprints) == {s.site_id for s in fed.sites}
    for fingerprint in fingerprints.values():
        assert fingerprint in page  # central's job page shows what it relayed
    on_central_page = dict(re.findall(_CENTRAL_KEY, page))
    assert on_central_page == fingerprints
    for site in fed.sites:
        with site.api() as api:
            shown = api.get(f"/api/jobs/{job_id}").json()["key_fingerprints"]
            ledger = [e for e in api.get("/api/ledger").json() if e["job_id"] == str(job_id)]
            site_page = api.get(f"/jobs/{job_id}")
        assert shown == fingerprints  # the site's API shows the same keys
        assert site_page.status_code == 200, site_page.text
        block = site_page.text.split(f'id="job-{job_id}-keys"', 1)[1].split("</div>", 1)[0]
        on_site_page = {name: key for name, _own, key in re.findall(_SITE_KEY, block)}
        assert on_site_page == on_central_page  # what the site's user compares, key for key
        owned = [name for name, own, _key in re.findall(_SITE_KEY, block) if own]
        assert owned == [site.site_id]  # the page says which key is this site's own
        masked_entries = [e for e in ledger if "(masked)" in e["kind"]]
        assert masked_entries and all(e["note"].startswith("masked") for e in masked_entries)
        assert not any(
            "gaussian_stats" in e["kind"] and "(masked)" not in e["kind"] for e in ledger
        )


def test_a_cut_connection_restored_within_the_grace_period_completes_a_secure_job(
    network: Federation, proxied: TcpProxy, demo_files: dict[str, Path]
) -> None:
    fed = network
    params = {**PARAMS, "iteration_before_first_imputation": 60}
    job_id = _start(fed, demo_files, "secure, cut and restored", params)
    wait_for(lambda: job_of(fed, job_id)["state"] == "running", seconds=20, what="the job to run")
    connections_before = proxied.connections

    proxied.cut()

    wait_for(
        lambda: proxied.connections > connections_before, seconds=10, what="the site to reconnect"
    )
    wait_for(lambda: job_of(fed, job_id)["state"] != "running", seconds=60, what="the job to end")
    assert job_of(fed, job_id)["state"] == "completed", job_of(fed, job_id)
    with fed.admin() as admin:
        downloaded = admin.get(f"/api/jobs/{job_id}/result", params={"format": "long"}).content
    assert downloaded == long_csv(_simulated(fed, demo_files, params, secure_aggregation=True))


def test_a_killed_site_fails_a_secure_job_naming_it(
    network: Federation, demo_files: dict[str, Path]
) -> None:
    fed = network
    south = fed.sites[1]
    params = {**PARAMS, "iteration_before_first_imputation": 60}
    job_id = _start(fed, demo_files, "secure, site killed", params)
    wait_for(lambda: job_of(fed, job_id)["state"] == "running", seconds=20, what="the job to run")

    south.process.kill()

    wait_for(lambda: job_of(fed, job_id)["state"] != "running", seconds=30, what="the job to fail")
    job = job_of(fed, job_id)
    assert job["state"] == "failed"
    assert f"site '{south.site_id}'" in str(job["message"])
    assert "did not reconnect" in str(job["message"])
