"""Job pages: the list, the wizard (steps swapped in by HTMX) and a job's page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from federation import roles
from federation.compare import REFERENCE_CHAINED, REFERENCE_SINGLE
from federation.errors import InputError
from federation.job import JobEvent
from federation.outputs import report_json
from federation.registry import Algorithm
from portal_central import algorithms_store as store
from portal_central.accounts.status import AccountStatus, Role
from portal_central.deps import AdminUser, CurrentUser, StateDep, data_upload
from portal_central.errors import FieldInvalid, NotFound, PortalError
from portal_central.intake import take_central_data
from portal_central.jobs import analysis, checks, reports, service
from portal_central.jobs.header import (
    ColumnSummary,
    HeaderReader,
    pattern_view,
    read_pattern_view,
)
from portal_central.jobs.results import Format, result_file
from portal_central.jobs.status import JobState
from portal_central.jobs.store import Run
from portal_central.models import Job, User
from portal_central.paths import MAX_ID, RowId
from portal_central.state import CentralState
from portal_common.eventlog import grouped
from portal_common.uploads import (
    Event,
    Field,
    FileData,
    FileStart,
    Form,
    MultipartStream,
    form_of,
)
from portal_common.web import attachment, is_htmx, markup, render

router = APIRouter(prefix="/jobs", include_in_schema=False)
_in_thread = run_in_threadpool
"""Database work and parsing from an async route: in a worker thread, never on the loop."""
EXACT = (REFERENCE_SINGLE, REFERENCE_CHAINED)
DETAIL = "central/jobs/detail.html"
"""The job's page; its blocks ``job_status``, ``job_progress`` and ``log_lines`` are also its
HTMX fragments and its live events, rendered from the same context builders."""


@router.get("", response_class=HTMLResponse)
def jobs_page(request: Request, user: CurrentUser, state: StateDep) -> Response:
    with state.database.session() as session:
        jobs = service.list_jobs(session=session, user=user)
    return render(request, "central/jobs/list.html", {"jobs": jobs, "nav": "jobs"})


@router.get("/new", response_class=HTMLResponse)
def new_job_page(
    request: Request,
    admin: AdminUser,
    state: StateDep,
    like: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """The wizard; ``like`` prefills it from a job ("New job like this"): its algorithm,
    targets, parameters, seed, sites and name, never its data (a job holds none)."""
    if like is None:
        return _wizard(request, state, _empty_form())
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=like, user=admin)
        definition = service.definition_of(job)
    return _wizard(request, state, _form_of(definition))


def _form_of(definition: dict[str, Any]) -> dict[str, Any]:
    """The wizard's values for a job's definition: its columns without counts (no file read)."""
    return {
        **_empty_form(),
        "algorithm": definition["algorithm"],
        "name": definition["name"],
        "description": definition["description"],
        "seed": str(definition["seed"]),
        "columns": [ColumnSummary(name, 0, 0, False) for name in definition["columns"]],
        "targets": {t["column"] for t in definition["targets"]},
        "types": {t["column"]: t["type"] for t in definition["targets"]},
        "roles": {
            **dict.fromkeys(definition.get("roles", {}).get("factors", {}), roles.FACTOR),
            **dict.fromkeys(definition.get("roles", {}).get("carried", []), roles.CARRIED),
        },
        "levels": {
            **{
                t["column"]: ",".join(map(str, t["levels"]))
                for t in definition["targets"]
                if t.get("levels")
            },
            **{
                name: ",".join(levels)
                for name, levels in definition.get("roles", {}).get("factors", {}).items()
            },
        },
        "predictors": {
            name: ",".join(listed)
            for name, listed in definition.get("roles", {}).get("predictors", {}).items()
        },
        "params": {name: _as_field(value) for name, value in definition["parameters"].items()},
        "participants": definition["participants"],
        "compare": definition["compare"],
    }


def _as_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@router.get("/new/parameters", response_class=HTMLResponse)
def parameters_step(
    request: Request, admin: AdminUser, state: StateDep, algorithm: str
) -> Response:
    """The parameter fields of one algorithm, generated from its schema (an HTMX fragment)."""
    chosen = _algorithm(state, algorithm)
    return render(
        request,
        "central/jobs/new.html",
        {
            "fields": _param_fields(chosen, {}),
            "errors": {},
            "chosen": chosen,
            "compare_options": _compare_options(state, chosen),
            "values": {"compare": []},
        },
        block="parameters",
    )


@router.post("/new/columns", response_class=HTMLResponse, dependencies=[Depends(data_upload)])
async def columns_step(request: Request, admin: AdminUser, state: StateDep) -> Response:
    """Read an uploaded CSV's header and counts as it streams in (a block of lines at a time,
    then dropped), list its columns."""
    fields: dict[str, str] = {}
    reader: HeaderReader | None = None
    columns: list[ColumnSummary] = []
    error = ""
    current = ""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        fields = dict((await form_of(request)).items())  # a form without a file
    async for event in _events(request):
        if isinstance(event, Field):
            fields[event.name] = event.value
        elif isinstance(event, FileStart):
            current = event.name
            if event.name == "header_file" and event.filename and reader is None:
                reader = HeaderReader(label=event.filename)
        elif current == "header_file" and reader is not None and not error and not columns:
            try:
                if isinstance(event, FileData):
                    await _in_thread(reader.feed, event.data)
                else:
                    columns = await _in_thread(reader.finish)
            except InputError as refused:
                error = str(refused)  # the rest of the body is read and dropped
    chosen = (
        await _in_thread(_algorithm, state, fields["algorithm"])
        if fields.get("algorithm")
        else None
    )
    context: dict[str, Any] = {
        "chosen": chosen,
        "targets": set(),
        "types": {},
        "levels": {},
        "predictors": {},
        "role_names": roles.ROLES,
        "errors": {},
    }
    if reader is None:
        error = "choose a CSV file to read its header"
    if error:
        context.update(columns=[], errors={"columns": error})
        return render(request, "central/jobs/new.html", context, block="columns", status_code=422)
    context.update(
        columns=columns,
        columns_json=json.dumps([asdict(c) for c in columns]),
        roles={c.name: c.role for c in columns},
    )
    if reader is not None:
        context.update(pattern_view(reader))
    return render(request, "central/jobs/new.html", context, block="columns")


async def _events(request: Request) -> AsyncIterator[Event]:
    """The multipart body's parts as they arrive; nothing for a form of another kind."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async for event in MultipartStream.of(request).events():
            yield event


