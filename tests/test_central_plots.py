"""A completed job's plausibility plots at central: the page's lazily loaded section, each SVG
and CSV, the JSON numbers (equal to the downloaded datasets), who may see them, and what the page
says once the results are gone; with real jobs through the API.

The tests that only read a completed job share one (``finished``: a portal of the module with
one job done, drawn once); a test that discards results or needs other data has its own."""

from __future__ import annotations

import csv
import gc
import io
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from portal_central.jobs.plausibility import CACHE
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    edited_csv,
    portal_state,
    token,
)
from tests.test_central_jobs import _create, _portal, _run_to_completion

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SVG = "{http://www.w3.org/2000/svg}"
IMPUTATIONS = 3
"""The shared job's: not the default 2, so that no count of imputations passes by chance."""


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, demo_files: dict[str, Path]
) -> Iterator[tuple[TestClient, int]]:
    """A portal (SQLite) with one completed IMICE job on central's demo data, for the tests
    that only read it: its plots are drawn once for them all, as the portal's cache does."""
    folder = tmp_path_factory.mktemp("plots")
    with _portal(folder, f"sqlite:///{folder / 'central.db'}") as client:
        done = _run_to_completion(client, demo_files["central"], imputations=IMPUTATIONS)
        yield client, done["id"]


def _long(client: TestClient, job_id: int) -> pd.DataFrame:
    response = client.get(f"/api/jobs/{job_id}/result?format=long", headers=admin_auth(client))
    assert response.status_code == 200
    return pd.read_csv(io.BytesIO(response.content), na_values=["NA"])


def _groups(long: pd.DataFrame, column: str) -> list[list[float]]:
    """The observed cells of ``column``, then each imputation's imputed cells."""
    original = long[long[".imp"] == 0][column].to_numpy()
    missing = np.isnan(original)
    groups = [[float(v) for v in original[~missing]]]
    for m in range(1, int(long[".imp"].max()) + 1):
        groups.append([float(v) for v in long[long[".imp"] == m][column].to_numpy()[missing]])
    return groups


def test_the_numbers_equal_the_downloaded_datasets(finished: tuple[TestClient, int]) -> None:
    central, job_id = finished
    got = central.get(f"/api/jobs/{job_id}/plausibility", headers=admin_auth(central))
    assert got.status_code == 200, got.text
    numbers = got.json()
    assert numbers["job"] == job_id and numbers["imputations"] == IMPUTATIONS
    bmi, smoker = numbers["targets"]
    assert (bmi["name"], bmi["kind"], smoker["name"], smoker["kind"]) == (
        "bmi", "density", "smoker", "bars",
    )  # fmt: skip
    long = _long(central, job_id)
    for row, cells in zip(bmi["rows"], _groups(long, "bmi"), strict=True):
        q1, median, q3 = statistics.quantiles(cells, n=4, method="inclusive")
        assert row["n"] == len(cells)
        assert row["mean"] == pytest.approx(statistics.fmean(cells), rel=1e-12)
        assert row["sd"] == pytest.approx(statistics.stdev(cells), rel=1e-12)
        assert [row["min"], row["q1"], row["median"], row["q3"], row["max"]] == pytest.approx(
            [min(cells), q1, median, q3, max(cells)], rel=1e-12
        )
    counted = [Counter(cells) for cells in _groups(long, "smoker")]
    assert [(r["imp"], r["level"], r["count"]) for r in smoker["rows"]] == [
        (imp, level, counts[float(level)]) for imp, counts in enumerate(counted) for level in "01"
    ]


