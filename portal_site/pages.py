"""The site portal's pages: settings and sign-in, jobs, a job, approvals, the ledger."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from federation.errors import InputError
from federation.job import JobEvent
from federation.policy import PRESETS, Policy
from portal_common.uploads import allow_body, file_part, form_of
from portal_common.web import is_htmx, markup, render
from portal_site.central import CentralError
from portal_site.jobs import LocalJob, RemoteCode, SiteError
from portal_site.local_auth import CSRF_FIELD, CSRF_HEADER, SESSION_SECONDS, SignInRequired
from portal_site.state import SiteState
from portal_site.worker import CONNECTION

router = APIRouter(include_in_schema=False)
SITE_ID = re.compile(r"^[a-z0-9]{4,16}$")
JOB = "site/job.html"
"""A job's page; its blocks ``job_status`` and ``log_lines`` are also its HTMX fragments and
its live events, rendered from the same context (``job_context``)."""


_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


async def get_site(request: Request) -> SiteState:
    """The site's state, for a caller signed in locally (a browser session or a bearer token).

    A browser's state-changing request also carries its session's CSRF token: htmx sends the
    ``X-CSRF-Token`` header, plain forms a ``csrf_token`` field (a file upload without htmx:
    in the query string, so that the body is not read before the upload route reads it).
    """
    state: SiteState = request.app.state.site
    auth = state.auth
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        session = auth.find(header[7:].strip(), "api")
        if session is None:
            raise SignInRequired(
                "the local access token is not valid or has expired: "
                "POST the local password to /api/local/token for a new one",
                first_run=not auth.has_password(),
            )
        csrf = ""
    else:
        cookie = request.cookies.get(auth.cookie)
        found = auth.find(cookie, "browser") if cookie else None
        if found is None:
            first_run = not auth.has_password()
            raise SignInRequired(
                "choose a local password first" if first_run else "sign in with the local password",
                first_run=first_run,
            )
        session, csrf = found, found.csrf
        if request.method in _UNSAFE and not await _csrf_ok(request, found.csrf):
            raise SiteError(
                "the form has expired or did not come from this portal; reload the page",
                status=403,
            )
    request.state.local_session = session
    request.state.page_context = {
        "portal": "site",
        "connection_seen": state.jobs.broker.count(CONNECTION),  # before it is read
        "connection": connection(state),
        "csrf_token": csrf,
        "local_user": True,
    }
    return state


async def _csrf_ok(request: Request, expected: str) -> bool:
    token = request.headers.get(CSRF_HEADER)
    kind = request.headers.get("content-type", "")
    if token is None and kind.startswith("application/x-www-form-urlencoded"):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if token is None:
        token = request.query_params.get(CSRF_FIELD)
    return token is not None and secrets.compare_digest(token, expected)


Site = Annotated[SiteState, Depends(get_site)]


def open_site(request: Request) -> SiteState:
    """The site's state for the pages that come before the local sign-in."""
    state: SiteState = request.app.state.site
    request.state.page_context = {"portal": "site", "local_user": False}
    return state


OpenSite = Annotated[SiteState, Depends(open_site)]


def connection(state: SiteState) -> dict[str, str]:
    config = state.store.config()
    return {"status": state.worker.status, "detail": state.worker.detail, "site_id": config.site_id}


@router.get("/", include_in_schema=False)
def home(site: Site) -> Response:
    signed_in = bool(site.store.config().refresh_token)
    return RedirectResponse("/jobs" if signed_in else "/settings", status_code=303)


# ------------------------------------------------------------------ the local password


def _next(value: str) -> str:
    """Where to go after signing in: a path of this portal only."""
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"


def _local_page(
    request: Request, *, choosing: bool, next_path: str, error: str = "", status: int = 200
) -> Response:
    return render(
        request,
        "site/local.html",
        {
            "choosing": choosing,
            "next": _next(next_path),
            "errors": {"password": error} if error else {},
            "title": "Choose a local password" if choosing else "Sign in to this site portal",
        },
        status_code=status,
    )