@router.post("", response_class=HTMLResponse)
async def create_job(request: Request, admin: AdminUser, state: StateDep) -> Response:
    form = await form_of(request)
    values = _read_form(form)
    fix = form.text("fix")
    if fix:  # a fix the wizard offered for a refused job: apply it, show the form again
        return await _in_thread(_wizard, request, state, _apply_fix(values, fix))
    return await _in_thread(_create_job, request, state, admin, values)


def _create_job(
    request: Request, state: CentralState, admin: User, values: dict[str, Any]
) -> Response:
    try:
        chosen = _algorithm(state, values["algorithm"]) if values["algorithm"] else None
        if chosen is None:
            raise FieldInvalid("choose an algorithm", field="algorithm")
        params = _parse_params(chosen, values["params"])
        seed = _parse_seed(values["seed"])
        with state.database.session() as session:
            job = service.create_job(
                session=session,
                registry=state.registry,
                creator=admin,
                name=values["name"],
                description=values["description"],
                algorithm=chosen.name,
                version=None,
                columns=[c.name for c in values["columns"]],
                targets=[
                    service.TargetChoice(
                        column=c.name,
                        type=values["types"].get(c.name, c.guess),
                        levels=_listed(values["levels"].get(c.name)) or c.text_levels or c.levels,
                    )
                    for c in values["columns"]
                    if c.name in values["targets"]
                ],
                params=params,
                participants=values["participants"],
                seed=seed,
                compare=values["compare"],
                header=values["columns"],
                roles=_roles_of(values),
            )
            job_id = job.id
    except PortalError as error:
        return _wizard(
            request,
            state,
            values,
            errors={error.field or "form": error.message},
            problems=error.problems if isinstance(error, checks.JobRefused) else [],
            status=error.status_code,
        )
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: RowId, user: CurrentUser, state: StateDep) -> Response:
    return render(request, DETAIL, {**_job_context(state, job_id, user), "nav": "jobs"})


