"""A comparison job in a real browser: the wizard's *Compare methods* box, one Start at the site
for every method, and the side-by-side report on central's page, narrow window included.

Central and a site portal run as processes over TLS, as in ``test_browser.py`` (whose browser
fixtures this module shares). With FIP_UPDATE_SCREENSHOTS=1 the screenshots replace the ones
the README shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from federation.registry import Registry
from tests.federation_env import Federation, connect_site, start_federation, start_site_portal
from tests.test_browser import (
    PASSWORD,
    _sign_in,
    browser,
    context,
    folder,
    shot,
    sign_in_to_site_portal,
)

__all__ = ["browser", "context", "folder"]  # fixtures, shared with test_browser.py


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    yield from start_federation(
        tmp_path_factory.mktemp("browser-compare"), site_names=(), smtp_server=False
    )


def test_compare_methods_from_the_wizard(
    network: Federation, context: BrowserContext, demo_files: dict[str, Path], folder: Path
) -> None:
    fed = network
    with fed.admin() as admin:
        registered = httpx.post(
            f"{fed.central_url}/api/register",
            verify=fed.tls(),
            json={
                "username": "north",
                "email": "north@hospital.example",
                "institution": "North Hospital",
                "password": PASSWORD,
            },
        ).json()
        site_id = admin.post(f"/api/users/{registered['id']}/approve").json()["site_id"]
    portal = start_site_portal(fed, "north", site_id)
    try:
        portal.name = "north"
        connect_site(fed, portal, password=PASSWORD)
        page = context.new_page()
        _sign_in(page, fed, "admin", "Central-key-2026")

        # The wizard offers the chained methods beside SIMICE, and none of the one-target ones.
        page.goto(f"{fed.central_url}/jobs/new")
        page.check("input[name=algorithm][value=SIMICE]")
        compare = page.locator("input[name=compare]")
        expect(compare).to_have_count(3)
        offered = sorted(compare.nth(i).get_attribute("value") or "" for i in range(3))
        assert offered == ["AVGMMICE", "CSLMICE", "IMICE"]
        page.set_input_files("#f-header_file", str(demo_files["central"]))
        page.check("input[name=target][value=bmi]")
        page.check("input[name=target][value=smoker]")
        page.fill("#p-imputations", "2")
        for method in ("AVGMMICE", "CSLMICE", "IMICE"):
            page.check(f"input[name=compare][value={method}]")
        page.check(f"input[name=participants][value='{site_id}']")
        page.fill("#f-name", "Which method")
        page.get_by_role("button", name="Create job").click()
        expect(page.locator("h1")).to_contain_text("Which method")
        expect(page.locator("dl.facts")).to_contain_text(
            f"SIMICE {Registry.with_builtins().get('SIMICE').version} (reference"
        )
        job_url = page.url
        job_id = job_url.rsplit("/", 1)[1]

        # The site starts once, for every method that runs on its data (IMICE does not).
        site = context.new_page()
        sign_in_to_site_portal(site, portal, f"/jobs/{job_id}")
        expect(site.locator("ol.checklist")).to_contain_text("This job compares methods")
        for method in ("SIMICE", "AVGMMICE", "CSLMICE"):
            version = Registry.with_builtins().get(method).version
            expect(site.locator("ol.checklist")).to_contain_text(
                f"{method} {version} is built into"
            )
        expect(site.locator("ol.checklist")).not_to_contain_text(re.compile(r"\bIMICE 1\.1\.0"))
        site.set_input_files("#site-file", str(demo_files["north"]))
        site.click("button:has-text('Upload')")
        site.click("button:has-text('Start')")
        expect(site.locator("ol.checklist")).to_contain_text("This site is ready")
        # Central's page shows it (its status block is swapped in anew): only then choose the
        # file, or the swap may replace the form that holds it.
        expect(page.locator(f"#job-{job_id}-status table.list").last).to_contain_text("ready")

        page.set_input_files("#central-file", str(demo_files["central"]))
        page.click("text=Upload and start")
        expect(page.locator("h2").first).to_contain_text("completed", timeout=90_000)
        report = page.locator("table.numbers")
        expect(report).to_have_count(2)  # one table per target
        expect(report.first).to_contain_text("distance from SIMICE")
        expect(page.locator("main")).to_contain_text("4 methods compared")
        expect(page.get_by_text("Comparison (JSON)")).to_be_visible()
        log = page.locator("ol.log")
        expect(log).to_contain_text("IMICE: completed: 2 imputed datasets")  # followed live
        expect(page.locator("main")).to_contain_text("Each method's imputed data")
        shot(page, "12-comparison", folder)
        expect(site.locator("h2").first).to_contain_text("completed", timeout=15_000)

        # Each method is a job of its own, with its downloads and a way back.
        page.click("table.list >> text=CSLMICE")
        expect(page.get_by_text("Imputations (zip of CSVs)")).to_be_visible()
        expect(page.locator("main")).to_contain_text("One method of the comparison")
        page.click("main p.muted >> text=Which method")
        expect(page).to_have_url(job_url)

        narrow = context.new_page()  # the coefficient tables scroll inside their panel
        narrow.set_viewport_size({"width": 400, "height": 800})
        narrow.goto(job_url)
        overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the comparison page is {overflow}px wider than a narrow window"
        narrow.close()
    finally:
        portal.process.stop()