def _signed_in(request: Request, site: SiteState, next_path: str) -> Response:
    """A new session (a new token: none chosen before signing in is ever kept); the
    browser's earlier one, if any, ends."""
    earlier = request.cookies.get(site.auth.cookie)
    if earlier:
        site.auth.close(earlier)
    session = site.auth.open("browser")
    response = RedirectResponse(_next(next_path), status_code=303)
    response.set_cookie(
        site.auth.cookie,
        session.token,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/local/sign-in", response_class=HTMLResponse, include_in_schema=False)
def local_sign_in_page(request: Request, site: OpenSite, next: str = "/") -> Response:
    if not site.auth.has_password():
        return RedirectResponse(f"/local/password?next={_next(next)}", status_code=303)
    return _local_page(request, choosing=False, next_path=next)


@router.post("/local/sign-in", response_class=HTMLResponse, include_in_schema=False)
async def local_sign_in(
    request: Request,
    site: OpenSite,
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        await site.auth.verify(password)
    except SiteError as error:
        response = _local_page(
            request, choosing=False, next_path=next, error=error.message, status=error.status
        )
        if error.status == 429:
            response.headers["Retry-After"] = str(getattr(error, "retry_after", 1))
        return response
    return _signed_in(request, site, next)


@router.get("/local/password", response_class=HTMLResponse, include_in_schema=False)
def local_password_page(request: Request, site: OpenSite, next: str = "/") -> Response:
    if site.auth.has_password():
        return RedirectResponse(f"/local/sign-in?next={_next(next)}", status_code=303)
    return _local_page(request, choosing=True, next_path=next)


@router.post("/local/password", response_class=HTMLResponse, include_in_schema=False)
async def local_password(
    request: Request,
    site: OpenSite,
    password: Annotated[str, Form()] = "",
    repeat: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        if password != repeat:
            raise SiteError("the two passwords differ", status=422, field="password")
        await asyncio.to_thread(site.auth.choose, password)
    except SiteError as error:
        if error.status == 409:  # set meanwhile (another tab, the environment): sign in
            return RedirectResponse(f"/local/sign-in?next={_next(next)}", status_code=303)
        return _local_page(
            request, choosing=True, next_path=next, error=error.message, status=error.status
        )
    return _signed_in(request, site, next)


@router.post("/local/sign-out", include_in_schema=False)
def local_sign_out(request: Request, site: Site) -> Response:
    site.auth.close(request.state.local_session.token)
    response = RedirectResponse("/local/sign-in", status_code=303)
    response.delete_cookie(site.auth.cookie, path="/", httponly=True, samesite="strict")
    return response


# ------------------------------------------------------------------ settings and sign-in


def _settings_page(
    request: Request, site: SiteState, *, typed: dict[str, str] | None = None, **context: Any
) -> Response:
    """The settings page; ``typed`` shows what the user entered instead of what is stored."""
    values = {"errors": {}, "notice": "", "username": "", "nav": "settings", **context}
    status = values.pop("status", 200)
    stored = site.store.config()
    fields = ("central_url", "site_id", "ca_file", "username", "refresh_token")
    config = SimpleNamespace(**{name: getattr(stored, name) for name in fields})
    for name, value in (typed or {}).items():
        setattr(config, name, value)
    policy = values.pop("policy_typed", None) or policy_form(site.jobs.policy)
    return render(
        request,
        "site/settings.html",
        {"config": config, "policy": policy, "presets": list(PRESETS), **values},
        status_code=status,
    )


POLICY_FIELDS = (
    "min_rows",
    "max_params_per_row",
    "min_level_count",
    "min_sites",
    "max_newton_rounds",
    "allowed_columns",
    "denied_columns",
)


def policy_form(policy: Policy) -> dict[str, str]:
    """The policy as the form shows it: every rule as text."""
    summary = policy.summary()
    shown = {name: str(summary[name]) for name in POLICY_FIELDS}
    for name in ("allowed_columns", "denied_columns"):
        shown[name] = ", ".join(summary[name])
    shown["preset"] = policy.preset
    return shown


def parse_policy(form: Mapping[str, str]) -> Policy:
    """A policy from the form's text; a ``SiteError`` names the field at fault."""
    values: dict[str, Any] = {}
    for name in ("min_rows", "min_level_count", "min_sites", "max_newton_rounds"):
        text = str(form.get(name, "")).strip()
        if not text.isdigit():
            raise SiteError(f"{name} must be a whole number of 0 or more", status=422, field=name)
        values[name] = int(text)
    try:
        values["max_params_per_row"] = float(str(form.get("max_params_per_row", "")))
    except ValueError:
        raise SiteError(
            "max_params_per_row must be a number in (0, 1], e.g. 0.33",
            status=422,
            field="max_params_per_row",
        ) from None
    for name in ("allowed_columns", "denied_columns"):
        values[name] = str(form.get(name, ""))
    try:
        return Policy.from_mapping({**values, "preset": "custom"})
    except InputError as error:
        message = str(error).removeprefix("policy: ")
        field = next((f for f in POLICY_FIELDS if message.startswith(f)), "policy")
        raise SiteError(message, status=422, field=field) from None


async def set_policy(site: SiteState, policy: Policy) -> None:
    """Store the site's policy; central hears of it at once when connected."""
    await asyncio.to_thread(site.store.set_policy, policy)
    await site.worker.send_policy()


@router.post("/settings/policy", response_class=HTMLResponse)
async def post_policy(request: Request, site: Site) -> Response:
    """The site's disclosure policy: a preset, or every rule set by hand."""
    form = await form_of(request)
    typed = {name: form.text(name) for name in (*POLICY_FIELDS, "preset")}
    try:
        if typed["preset"] and typed["preset"] != "custom":
            policy = Policy.preset_named(typed["preset"])
        else:
            policy = parse_policy(typed)
    except InputError as error:
        return _settings_page(request, site, errors={"preset": str(error)}, status=422)
    except SiteError as error:
        return _settings_page(
            request,
            site,
            policy_typed={**typed, "preset": "custom"},
            errors={error.field or "policy": error.message},
            status=error.status,
        )
    await set_policy(site, policy)
    return _settings_page(
        request, site, notice="Policy saved; it applies to the next job that opens."
    )


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, site: Site) -> Response:
    return _settings_page(request, site)


def save_settings(site: SiteState, *, central_url: str, site_id: str, ca_file: str) -> None:
    """Check and store where central is; the old sign-in is dropped when anything changes."""
    central_url, site_id, ca_file = (
        central_url.strip().rstrip("/"),
        site_id.strip().lower(),
        ca_file.strip(),
    )
    if not central_url.startswith(("https://", "http://")):
        raise SiteError("the central URL starts with https://", status=422, field="central_url")
    if not SITE_ID.match(site_id):
        raise SiteError(
            "a site_id is 4 to 16 lower-case letters and digits", status=422, field="site_id"
        )
    if ca_file:
        if not Path(ca_file).is_file():
            raise SiteError(f"no file at {ca_file}", status=422, field="ca_file")
    old = site.store.config()
    changed = (old.central_url, old.site_id, old.ca_file) != (central_url, site_id, ca_file)
    site.store.update_config(central_url=central_url, site_id=site_id, ca_file=ca_file)
    if changed:
        site.worker.settings_changed()


@router.post("/settings", response_class=HTMLResponse)
async def post_settings(
    request: Request,
    site: Site,
    central_url: Annotated[str, Form()] = "",
    site_id: Annotated[str, Form()] = "",
    ca_file: Annotated[str, Form()] = "",
) -> Response:
    try:
        save_settings(site, central_url=central_url, site_id=site_id, ca_file=ca_file)
    except SiteError as error:
        return _settings_page(
            request,
            site,
            typed={"central_url": central_url, "site_id": site_id, "ca_file": ca_file},
            errors={error.field or "settings": error.message},
            status=error.status,
        )
    return _settings_page(
        request, site, notice="Saved. Now sign in with your username and password."
    )


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    site: Site,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    try:
        await site.worker.sign_in(username.strip(), password)
    except CentralError as error:
        return _settings_page(
            request,
            site,
            errors={"sign_in": str(error)},
            username=username,
            status=error.status or 400,
        )
    return RedirectResponse("/jobs", status_code=303)


@router.post("/sign-out")
async def sign_out(site: Site) -> Response:
    await site.worker.sign_out()
    return RedirectResponse("/settings", status_code=303)


# ------------------------------------------------------------------ jobs


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request, site: Site) -> Response:
    error = ""
    try:
        jobs = await site.jobs.refresh()
    except SiteError as problem:
        jobs, error = site.jobs.known(), problem.message
    return render(request, "site/jobs.html", {"jobs": jobs, "error": error, "nav": "jobs"})


async def status_values(site: SiteState, job: LocalJob) -> dict[str, Any]:
    """What the job's status block shows: one source for the page and its live updates (the
    templates are strict: a value missing here breaks the live stream, not just a line)."""
    codes: list[RemoteCode] = []
    code_error = ""
    try:
        codes = await site.jobs.remote_codes(job)
    except SiteError as error:
        code_error = error.message
    return {
        "job": job,
        "codes": codes,
        "trusted": bool(codes) and all(c.approved for c in codes),
        "code_error": code_error,
        "forecast": site.jobs.forecast(job),
        "error": "",
    }


async def job_context(site: SiteState, job_id: str, **extra: Any) -> dict[str, Any]:
    seen = site.jobs.broker.count(job_id)  # before the job is read: see Broker.count
    job = await site.jobs.load(job_id)
    return {**await status_values(site, job), "nav": "jobs", "events_seen": seen, **extra}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, site: Site) -> Response:
    return render(request, JOB, await job_context(site, job_id))


