"""The plausibility plots and the wizard's missing-data pattern in a real browser.

Central runs as a process over TLS, as in ``test_browser.py`` (whose browser fixtures this
module shares); a job of central's demo data alone runs to completion, and the admin's browser
opens its page: the plots load after the page, each figure is drawn, its table beside it. With
FIP_UPDATE_SCREENSHOTS=1 the screenshots replace the ones the README shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from federation.data import read_csv
from federation.demo import COLUMNS
from tests.federation_env import Federation, start_federation
from tests.test_browser import _sign_in, browser, context, folder, shot

__all__ = ["browser", "context", "folder"]  # fixtures, shared with test_browser.py


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    yield from start_federation(
        tmp_path_factory.mktemp("browser-plots"), site_names=(), smtp_server=False
    )


def _completed_job(fed: Federation, central: Path) -> int:
    with fed.admin() as admin:
        job = admin.post(
            "/api/jobs",
            json={
                "name": "Plausibility",
                "algorithm": "IMICE",
                "columns": list(COLUMNS),
                "targets": [
                    {"column": "bmi", "type": "gaussian"},
                    {"column": "smoker", "type": "logistic"},
                ],
                "imputations": 5,
                "parameters": {"iteration_before_first_imputation": 3},
                "seed": 3,
            },
        )
        assert job.status_code == 201, job.text
        job_id: int = job.json()["id"]
        uploaded = admin.post(
            f"/api/jobs/{job_id}/data",
            files={"file": ("central.csv", central.read_bytes(), "text/csv")},
        )
        assert uploaded.status_code == 200, uploaded.text
        deadline = time.monotonic() + 60
        while admin.get(f"/api/jobs/{job_id}").json()["state"] != "completed":
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.2)
    return job_id


def test_the_plots_render_on_the_job_page_with_their_tables(
    network: Federation, context: BrowserContext, demo_files: dict[str, Path], folder: Path
) -> None:
    fed = network
    job_id = _completed_job(fed, demo_files["central"])
    page = context.new_page()
    _sign_in(page, fed, "admin", "Central-key-2026")
    page.goto(f"{fed.central_url}/jobs/{job_id}")
    plots = page.locator(f"#job-{job_id}-plots article.plot")
    expect(plots).to_have_count(2)  # loaded after the page
    for k, name in enumerate(("bmi", "smoker")):
        article = plots.nth(k)
        expect(article.locator("h4")).to_contain_text(name)
        image = article.locator("img")
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        box = image.bounding_box()
        assert box is not None and box["width"] > 400, box  # drawn, at a readable size
        rows = article.locator("table.plot-table tbody tr")
        expect(rows).to_have_count(6)  # observed and the 5 imputations
        expect(rows.first.locator("th")).to_have_text("observed")
        expect(article.get_by_role("link", name="SVG")).to_have_attribute(
            "href", f"/jobs/{job_id}/plots/{name}.svg"
        )
    expect(plots.nth(1).locator("thead")).to_contain_text("0")
    page.locator(f"#job-{job_id}-plots").scroll_into_view_if_needed()
    shot(page, "14-plausibility", folder)

    traces = page.locator(f"#job-{job_id}-plots article.trace")
    expect(traces).to_have_count(2)
    for k, name in enumerate(("bmi", "smoker")):
        article = traces.nth(k)
        expect(article.locator("h4")).to_contain_text(f"{name} (")
        image = article.locator("img")
        image.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        box = image.bounding_box()
        assert box is not None and box["width"] > 400, box
        expect(article.get_by_role("link", name="numbers (CSV)")).to_have_attribute(
            "href", f"/jobs/{job_id}/traces/{name}.csv"
        )
    traces.first.scroll_into_view_if_needed()
    shot(page, "14b-traces", folder)

    narrow = context.new_page()  # figures shrink, tables keep their columns and scroll
    narrow.set_viewport_size({"width": 400, "height": 800})
    narrow.goto(f"{fed.central_url}/jobs/{job_id}")
    expect(narrow.locator(f"#job-{job_id}-plots article.plot")).to_have_count(2)
    expect(narrow.locator("table.plot-table thead").first).to_be_visible()
    overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the plots make the page {overflow}px wider than a narrow window"
    narrow.close()


def test_the_wizard_shows_the_missing_data_pattern(
    network: Federation, context: BrowserContext, demo_files: dict[str, Path], folder: Path
) -> None:
    fed = network
    page = context.new_page()
    _sign_in(page, fed, "admin", "Central-key-2026")
    page.goto(f"{fed.central_url}/jobs/new")
    page.check("input[name=algorithm][value=SIMICE]")
    page.set_input_files("#f-header_file", str(demo_files["central"]))
    pattern = page.locator("section.md-pattern")
    expect(pattern).to_contain_text("Missing-data pattern")
    table = read_csv(demo_files["central"])
    expect(pattern.locator("tfoot td").last).to_have_text(
        str(int(sum(v != v for row in table.values for v in row)))
    )
    pattern.scroll_into_view_if_needed()
    shot(page, "15-wizard-pattern", folder)
