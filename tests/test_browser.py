"""A person's journeys through the pages, in a real browser (Debian's chromium via Playwright).

Central and a site portal run as processes over TLS; the browser registers a site, the admin
approves it and reads the mail in the outbox, the site user configures the site portal, the
admin uploads a new algorithm version and builds a job in the wizard by ticking two columns by
name, the site uploads its data, approves the code and starts, and both pages follow the job
to completion before the admin downloads the results. Screenshots of each page go to a folder;
with FIP_UPDATE_SCREENSHOTS=1 they replace the ones the README shows (docs/screenshots).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from federation.registry import Registry, file_names
from tests.federation_env import (
    Federation,
    SitePortal,
    connect_site,
    start_federation,
    start_site_portal,
)
from tests.site_fixtures import LOCAL_PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "Browser-pass-2026"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "docs" / "examples" / "MEANDRAW"


@pytest.fixture(scope="module")
def outbox_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Central with no SMTP server (mail goes to the outbox) and no site yet."""
    yield from start_federation(
        tmp_path_factory.mktemp("browser"), site_names=(), smtp_server=False
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
    made.set_default_timeout(20_000)
    requested: list[str] = []
    made.on("request", lambda request: requested.append(request.url))
    refused: list[str] = []  # what the pages' Content-Security-Policy blocked
    made.on(
        "page",
        lambda page: page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        ),
    )
    yield made
    made.close()
    assert not refused, f"the CSP blocked what a page loads: {refused}"
    outside = {urlsplit(url).hostname for url in requested} - {"127.0.0.1", None}
    assert not outside, f"pages asked other hosts: {outside}"


