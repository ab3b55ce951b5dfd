"""A failed job in a real browser: its page offers Run again, and Run again opens a new job
with the same definition that asks for central's data (docs/screenshots/16-run-again.png)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from federation.demo import COLUMNS
from tests.central_fixtures import edited_csv
from tests.federation_env import ADMIN_PASSWORD, Federation, start_federation
from tests.processes import wait_for
from tests.test_browser import browser, context, folder, shot  # noqa: F401 - fixtures

__all__ = ["browser", "context", "folder"]


@pytest.fixture(scope="module")
def lone_central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Central with no site: its jobs run on central's data alone."""
    yield from start_federation(tmp_path_factory.mktemp("run-again"), site_names=())


def test_a_failed_job_offers_run_again(
    lone_central: Federation,
    context: BrowserContext,  # noqa: F811
    folder: Path,  # noqa: F811
    demo_files: dict[str, Path],
) -> None:
    fed = lone_central
    with fed.admin() as admin:
        # IMI with ridge 0 fails on data that passes every check: two equal predictors.
        source = demo_files["central"]
        collinear = edited_csv(
            source,
            source.with_name("collinear-central.csv"),
            complete=["smoker"],
            same_as={"cholesterol": "sbp"},
        )
        created = admin.post(
            "/api/jobs",
            json={
                "name": "bmi, single target",
                "algorithm": "IMI",
                "columns": list(COLUMNS),
                "targets": [{"column": "bmi", "type": "gaussian"}],
                "imputations": 5,
                "parameters": {"ridge": 0},
                "seed": 11,
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        uploaded = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", collinear.read_bytes(), "text/csv")},
        )
        assert uploaded.status_code == 200, uploaded.text
        wait_for(
            lambda: admin.get(f"/api/jobs/{job_id}").json()["state"] == "failed",
            seconds=30,
            what="the job to fail",
        )

    page = context.new_page()
    page.goto(f"{fed.central_url}/sign-in")
    page.fill("#f-username", "admin")
    page.fill("#f-password", ADMIN_PASSWORD)
    page.click("button.primary")
    page.goto(f"{fed.central_url}/jobs/{job_id}")
    expect(page.locator("h2").first).to_contain_text("failed")
    run_again = page.get_by_role("button", name="Run again")
    expect(run_again).to_be_visible()
    expect(page.get_by_role("link", name="New job like this")).to_be_visible()
    shot(page, "16-run-again", folder)

    run_again.click()
    expect(page).to_have_url(re.compile(rf"{fed.central_url}/jobs/(?!{job_id}$)\d+$"))
    expect(page.locator("main")).to_contain_text(f"run again of job {job_id}")
    expect(page.locator("#central-file")).to_be_visible()