async def _job_action(request: Request, site: SiteState, job_id: str, action: Any) -> Response:
    try:
        job = await site.jobs.load(job_id)
        await action(job)
        context = await job_context(site, job_id)
        status = 200
    except SiteError as error:
        context = await job_context(site, job_id, error=error.message)
        status = error.status
    if is_htmx(request):
        return render(request, JOB, context, block="job_status", status_code=status)
    if status >= 400:
        return render(request, JOB, context, status_code=status)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def csv_upload(request: Request) -> None:
    """A route's dependency that lets its body be this site's CSV (up to
    FIP_SITE_MAX_UPLOAD_BYTES instead of the form limit). Nothing is read here."""
    settings = request.app.state.site.settings
    allow_body(request, settings.max_upload_bytes, "FIP_SITE_MAX_UPLOAD_BYTES")


@router.post("/jobs/{job_id}/data", response_class=HTMLResponse, dependencies=[Depends(csv_upload)])
async def upload(request: Request, job_id: str, site: Site) -> Response:
    """The CSV is read as it arrives (in memory, never spooled to disk) only once the caller
    is signed in and the job is found."""

    async def act(job: LocalJob) -> None:
        async with file_part(request, "file") as file:
            if file is None:
                raise SiteError("choose this site's CSV file", status=422, field="file")
            await site.jobs.upload(job, file.chunks, file.filename)

    return await _job_action(request, site, job_id, act)