def shot(page: Page, name: str, folder: Path) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    if os.environ.get("FIP_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path


def _sign_in(page: Page, fed: Federation, username: str, password: str) -> None:
    page.goto(f"{fed.central_url}/sign-in")
    page.fill("#f-username", username)
    page.fill("#f-password", password)
    page.click("button.primary")


def sign_in_to_site_portal(page: Page, portal: SitePortal, path: str = "/jobs") -> None:
    """Open a page of a site portal: it asks for its local password first."""
    page.goto(f"{portal.url}{path}")
    expect(page.locator("h1")).to_contain_text("Sign in to this site portal")
    page.fill("#f-password", portal.local_password)
    page.click("main button:has-text('Sign in')")
    expect(page).to_have_url(f"{portal.url}{path}")


def _uploaded_algorithm(tmp: Path) -> Path:
    """MEANDRAW, the documented example: a self-contained pair to upload (a copy of a built-in
    imports the built-ins' modules, which a site's sandbox does not offer)."""
    folder = tmp / "MEANDRAW"
    shutil.copytree(EXAMPLE_DIR, folder)
    return folder


def test_the_whole_journey_in_a_browser(
    outbox_network: Federation,
    context: BrowserContext,
    demo_files: dict[str, Path],
    folder: Path,
    tmp_path: Path,
) -> None:
    fed = outbox_network
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # A new user registers; a weak password is refused and what was typed stays.
    page.goto(f"{fed.central_url}/register")
    page.fill("#f-username", "east")
    page.fill("#f-email", "east@hospital.example")
    page.fill("#f-institution", "East Hospital")
    page.fill("#f-password", "short")
    page.click("main button:has-text('Register')")
    expect(page.locator("#e-password")).to_contain_text("at least 10 characters")
    expect(page.locator("#f-institution")).to_have_value("East Hospital")
    page.fill("#f-password", PASSWORD)
    page.click("main button:has-text('Register')")
    expect(page.locator("main")).to_contain_text("waiting for approval")
    shot(page, "01-registered", folder)

    # The admin: a wrong password first, then in; approves the pending site.
    _sign_in(page, fed, "admin", "not-the-password")
    expect(page.locator(".alert-error")).to_contain_text("wrong username or password")
    expect(page.locator("#f-username")).to_have_value("admin")
    _sign_in(page, fed, "admin", "Central-key-2026")
    page.goto(f"{fed.central_url}/admin/users")
    row = page.locator("tr", has_text="east")
    shot(page, "02-pending-sites", folder)
    row.get_by_role("button", name="Approve").click()
    expect(page.locator("tr", has_text="east")).to_contain_text("approved")
    site_id = page.locator("tr", has_text="east").locator("code").inner_text()
    assert re.fullmatch(r"[a-z0-9]{6}", site_id)

    # The mail waits in the outbox, with the site_id and the central URL.
    page.click("text=Outbox")
    mail = page.locator("article.mail").first
    expect(mail).to_contain_text(site_id)
    expect(mail).to_contain_text(fed.central_url)
    shot(page, "03-outbox", folder)

    # The site user opens the new site portal: first a local password of its own (a short one
    # is refused), then the settings, and signs in to central.
    portal: SitePortal = start_site_portal(fed, "east", site_id, first_run=True)
    try:
        site = context.new_page()
        site.on("dialog", lambda dialog: dialog.accept())
        site.goto(f"{portal.url}/settings")
        expect(site.locator("h1")).to_contain_text("Choose a local password")
        site.fill("#f-password", "short")
        site.fill("#f-repeat", "short")
        site.click("text=Set password and sign in")
        expect(site.locator("#e-password")).to_contain_text("at least 10 characters")
        site.fill("#f-password", LOCAL_PASSWORD)
        site.fill("#f-repeat", LOCAL_PASSWORD)
        site.click("text=Set password and sign in")
        expect(site).to_have_url(f"{portal.url}/settings")
        site.fill("#f-central_url", fed.central_url)
        site.fill("#f-site_id", site_id)
        site.fill("#f-ca_file", str(fed.ca_file))
        site.click("text=Save")
        expect(site.locator(".alert-ok")).to_contain_text("Saved")
        site.fill("#f-username", "east")
        site.fill("#f-password", PASSWORD)
        site.click("button:has-text('Sign in')")
        site.goto(f"{portal.url}/settings")
        expect(site.locator("#connection").first).to_contain_text("connected", timeout=15_000)
        shot(site, "04-site-settings", folder)

        # The admin uploads an algorithm of the site's own: the documented example.
        package = _uploaded_algorithm(tmp_path)
        central_file, remote_file, params_file = file_names("MEANDRAW")
        page.goto(f"{fed.central_url}/algorithms")
        page.set_input_files("#f-central", str(package / central_file))
        page.set_input_files("#f-remote", str(package / remote_file))
        page.set_input_files("#f-params", str(package / params_file))
        page.click("text=Upload and check")
        expect(page.locator("h1")).to_contain_text("MEANDRAW 1.0.0")
        shot(page, "05-algorithm", folder)

        # The wizard: algorithm, header read from a CSV, two columns ticked by name, the site.
        page.goto(f"{fed.central_url}/jobs/new")
        page.check("input[name=algorithm][value=MEANDRAW]")
        expect(page.locator("#p-min_rows")).to_be_visible()
        page.set_input_files("#f-header_file", str(demo_files["central"]))
        page.check("input[name=target][value=bmi]")
        page.fill("#p-imputations", "3")
        page.check(f"input[name=participants][value='{site_id}']")
        page.fill("#f-name", "Browser journey")
        shot(page, "06-wizard", folder)
        page.get_by_role("button", name="Create job").click()
        expect(page.locator("h1")).to_contain_text("Browser journey")
        job_url = page.url

        # The site: a broken CSV is refused in the page, then the right one; approve; start.
        job_id = job_url.rsplit("/", 1)[1]
        site.goto(f"{portal.url}/jobs/{job_id}")
        broken = tmp_path / "broken.csv"
        broken.write_text("age,sex\n1,2\n")
        site.set_input_files("#site-file", str(broken))
        site.click("button:has-text('Upload')")
        expect(site.locator(".alert-error")).to_contain_text("columns differ")
        site.set_input_files("#site-file", str(demo_files["north"]))
        site.click("button:has-text('Upload')")
        expect(site.locator("ol.checklist")).to_contain_text("held in memory only")
        expect(site.locator("pre.code").first).to_contain_text("def prepare")
        expect(site.locator("pre.code").nth(1)).to_contain_text('"replies"')
        site.click("text=Approve this code")
        site.click("button:has-text('Start')")
        expect(site.locator("ol.checklist")).to_contain_text("This site is ready")
        shot(site, "07-site-job", folder)

        # Central's data starts the job; both pages follow it live to completion.
        page.goto(job_url)
        page.set_input_files("#central-file", str(demo_files["central"]))
        page.click("text=Upload and start")
        expect(page.get_by_text("Imputations (zip of CSVs)")).to_be_visible(timeout=60_000)
        expect(page.locator("ol.log")).to_contain_text("fitted 'bmi'")
        shot(page, "08-job-completed", folder)
        expect(site.locator("h2").first).to_contain_text("completed", timeout=15_000)
        shot(site, "09-site-completed", folder)

        narrow = context.new_page()  # a narrow window: everything fits, no sideways scroll
        narrow.set_viewport_size({"width": 400, "height": 800})
        narrow.goto(job_url)
        overflow = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the job page is {overflow}px wider than a narrow window"
        shot(narrow, "11-narrow-window", folder)
        narrow.close()

        with page.expect_download() as download:
            page.click("text=Imputations (zip of CSVs)")
        saved = tmp_path / "imputations.zip"
        download.value.save_as(saved)
        assert saved.read_bytes()[:2] == b"PK"

        page.goto(f"{fed.central_url}/docs")  # the API documentation, offline too
        expect(page.locator(".swagger-ui").first).to_be_visible()
        expect(page.get_by_text("/api/jobs").first).to_be_visible()

        site.goto(f"{portal.url}/ledger")
        expect(site.locator("table.list")).to_contain_text("moments")
        shot(site, "10-site-ledger", folder)
    finally:
        portal.process.stop()


def test_cancel_on_the_site_page_shows_cancelled_on_both(
    outbox_network: Federation, context: BrowserContext, demo_files: dict[str, Path]
) -> None:
    fed = outbox_network
    with fed.admin() as admin:
        registered = httpx.post(
            f"{fed.central_url}/api/register",
            verify=fed.tls(),
            json={
                "username": "west",
                "email": "west@hospital.example",
                "institution": "West Hospital",
                "password": PASSWORD,
            },
        ).json()
        site_id = admin.post(f"/api/users/{registered['id']}/approve").json()["site_id"]
    portal = start_site_portal(fed, "west", site_id)
    try:
        portal.name = "west"
        connect_site(fed, portal, password=PASSWORD)
        with fed.admin() as admin:
            job_id = admin.post(
                "/api/jobs",
                json={
                    "name": "to be cancelled",
                    "algorithm": "SIMICE",
                    "version": Registry.with_builtins()
                    .get("SIMICE")
                    .version,  # built-in: no approval
                    "columns": demo_files["central"].read_text().splitlines()[0].split(","),
                    "participants": [site_id],
                    "targets": [
                        {"column": "bmi", "type": "gaussian"},
                        {"column": "smoker", "type": "logistic"},
                    ],
                    "parameters": {"iteration_before_first_imputation": 1000},
                    "imputations": 1,
                },
            ).json()["id"]
        site = context.new_page()
        site.on("dialog", lambda dialog: dialog.accept())
        sign_in_to_site_portal(site, portal, f"/jobs/{job_id}")
        site.set_input_files("#site-file", str(demo_files["north"]))
        site.click("button:has-text('Upload')")
        expect(site.locator("ol.checklist")).to_contain_text("held in memory only")
        site.click("button:has-text('Start')")
        expect(site.locator("ol.checklist")).to_contain_text("This site is ready")
        with fed.admin() as admin:
            admin.post(
                f"/api/jobs/{job_id}/data",
                files={"file": ("central.csv", demo_files["central"].read_bytes())},
            ).raise_for_status()
        expect(site.locator("h2").first).to_contain_text("running", timeout=15_000)

        site.click("button:has-text('Cancel job')")

        expect(site.locator("h2").first).to_contain_text("cancelled", timeout=5_000)
        page = context.new_page()
        _sign_in(page, fed, "admin", "Central-key-2026")
        page.goto(f"{fed.central_url}/jobs/{job_id}")
        expect(page.locator("h2").first).to_contain_text("cancelled")
        expect(page.locator("main")).to_contain_text(f"cancelled at site {site_id}")
    finally:
        portal.process.stop()


def test_the_admins_accounts_page_fits_1280_px_and_an_approved_row_leaves_pending(
    outbox_network: Federation, context: BrowserContext, folder: Path
) -> None:
    fed = outbox_network
    long = "University Hospital of the Northern Region, Department of Clinical Epidemiology"
    with httpx.Client(base_url=fed.central_url, verify=fed.tls(), timeout=30) as client:
        for name in ("wide-one", "wide-two", "wide-three"):
            response = client.post(
                "/api/register",
                json={
                    "username": name,
                    "email": f"{name}.data-protection-office@very-long-hospital-name.example.org",
                    "institution": f"{long} ({name})",
                    "password": PASSWORD,
                },
            )
            assert response.status_code == 201, response.text
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    _sign_in(page, fed, "admin", "Central-key-2026")

    expect(page).to_have_url(f"{fed.central_url}/jobs")
    expect(page.locator("header .who")).to_have_text("admin")
    expect(page.locator("#pending-badge")).to_have_text(re.compile(r"[1-9]\d*"))
    pending = int(page.locator("#pending-badge").inner_text())
    page.goto(f"{fed.central_url}/admin/users?status=pending")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the Sites & users page is {width} px wide in a 1280 px window"

    row = page.locator("tr", has_text="wide-one")
    row.get_by_role("button", name="Approve").click()

    moved = page.locator("tr.moved", has_text="wide-one")
    expect(moved).to_contain_text("moved to Approved")
    expect(moved.get_by_role("button")).to_have_count(0)
    expect(page.locator("#count-pending")).to_have_text(str(pending - 1))
    expect(page.locator("#pending-badge")).to_have_text(str(pending - 1))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"with the approval's notice the page is {width} px wide"
    page.locator("tr", has_text="wide-two").locator("summary", has_text="More").click()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"with a row's More open the page is {width} px wide"
    shot(page, "13-sites-and-users", folder)
    page.goto(f"{fed.central_url}/admin/users?status=approved")
    expect(page.locator("tr", has_text="wide-one")).to_contain_text("approved")