def test_the_page_loads_the_plots_with_their_tables_svg_and_csv(
    finished: tuple[TestClient, int],
) -> None:
    central, job_id = finished
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = BeautifulSoup(central.get(f"/jobs/{job_id}").text, "html.parser")
    lazy = page.find(id=f"job-{job_id}-plots")
    assert lazy is not None and lazy.get("hx-get") == f"/jobs/{job_id}/plots"
    assert lazy.find("img") is None  # drawn when the section is asked for, not with the page

    section = BeautifulSoup(central.get(f"/jobs/{job_id}/plots").text, "html.parser")
    articles = section.select("article.plot")
    assert [a.select("h4")[0].get_text(" ", strip=True).split(" ")[0] for a in articles] == [
        "bmi",
        "smoker",
    ]
    numbers = central.get(f"/api/jobs/{job_id}/plausibility", headers=admin_auth(central)).json()
    for article, target in zip(articles, numbers["targets"], strict=True):
        image = article.find("img")
        assert image is not None and "observed and imputed" in str(image.get("alt"))
        svg = central.get(str(image["src"]))
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert svg.headers["cache-control"] == "no-store"
        root = ET.fromstring(svg.content)
        title = root.find(f"{SVG}title")
        assert title is not None and str(title.text).startswith(target["name"])
        rows = article.select("tbody tr")
        assert [r.select("th")[0].get_text() for r in rows] == [
            "observed",
            "imputation 1",
            "imputation 2",
            "imputation 3",
        ]
        table = central.get(f"/jobs/{job_id}/plots/{target['name']}.csv")
        assert table.status_code == 200
        parsed = list(csv.DictReader(io.StringIO(table.text)))
        assert {r["target"] for r in parsed} == {target["name"]}
        assert len(parsed) == len(target["rows"])
    bmi_rows = articles[0].select("tbody tr")
    observed = numbers["targets"][0]["rows"][0]
    cells = [td.get_text() for td in bmi_rows[0].find_all("td")]
    assert cells[:2] == [str(observed["n"]), f"{observed['mean']:.4g}"]
    smoker_cells = [td.get_text() for td in articles[1].select("tbody tr")[0].find_all("td")]
    first = numbers["targets"][1]["rows"][0]
    assert smoker_cells[0] == f"{first['count']} ({100 * first['share']:.1f}%)"


def test_a_target_name_that_is_not_plain_has_its_plot(
    finished: tuple[TestClient, int], demo_files: dict[str, Path], tmp_path: Path
) -> None:
    central, _ = finished  # a job of its own there: one target, the one renamed
    renamed = tmp_path / "central.csv"
    complete = edited_csv(demo_files["central"], tmp_path / "smoker.csv", complete=["smoker"])
    text = complete.read_text()  # smoker complete: bmi can be the one target
    renamed.write_text(text.replace("bmi", "bmi (kg/m2)", 1))
    columns = text.splitlines()[0].replace("bmi", "bmi (kg/m2)").split(",")
    targets = [{"column": "bmi (kg/m2)", "type": "gaussian"}]
    job_id = _run_to_completion(central, renamed, columns=columns, targets=targets)["id"]
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    section = BeautifulSoup(central.get(f"/jobs/{job_id}/plots").text, "html.parser")
    image = section.find("img")  # the first target's
    assert image is not None and image["src"] == f"/jobs/{job_id}/plots/bmi%20%28kg%2Fm2%29.svg"
    svg = central.get(str(image["src"]))
    assert svg.status_code == 200, svg.text
    assert 'filename="job-' in svg.headers["content-disposition"]
    assert "bmi_kg_m2.svg" in svg.headers["content-disposition"]


def test_only_admins_see_the_plots(finished: tuple[TestClient, int]) -> None:
    central, job_id = finished
    approved_site(central, "north")
    site = bearer(token(central, "north", SITE_PASSWORD))
    central.cookies.clear()  # no admin's session: only the headers sent count
    for path in (
        f"/api/jobs/{job_id}/plausibility",
        f"/jobs/{job_id}/plots",
        f"/jobs/{job_id}/plots/bmi.svg",
        f"/jobs/{job_id}/plots/bmi.csv",
    ):
        assert central.get(path, headers=site).status_code == 403, path
        anonymous = central.get(path, follow_redirects=False)
        assert anonymous.status_code in (401, 303), path  # a page sends to sign-in
        assert anonymous.headers.get("location", "/sign-in").startswith("/sign-in")
    unknown = central.get(f"/jobs/{job_id}/plots/weight.svg", headers=admin_auth(central))
    assert unknown.status_code == 404
    assert "no target named &#39;weight&#39; (its targets: bmi, smoker)" in unknown.text
    nothing = central.get("/api/jobs/999/plausibility", headers=admin_auth(central))
    assert nothing.status_code == 404


def test_no_plots_before_completion_nor_for_a_comparison(finished: tuple[TestClient, int]) -> None:
    central, _ = finished
    headers = admin_auth(central)
    job = _create(central)
    early = central.get(f"/api/jobs/{job['id']}/plausibility", headers=headers)
    assert early.status_code == 409 and "no imputations to plot" in early.text
    comparison = _create(central, compare=["IMICE"])
    refused = central.get(f"/jobs/{comparison['id']}/plots/bmi.svg", headers=headers)
    assert refused.status_code == 409 and "each method&#39;s plots are on its own" in refused.text