@router.post("/jobs/{job_id}/approve", response_class=HTMLResponse)
async def approve(request: Request, job_id: str, site: Site) -> Response:
    async def act(job: LocalJob) -> None:
        for code in await site.jobs.remote_codes(job):
            if not code.approved:
                await asyncio.to_thread(
                    site.store.approve, digest=code.digest, name=code.name, version=code.version
                )

    return await _job_action(request, site, job_id, act)


@router.post("/jobs/{job_id}/start", response_class=HTMLResponse)
async def start(request: Request, job_id: str, site: Site) -> Response:
    return await _job_action(request, site, job_id, site.jobs.start)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel(request: Request, job_id: str, site: Site) -> Response:
    return await _job_action(request, site, job_id, site.jobs.cancel)


@router.get("/jobs/{job_id}/events")
async def job_events(
    request: Request, job_id: str, site: Site, seen: int | None = None
) -> EventSourceResponse:
    """The job page's live blocks: as they are now if they may have changed since the page was
    rendered (``seen``: the broker's count then; or while a reconnecting browser was away),
    then at each change."""
    job = site.jobs.get(job_id) or await site.jobs.load(job_id)

    async def fragment(name: str) -> ServerSentEvent:
        if name == "log":
            block, context = "log_lines", {"job": job}
        else:
            block, context = "job_status", await status_values(site, job)
        return ServerSentEvent(event=name, data=markup(request, JOB, context, block=block))

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with site.jobs.subscribe(job) as queue:
            if site.jobs.broker.missed_since(job.job_id, seen):
                yield await fragment("status")
                yield await fragment("log")
            while True:
                event = await queue.get()
                is_log = isinstance(event, JobEvent) and event.kind != "progress"
                yield await fragment("log" if is_log else "status")

    return EventSourceResponse(stream(), ping=15)


@router.get("/events/status")
async def status_events(
    request: Request, site: Site, seen: int | None = None
) -> EventSourceResponse:
    """The connection badge, live: as it is now if it may have changed since the page was
    rendered (``seen``: the broker's count then), and at each change."""
    broker = site.jobs.broker

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with broker.subscribe(CONNECTION) as queue:
            missed = broker.missed_since(CONNECTION, seen)
            while True:
                if missed:
                    badge = markup(request, "site/_status.html", {"connection": connection(site)})
                    yield ServerSentEvent(event="status", data=badge)
                await queue.get()
                missed = True

    return EventSourceResponse(stream(), ping=15)


# ------------------------------------------------------------------ approvals and ledger


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, site: Site) -> Response:
    return render(
        request, "site/approvals.html", {"approvals": site.store.approvals(), "nav": "approvals"}
    )


@router.post("/approvals/{digest}/withdraw")
def withdraw(digest: str, site: Site) -> Response:
    site.store.withdraw(digest)
    return RedirectResponse("/approvals", status_code=303)


@router.get("/ledger", response_class=HTMLResponse)
def ledger_page(request: Request, site: Site) -> Response:
    return render(request, "site/ledger.html", {"entries": site.store.ledger(), "nav": "ledger"})