def gone_reason(state: CentralState, job: Job, run: Run) -> str:
    """Why a completed job's results are not in memory, as the page says it."""
    if run.purged:
        return run.purged
    if job.finished_at is not None and job.finished_at.timestamp() < state.started_at:
        return "not kept: central restarted"
    return "discarded from memory"


def _job_context(state: CentralState, job_id: int, user: User, **extra: Any) -> dict[str, Any]:
    seen = state.broker.count(job_id)  # before the job is read: see Broker.count
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=user)
        missing = state.orchestrator.missing_sites(job) if job.state == JobState.WAITING else []
        site_status = state.orchestrator.site_status(job)
        comparison = state.orchestrator.comparison(job) if job.is_comparison else None
        report = (
            reports.load(session=session, job_ids=[job.id]).get(job.id, {})
            if job.state == JobState.COMPLETED and not job.is_comparison
            else {}
        )
        methods = list(job.methods)
        policies = {
            site: policy.foresee(columns=job.columns, participants=1 + len(job.participants))
            for site in site_status
            if (policy := state.connections.policies.get(site)) is not None
        }
        lost = [
            (p.user.institution or site, left)
            for p in job.participants
            if job.state == JobState.RUNNING
            and (left := state.connections.grace_left(site := p.user.site_id or "")) is not None
        ]
    run = state.store.view(job_id)
    return {
        "results_gone": gone_reason(state, job, run),
        **_log_values(state, job),
        "method_results": any(state.store.has_results(c.id) for c in methods),
        "lost": lost,
        "grace_seconds": state.connections.grace_seconds,
        "comparison": comparison,
        "pooled_analysis": report.get("analysis"),
        "report": report,
        **_progress_values(state, job_id),
        "missing": missing,
        "site_status": site_status,
        "last_seen": {site: state.connections.last_seen(site) for site in site_status},
        "policies": policies,
        "has_data": run.data is not None,
        "error": "",
        "events_seen": seen,
        **extra,
    }


def _progress_values(state: CentralState, job_id: int) -> dict[str, Any]:
    """What the progress bar (block ``job_progress``) shows: part of the page's context."""
    return {"run": state.store.view(job_id)}


def _log_values(state: CentralState, job: Job) -> dict[str, Any]:
    """What the event log (block ``log_lines``) shows: part of the page's context."""
    return {"job": job, "log": grouped(state.logs.events(job.id))}


def _live_log_values(state: CentralState, job_id: int, user: User) -> dict[str, Any]:
    return _log_values(state, _visible_job(state, job_id, user))


@router.post("/{job_id}/data", response_class=HTMLResponse, dependencies=[Depends(data_upload)])
async def upload_data(
    request: Request, job_id: RowId, admin: AdminUser, state: StateDep
) -> Response:
    """Central's own CSV for the job, held in memory; the job starts when every site is ready."""
    error = await take_central_data(request, state, job_id, admin)
    if error is not None:
        return await _in_thread(_error_page, request, state, job_id, admin, error)
    return await _in_thread(_status_or_redirect, request, state, job_id, admin)