@SQLITE
def test_when_the_results_are_gone_the_page_says_so(
    tmp_path: Path, database_url: str, demo_files: dict[str, Path]
) -> None:
    with _portal(tmp_path, database_url, download_grace_seconds=0) as client:
        data = edited_csv(demo_files["central"], tmp_path / "smoker.csv", complete=["smoker"])
        bmi = [{"column": "bmi", "type": "gaussian"}]  # one target: one plot to draw
        job_id = _run_to_completion(client, data, targets=bmi)["id"]
        headers = admin_auth(client)
        before = len(CACHE)
        assert client.get(f"/jobs/{job_id}/plots/bmi.svg", headers=headers).status_code == 200
        assert len(CACHE) == before + 1
        drawn = client.get(f"/jobs/{job_id}/plots/bmi.svg", headers=headers)  # from the cache
        assert len(CACHE) == before + 1 and drawn.status_code == 200
        assert client.get(f"/api/jobs/{job_id}/result?format=long", headers=headers).is_success
        portal_state(client).orchestrator.sweep()
        gc.collect()
        assert len(CACHE) == before  # the plots went with the results

        gone = client.get(f"/api/jobs/{job_id}/plausibility", headers=headers)
        assert gone.status_code == 404
        assert "downloaded, then discarded" in gone.json()["detail"]
        assert client.get(f"/jobs/{job_id}/plots/bmi.svg", headers=headers).status_code == 404
        browser_sign_in(client, ADMIN["username"], ADMIN["password"])
        section = client.get(f"/jobs/{job_id}/plots")
        assert section.status_code == 200  # the page's section says why, it does not fail
        said = BeautifulSoup(section.text, "html.parser").get_text(" ", strip=True)
        assert "were downloaded, then discarded from memory" in said
        assert "the plausibility plots went with them" in said
        page = BeautifulSoup(client.get(f"/jobs/{job_id}").text, "html.parser")
        assert page.find(id=f"job-{job_id}-plots") is None
        assert "the plausibility plots went with it" in page.get_text(" ", strip=True)


def test_the_page_shows_the_trace_plots_of_a_completed_simice_job(
    finished: tuple[TestClient, int],
) -> None:
    central, job_id = finished
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    section = BeautifulSoup(central.get(f"/jobs/{job_id}/plots").text, "html.parser")
    report = central.get(f"/api/jobs/{job_id}/report", headers=admin_auth(central)).json()
    articles = section.select("article.trace")
    chains = report["chains"]["chains"]  # parallel chains, the default: one per dataset
    assert report["chains"]["kind"] == "parallel" and chains == report["params"]["imputations"]
    assert [a.select("h4")[0].get_text(" ", strip=True) for a in articles] == [
        f"bmi (gaussian, {chains} chains)",
        f"smoker (logistic, {chains} chains)",
    ]
    for article, (name, entry) in zip(articles, report["traces"].items(), strict=True):
        image = article.find("img")
        assert image is not None and f"Trace of {name}" in str(image.get("alt"))
        svg = central.get(str(image["src"]))
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert f"job-{job_id}-trace_{name}.svg" in svg.headers["content-disposition"]
        root = ET.fromstring(svg.content)
        title = root.find(f"{SVG}title")
        assert title is not None and str(title.text).startswith(f"{name} (")
        for chain in range(1, chains + 1):
            assert root.find(f".//{SVG}g[@id='trace-mean-{chain}']") is not None
        table = central.get(f"/jobs/{job_id}/traces/{name}.csv")
        assert table.status_code == 200
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert [float(r["mean"]) for r in rows] == [
            p["mean"] for points in entry["chains"] for p in points
        ]
        shown = article.select_one("p.rhat")
        assert shown is not None and shown.get_text(" ", strip=True) == (
            "R-hat over the chains: "
            + ", ".join(
                f"{'SD' if q == 'sd' else q} {'not available' if v is None else f'{v:.2f}'}"
                for q, v in entry["rhat"].items()
            )
        )
        flagged = any(
            w.startswith(f"target '{name}' may not have settled") for w in report["warnings"]
        )
        assert (article.select_one(".alert-warning") is not None) == flagged
    link = section.find("a", string="chains.csv")
    assert link is not None and link["href"] == f"/jobs/{job_id}/result?format=chains"
    chains = central.get(str(link["href"]))
    assert chains.status_code == 200 and chains.text.startswith("target,chain,cycle,mean,variance")
    missing = central.get(f"/jobs/{job_id}/traces/nothing.svg")
    assert missing.status_code == 404 and "its traces: bmi, smoker" in missing.text
