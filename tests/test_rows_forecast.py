"""What a site sees after its upload and before Start: each column's missing cells and the rows
the job will leave out and why (``federation.rows``), equal to what the run then reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup

from federation.registry import Registry
from federation.rows import forecast
from portal_site.state import SiteState
from tests.helpers import run, table
from tests.site_fixtures import site_client, site_settings
from tests.test_site_trust import Central, job_info

COLUMNS = ["a", "b", "y"]


def _site_table(rows: int = 40, seed: int = 1) -> np.ndarray:
    """a missing in rows 0-3, b in 4-5 and 3 (a row missing both), y in 10-14 and 0."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    values = np.column_stack([a, b, 1 + a - b + rng.normal(size=rows)])
    values[0:4, 0] = np.nan
    values[[3, 4, 5], 1] = np.nan
    values[[0, *range(10, 15)], 2] = np.nan
    return values


def _central(rows: int = 60) -> np.ndarray:
    values = _site_table(rows, seed=7)
    values[:, :2] = np.nan_to_num(values[:, :2])  # central's non-targets complete
    return values


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_the_forecast_is_what_the_run_reports(algorithm: str) -> None:
    site = table("north.csv", COLUMNS, _site_table())
    central = table("central.csv", COLUMNS, _central())
    expected = forecast(site, ["y"], chained=algorithm == "SIMICE")

    result = run(algorithm, central, {"north": site}, [("y", "gaussian")], imputations=1)

    (reported,) = [s for s in result.report["sites"] if s["name"] == "north"]
    assert reported["rows_used"] == expected.used
    assert reported["left_out"] == {g.reason: g.rows for g in expected.left_out}


def test_the_forecast_counts_rows_and_columns() -> None:
    site = table("north.csv", COLUMNS, _site_table())

    chained = forecast(site, ["y"], chained=True)
    single = forecast(site, ["y"], chained=False)
    unknown = forecast(site, ["y"], chained=None)

    assert chained.missing == {"a": 4, "b": 3, "y": 6}
    assert [(g.reason, g.rows, g.by_column) for g in chained.left_out] == [
        ("a non-target column missing", 6, {"a": 4, "b": 3})
    ]
    assert chained.used == 34
    assert [(g.reason, g.rows, g.by_column) for g in single.left_out] == [
        ("'y' missing", 6, {"y": 6}),
        ("a predictor missing", 5, {"a": 3, "b": 3}),
    ]
    assert single.used == 29
    assert unknown.used is None and unknown.left_out == [] and unknown.missing == chained.missing
    carried = forecast(site, ["y"], chained=True, modelled={"b", "y"})
    assert [(g.rows, g.by_column) for g in carried.left_out] == [(3, {"b": 3})]


def _csv(values: np.ndarray) -> bytes:
    lines = [",".join(COLUMNS)]
    lines += [",".join("" if np.isnan(v) else f"{v:.6f}" for v in row) for row in values]
    return ("\n".join(lines) + "\n").encode()


def test_the_site_page_shows_the_counts_after_the_upload_and_before_start(
    tmp_path: Path,
) -> None:
    """The page of a SIMICE job: missing cells per column, rows used, rows left out and why."""
    central = Central()
    simice = Registry.with_builtins().get("SIMICE")
    central.jobs = [job_info(algorithm="SIMICE", version=simice.version, digest=simice.digest)]
    with site_client(site_settings(tmp_path / "site")) as client:
        state: SiteState = client.app.state.site  # type: ignore[attr-defined]
        jobs = state.jobs
        jobs.fetch_json, jobs.fetch_text, jobs.send = (
            central.fetch_json,
            central.fetch_text,
            central.send,
        )
        before = BeautifulSoup(client.get("/jobs/1").text, "html.parser")
        assert before.select_one("#job-1-rows") is None  # nothing to count before the upload

        job = asyncio.run(jobs.load("1"))
        asyncio.run(jobs.upload(job, _csv(_site_table()), "north.csv"))
        page = BeautifulSoup(client.get("/jobs/1").text, "html.parser")

    block = page.select_one("#job-1-rows")
    assert block is not None
    text = block.get_text(" ", strip=True)
    assert "Missing cells: a 4, b 3, y 6" in text
    assert "Rows the job will use: 34 of 40" in text
    assert "6 row(s) left out: a non-target column missing (a 4, b 3)" in text
    assert not job.started
    assert central.sent == []  # counted for the page: nothing was sent to central