@router.post("/{job_id}/retry", response_class=HTMLResponse)
async def retry(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """Run a comparison's failed method again; the comparison's page shows it."""
    job = await _in_thread(_visible_job, state, job_id, admin)
    parent_id = job.parent_id or job.id
    try:
        await state.orchestrator.retry(job_id)
    except PortalError as error:
        return await _in_thread(_error_page, request, state, parent_id, admin, error)
    return await _in_thread(_status_or_redirect, request, state, parent_id, admin)


@router.post("/{job_id}/analysis", response_class=HTMLResponse)
async def analyse(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """The pooled analysis form: fit the model on the completed job's datasets, show the table."""
    fields = dict((await form_of(request)).items())
    model, family = str(fields.get("model", "")).strip(), str(fields.get("family", "linear"))
    return await _in_thread(_analyse, request, state, job_id, admin, model, family)


def _analyse(
    request: Request, state: CentralState, job_id: int, admin: User, model: str, family: str
) -> Response:
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        try:
            analysis.analyse_job(
                store=state.store, session=session, job=job, model=model, family=family
            )
        except PortalError as error:
            return _error_page(request, state, job_id, admin, error)
    return _status_or_redirect(request, state, job_id, admin)


@router.get("/{job_id}/comparison")
def comparison_download(job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """The comparison's side-by-side report as JSON (fits and costs; no data)."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        if not job.is_comparison:
            raise NotFound(f"job {job_id} is not a comparison")
        report = state.orchestrator.comparison(job)
    return Response(
        report_json(report),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-comparison.json"'},
    )


@router.post("/{job_id}/cancel", response_class=HTMLResponse)
async def cancel(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """Cancel a job everywhere, with the reason typed beside the button (shown to the sites)."""
    fields = dict((await form_of(request)).items())
    await _in_thread(_visible_job, state, job_id, admin)
    try:
        reason = service.cancel_reason(str(fields.get("reason", "")))
        await state.orchestrator.cancel(job_id, note=reason)
    except PortalError as error:
        return await _in_thread(_error_page, request, state, job_id, admin, error)
    return await _in_thread(_status_or_redirect, request, state, job_id, admin)


@router.post("/{job_id}/run-again", response_class=HTMLResponse)
def run_again(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """A failed, cancelled or interrupted job as a new job with the same definition and seed;
    its page asks for central's data, and the sites see a new job to Start."""
    try:
        with state.database.session() as session:
            job = service.get_job(session=session, job_id=job_id, user=admin)
            again = service.run_again(session=session, job=job, creator=admin)
            again_id = again.id
    except PortalError as error:
        return _error_page(request, state, job_id, admin, error)
    return _redirect(request, f"/jobs/{again_id}")


@router.post("/{job_id}/delete", response_class=HTMLResponse)
def delete(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """Delete a job that is not waiting, running or partial: its record, events and results."""
    try:
        with state.database.session() as session:
            job = service.get_job(session=session, job_id=job_id, user=admin)
            deleted = service.delete_job(session=session, job=job)
    except PortalError as error:
        return _error_page(request, state, job_id, admin, error)
    state.orchestrator.forget(deleted)
    return _redirect(request, "/jobs")


def _redirect(request: Request, url: str) -> Response:
    """To ``url``: a plain redirect, or for HTMX a full navigation (HX-Redirect)."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _visible_job(state: CentralState, job_id: int, user: User) -> Job:
    """The job if ``user`` may see it, alone (its session closed: read only its columns): a
    live log line of a running job reads it for each viewer."""
    with state.database.session() as session:
        return service.find_job(session=session, job_id=job_id, user=user)


def _error_page(
    request: Request, state: CentralState, job_id: int, user: User, error: PortalError
) -> Response:
    """The job's page (or, for HTMX, its status block) with the error shown where it happened."""
    context = _job_context(state, job_id, user, error=error.message)
    if is_htmx(request):
        return render(
            request,
            DETAIL,
            context,
            block="job_status",
            status_code=error.status_code,
        )
    return render(
        request,
        DETAIL,
        {**context, "nav": "jobs"},
        status_code=error.status_code,
    )


def _status_or_redirect(request: Request, state: CentralState, job_id: int, user: User) -> Response:
    if is_htmx(request):
        return render(
            request,
            DETAIL,
            _job_context(state, job_id, user),
            block="job_status",
        )
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/{job_id}/result")
def download(job_id: RowId, admin: AdminUser, state: StateDep, format: Format = "zip") -> Response:
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
    file = result_file(store=state.store, job=job, format=format)
    return attachment(file.body, filename=file.filename, media_type=file.media_type)


@router.get("/{job_id}/events")
async def events(
    request: Request, job_id: RowId, user: CurrentUser, state: StateDep, seen: int | None = None
) -> EventSourceResponse:
    """Live fragments for the job page: progress, the event log, and the state block; first
    all three as they are now if they may have changed since the page was rendered (``seen``:
    the broker's count then; or while a reconnecting browser was away)."""
    await _in_thread(_visible_job, state, job_id, user)

    async def fragment(name: str) -> ServerSentEvent:
        if name == "progress":
            block, context = "job_progress", _progress_values(state, job_id)
        elif name == "log":
            block, context = "log_lines", await _in_thread(_live_log_values, state, job_id, user)
        else:
            block, context = "job_status", await _in_thread(_job_context, state, job_id, user)
        return ServerSentEvent(event=name, data=markup(request, DETAIL, context, block=block))

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with state.broker.subscribe(job_id) as queue:
            if state.broker.missed_since(job_id, seen):
                for name in ("status", "progress", "log"):
                    yield await fragment(name)
            while True:
                event = await queue.get()
                if isinstance(event, JobEvent):
                    yield await fragment("progress" if event.kind == "progress" else "log")
                else:
                    yield await fragment("status")

    return EventSourceResponse(stream(), ping=15)


def _empty_form() -> dict[str, Any]:
    return {
        "algorithm": "",
        "name": "",
        "description": "",
        "seed": "",
        "columns": [],
        "targets": set(),
        "types": {},
        "roles": {},
        "levels": {},
        "predictors": {},
        "params": {},
        "participants": [],
        "compare": [],
        "pattern": {"pattern": None},
    }


def _apply_fix(values: dict[str, Any], fix: str) -> dict[str, Any]:
    """The form with a fix of ``checks`` applied: ``target:NAME`` ticks a column as a target
    (with its suggested method), ``algorithm:NAME`` chooses another algorithm."""
    kind, _, value = fix.partition(":")
    if kind == "target" and value in {c.name for c in values["columns"]}:
        return {**values, "targets": values["targets"] | {value}}
    if kind == "algorithm" and value:
        return {**values, "algorithm": value}
    return values


def _read_form(form: Form) -> dict[str, Any]:
    text = form.text

    try:
        raw_columns = json.loads(text("columns_json") or "[]")
        columns = [ColumnSummary(**c) for c in raw_columns]
    except (json.JSONDecodeError, TypeError):
        columns = []
    return {
        "algorithm": text("algorithm"),
        "name": text("name"),
        "description": text("description"),
        "seed": text("seed").strip(),
        "columns": columns,
        "targets": set(form.values("target")),
        "types": {k[5:]: v for k, v in form.items() if k.startswith("type:")},
        "roles": {k[5:]: v for k, v in form.items() if k.startswith("role:")},
        "levels": {k[7:]: v for k, v in form.items() if k.startswith("levels:")},
        "predictors": {k[11:]: v for k, v in form.items() if k.startswith("predictors:")},
        "params": {k[6:]: v for k, v in form.items() if k.startswith("param:")},
        "participants": form.values("participants"),
        "compare": form.values("compare"),
        "pattern": read_pattern_view(text("pattern_json"), [c.name for c in columns]),
    }


def _listed(text: str | None) -> tuple[str, ...]:
    """A comma-separated list of a form field (levels, predictors), each entry stripped."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def role_of(column: ColumnSummary, values: dict[str, Any]) -> str:
    """The role of a column in the wizard: the target it is, the user's choice, or the role
    central's header scan proposes (``ColumnSummary.role``)."""
    if column.name in values["targets"]:
        return roles.TARGET
    chosen: str = values.get("roles", {}).get(column.name) or column.role
    return chosen


def _roles_of(values: dict[str, Any]) -> service.RolesChoice:
    """The roles the wizard's form gives the columns that are not targets; a factor's levels
    are the user's, else those central's scan saw."""
    factors: dict[str, tuple[str, ...]] = {}
    carried: list[str] = []
    for column in values["columns"]:
        role = role_of(column, values)
        if role == roles.FACTOR:
            factors[column.name] = _listed(values["levels"].get(column.name)) or (
                column.text_levels or tuple(f"{v:g}" for v in column.levels)
            )
        elif role == roles.CARRIED:
            carried.append(column.name)
    predictors = {
        target: _listed(text)
        for target, text in values["predictors"].items()
        if target in values["targets"] and _listed(text)
    }
    return service.RolesChoice(factors=factors, carried=tuple(carried), predictors=predictors)


def _wizard(
    request: Request,
    state: CentralState,
    values: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    problems: list[checks.Problem] | None = None,
    status: int = 200,
) -> Response:
    with state.database.session() as session:
        infos = store.versions(session=session, registry=state.registry)
        sites = list(
            session.scalars(
                select(User)
                .where(User.role == Role.SITE, User.status == AccountStatus.APPROVED)
                .order_by(User.username)
            )
        )
    newest: dict[str, store.VersionInfo] = {}
    for info in infos:
        if not info.retired:
            newest[info.name] = info
    chosen = newest[values["algorithm"]].algorithm if values["algorithm"] in newest else None
    # The pooled exact methods first: the ones to use unless there is a reason not to.
    listed = sorted(newest.values(), key=lambda i: (i.name not in EXACT, i.name))
    return render(
        request,
        "central/jobs/new.html",
        {
            "algorithms": listed,
            "chosen": chosen,
            "fields": _param_fields(chosen, values["params"]) if chosen else [],
            "compare_options": _compare_options(state, chosen) if chosen else [],
            "sites": sites,
            "online": {s.site_id: state.connections.online(s.site_id or "") for s in sites},
            "values": values,
            "columns": values["columns"],
            "columns_json": json.dumps([asdict(c) for c in values["columns"]]),
            "targets": values["targets"],
            "types": values["types"],
            "roles": {c.name: role_of(c, values) for c in values["columns"]},
            "role_names": roles.ROLES,
            "levels": values["levels"],
            "predictors": values["predictors"],
            "errors": errors or {},
            "problems": problems or [],
            "nav": "jobs",
            **values["pattern"],
        },
        status_code=status,
    )


def _compare_options(state: CentralState, chosen: Algorithm) -> list[store.VersionInfo]:
    """Methods a job of ``chosen`` can be compared with: the others of its kind."""
    with state.database.session() as session:
        infos = store.versions(session=session, registry=state.registry)
    newest = {i.name: i for i in infos if not i.retired}
    kind = chosen.capabilities.multiple_targets
    return [
        info
        for name, info in sorted(newest.items())
        if name != chosen.name and info.algorithm.capabilities.multiple_targets == kind
    ]


def _algorithm(state: CentralState, name: str) -> Algorithm:
    with state.database.session() as session:
        return store.current(session=session, registry=state.registry, name=name).algorithm


_TRUE = ("true", "on", "1", "yes")


def _param_fields(algorithm: Algorithm | None, given: dict[str, str]) -> list[dict[str, Any]]:
    """Form fields from the algorithm's JSON Schema: label, input type (a list of choices for
    an ``enum``), bounds, default, hint (``description``, in plain words) and the maths behind
    it (``maths``, shown on request)."""
    if algorithm is None:
        return []
    fields = []
    for name, prop in algorithm.schema.get("properties", {}).items():
        kinds = prop.get("type", "string")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        number = "integer" in kinds or "number" in kinds
        default = prop.get("default")
        value = given.get(name, "" if default is None else str(default))
        fields.append(
            {
                "name": name,
                "label": prop.get("title", name),
                "hint": prop.get("description", ""),
                "maths": prop.get("maths", ""),
                "input": (
                    "checkbox"
                    if "boolean" in kinds
                    else "select"
                    if "enum" in prop
                    else "number"
                    if number
                    else "text"
                ),
                "options": [str(option) for option in prop.get("enum", [])],
                "checked": value.lower() in _TRUE,
                "step": "1" if "integer" in kinds else "any",
                "min": prop.get("minimum"),
                "max": prop.get("maximum"),
                "value": given.get(name, "" if default is None else str(default)),
                "optional": "null" in kinds,
            }
        )
    return fields


def _parse_params(algorithm: Algorithm, raw: dict[str, str]) -> dict[str, Any]:
    """Typed values from the form; empty fields take the default."""
    params: dict[str, Any] = {}
    for name, prop in algorithm.schema.get("properties", {}).items():
        text = raw.get(name, "").strip()
        if not text:
            continue
        kinds = prop.get("type", "string")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        try:
            if "boolean" in kinds:
                params[name] = text.lower() in _TRUE
            elif "integer" in kinds:
                params[name] = int(text)
            elif "number" in kinds:
                params[name] = float(text)
            else:
                params[name] = text
        except ValueError:
            kind = "a whole number" if "integer" in kinds else "a number"
            raise FieldInvalid(
                f"{prop.get('title', name)} must be {kind}", field=f"param_{name}"
            ) from None
    return params


def _parse_seed(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) >= 2**32:
        raise FieldInvalid(
            "the seed is a whole number from 0 to 4294967295, or empty", field="seed"
        )
    return int(text)
