"""JSON API: jobs, central's data for them, cancelling, and their results."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from algorithms import methods
from federation.errors import InputError
from portal_central.accounts.status import Role
from portal_central.deps import AdminUser, CurrentUser, StateDep, data_upload
from portal_central.errors import NotFound
from portal_central.intake import take_central_data
from portal_central.jobs import analysis, service
from portal_central.jobs.messages import for_viewer
from portal_central.jobs.results import result_file
from portal_central.models import Job, User
from portal_central.paths import RowId
from portal_central.state import CentralState
from portal_common.uploads import multipart_schema
from portal_common.web import attachment

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


class TargetIn(BaseModel):
    column: str = Field(description="the column's name in the header")
    type: str = Field(
        description="the target's method: "
        + "; ".join(f"{m.name} ({m.label}: {m.when})" for m in methods.METHODS.values())
    )

    levels: list[float | str] | None = Field(
        default=None,
        description="a categorical or ordinal target's levels: the integer codes of the "
        "column, or its text levels (a text target, logistic too: two), in order (a site whose "
        "column holds another value refuses)",
    )

    @field_validator("type")
    @classmethod
    def _known_method(cls, value: str) -> str:
        try:
            return methods.get(value, field="type").name
        except InputError as error:
            raise ValueError(str(error)) from None


class AnalysisIn(BaseModel):
    model: str = Field(
        description="the analysis model as in R, e.g. 'y ~ x1 + x2'; `backquote` names that are "
        "not plain; text columns and factor(column) become treatment dummies"
    )
    family: Literal["linear", "logistic"] = "linear"


class ColumnsIn(BaseModel):
    factors: dict[str, list[str]] = Field(
        default_factory=dict,
        description="factor columns (categorical predictors, text or integer codes) and their "
        "levels in order, the first the reference; each is one 0/1 column per other level in "
        "every model; a site whose column holds another value refuses",
    )
    carried: list[str] = Field(
        default_factory=list,
        description="columns never modelled (IDs, dates, free text): ignored at sites, written "
        "back unchanged in central's imputed files",
    )
    predictors: dict[str, list[str]] = Field(
        default_factory=dict,
        description="target -> the columns its model uses (mice's predictorMatrix); default: "
        "every predictor and factor column and every other target",
    )


class JobIn(BaseModel):
    name: str
    description: str = ""
    algorithm: str
    version: str | None = None
    columns: list[str] = Field(description="the header of the job's CSV files, in order")
    participants: list[str] = Field(default_factory=list, description="site_ids of remote sites")
    targets: list[TargetIn]
    imputations: int | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    roles: ColumnsIn | None = Field(
        default=None,
        description="the roles of the columns that are not targets (default: every one a "
        "numeric predictor of every target)",
    )
    compare: list[str] = Field(
        default_factory=list,
        description="other methods to run beside the algorithm (a comparison job: one child job "
        "per method, the pooled exact SIMI or SIMICE added as the reference)",
    )
    analysis: AnalysisIn | None = Field(
        default=None,
        description="a model to fit on each imputed dataset when the job completes, pooled by "
        "Rubin's rules into the report's 'analysis' (GET /api/jobs/{id}/analysis)",
    )


class ParticipantOut(BaseModel):
    site_id: str
    institution: str


class MethodOut(BaseModel):
    """One method of a comparison: its child job (the newest attempt)."""

    id: int
    algorithm: str
    version: str
    digest: str
    state: str
    message: str
    participants: list[str]


class JobOut(BaseModel):
    id: int
    name: str
    description: str
    state: str
    message: str
    algorithm: str
    version: str
    digest: str
    columns: list[str]
    targets: list[dict[str, Any]]
    roles: dict[str, Any] = Field(
        default_factory=dict,
        description="the roles of the columns that are not targets: 'factors' (column -> its "
        "levels, the first the reference), 'carried' (columns never modelled, written back "
        "unchanged) and 'predictors' (target -> the columns its model uses); empty parts left out",
    )
    parameters: dict[str, Any]
    seed: int
    participants: list[ParticipantOut]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    results_available: bool
    parent: int | None = Field(description="the comparison this job is a method of")
    methods: list[MethodOut] = Field(description="a comparison's methods (empty for other jobs)")

    @classmethod
    def of(cls, job: Job, *, results: bool, viewer: User | None = None) -> JobOut:
        """The job as ``viewer`` may see it (a site reads only its own part of a failure)."""
        site_id = viewer.site_id if viewer is not None and viewer.role == Role.SITE else None
        return cls(
            id=job.id,
            name=job.name,
            description=job.description,
            state=job.state,
            message=for_viewer(job.message, state=job.state, site_id=site_id),
            algorithm=job.algorithm.name,
            version=job.algorithm.version,
            digest=job.algorithm.digest,
            columns=list(job.columns),
            targets=list(job.targets),
            roles=dict(job.roles or {}),
            parameters=dict(job.params),
            seed=job.seed,
            participants=[
                ParticipantOut(site_id=p.user.site_id or "", institution=p.user.institution)
                for p in job.participants
            ],
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            results_available=results,
            parent=job.parent_id,
            methods=[
                MethodOut(
                    id=child.id,
                    algorithm=child.algorithm.name,
                    version=child.algorithm.version,
                    digest=child.algorithm.digest,
                    state=child.state,
                    message=for_viewer(child.message, state=child.state, site_id=site_id),
                    participants=[p.user.site_id or "" for p in child.participants],
                )
                for child in job.methods
            ],
        )


@router.post("", status_code=201)
def create(body: JobIn, admin: AdminUser, state: StateDep) -> JobOut:
    """Create a job; targets are named by column, the algorithm is called with 1-based indices."""
    params = dict(body.parameters)
    if body.imputations is not None:
        params["imputations"] = body.imputations
    if body.analysis is not None:
        analysis.check_model(body.analysis.model, body.analysis.family, body.columns)
    with state.database.session() as session:
        job = service.create_job(
            session=session,
            registry=state.registry,
            creator=admin,
            name=body.name,
            description=body.description,
            algorithm=body.algorithm,
            version=body.version,
            columns=body.columns,
            targets=[
                service.TargetChoice(column=t.column, type=t.type, levels=tuple(t.levels or ()))
                for t in body.targets
            ],
            params=params,
            participants=body.participants,
            seed=body.seed,
            compare=body.compare,
            roles=None
            if body.roles is None
            else service.RolesChoice(
                factors={k: tuple(v) for k, v in body.roles.factors.items()},
                carried=tuple(body.roles.carried),
                predictors={k: tuple(v) for k, v in body.roles.predictors.items()},
            ),
        )
        if body.analysis is not None:
            analysis.request_analysis(state.store, job, body.analysis.model, body.analysis.family)
        job_id = job.id
    return _out(state, job_id, admin)


@router.get("")
def list_jobs(user: CurrentUser, state: StateDep) -> list[JobOut]:
    """Admins see every job; a site user sees the jobs its site is in."""
    with state.database.session() as session:
        return [
            JobOut.of(j, results=state.store.has_results(j.id), viewer=user)
            for j in service.list_jobs(session=session, user=user)
        ]


@router.get("/{job_id}")
def get(job_id: RowId, user: CurrentUser, state: StateDep) -> JobOut:
    return _out(state, job_id, user)


@router.post(
    "/{job_id}/data",
    dependencies=[Depends(data_upload)],
    openapi_extra=multipart_schema(file="central's CSV for the job"),
)
async def upload_data(request: Request, job_id: RowId, admin: AdminUser, state: StateDep) -> JobOut:
    """Central's own CSV (multipart field ``file``), held in memory, never on disk; its header
    must equal the job's columns, and its targets are checked as a site's are (0/1 for binary
    ones, not all missing). Up to FIP_CENTRAL_MAX_UPLOAD_BYTES (413 when over)."""
    error = await take_central_data(request, state, job_id, admin)
    if error is not None:
        raise error
    return await run_in_threadpool(_out, state, job_id, admin)


class CancelIn(BaseModel):
    reason: str = Field(
        default="",
        description=f"why, in at most {service.MAX_CANCEL_REASON} characters: shown at central "
        "and to the sites (a sentence for people, never data)",
    )


@router.post("/{job_id}/cancel")
async def cancel(
    job_id: RowId, admin: AdminUser, state: StateDep, body: CancelIn | None = None
) -> JobOut:
    """Cancel a job everywhere, with an optional reason the sites are shown too."""
    reason = service.cancel_reason(body.reason if body is not None else "")
    await run_in_threadpool(_out, state, job_id, admin)  # 404 unless the job is there
    await state.orchestrator.cancel(job_id, note=reason)
    return await run_in_threadpool(_out, state, job_id, admin)


class EventOut(BaseModel):
    at: float = Field(description="seconds since the epoch")
    kind: str
    site: str | None
    message: str


@router.get("/{job_id}/events")
def events(job_id: RowId, user: CurrentUser, state: StateDep) -> list[EventOut]:
    """The job's event log, oldest first (messages and counts, never data; kept across
    restarts of central; progress is not logged)."""
    with state.database.session() as session:
        service.get_job(session=session, job_id=job_id, user=user)
    return [
        EventOut(at=e.at, kind=e.kind, site=e.site, message=e.message)
        for e in state.logs.events(job_id)
    ]


@router.get("/{job_id}/definition")
def definition(job_id: RowId, admin: AdminUser, state: StateDep) -> dict[str, Any]:
    """A new job like this one: its definition as a body for POST /api/jobs (name, algorithm,
    targets, parameters, seed, sites, a comparison's methods); never any data."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        return service.definition_of(job)


@router.post("/{job_id}/run-again", status_code=201)
def run_again(job_id: RowId, admin: AdminUser, state: StateDep) -> JobOut:
    """Run a failed, cancelled or interrupted job again: a new job with the same definition and
    seed, whose message names the old one (409 for a job in another state). Central and the
    sites upload their data again: each drops it when a job ends."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        again = service.run_again(session=session, job=job, creator=admin)
        again_id = again.id
    return _out(state, again_id, admin)


@router.delete("/{job_id}", status_code=204, response_class=Response)
def delete(job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """Delete a job's record, its events and any results in memory (a comparison with its
    methods); 409 while it is waiting, running or partial: cancel it first."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        deleted = service.delete_job(session=session, job=job)
    state.orchestrator.forget(deleted)
    return Response(status_code=204)


@router.post("/{job_id}/retry")
async def retry(job_id: RowId, admin: AdminUser, state: StateDep) -> JobOut:
    """Run a comparison's failed or cancelled method again (a new child job); the comparison."""
    await run_in_threadpool(_out, state, job_id, admin)  # 404 unless the job is there
    parent_id = await state.orchestrator.retry(job_id)
    return await run_in_threadpool(_out, state, parent_id, admin)


@router.get("/{job_id}/comparison")
def comparison(job_id: RowId, admin: AdminUser, state: StateDep) -> dict[str, Any]:
    """A comparison's side-by-side report: per target each method's coefficients and distance
    from the reference, and per method its round trips, bytes and seconds."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        if not job.is_comparison:
            raise NotFound(f"job {job_id} is not a comparison")
        return state.orchestrator.comparison(job)


@router.get("/{job_id}/result", response_class=Response)
def result(
    job_id: RowId,
    admin: AdminUser,
    state: StateDep,
    format: Literal["zip", "long", "chains", "methods"] = "zip",
) -> Response:
    """The imputed datasets: a zip of CSVs (with original.csv, methods.csv, chains.csv and
    fip_mids.R, which builds an R mice mids from them), or one long CSV (R mice's layout);
    ``chains``: the chain means and variances of a chained job (target, chain, cycle, mean,
    variance); ``methods``: each target's method, mice's name for it, and how R holds it."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
    file = result_file(store=state.store, job=job, format=format)
    return attachment(file.body, filename=file.filename, media_type=file.media_type)


@router.get("/{job_id}/report", response_class=Response)
def report(job_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """The job's report.json (fits, sites' rows, traffic)."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
    file = result_file(store=state.store, job=job, format="report")
    return attachment(file.body, filename=file.filename, media_type=file.media_type)


@router.post("/{job_id}/analysis")
def analyse(job_id: RowId, body: AnalysisIn, admin: AdminUser, state: StateDep) -> dict[str, Any]:
    """Fit a model on each of the completed job's imputed datasets (in memory at central) and
    pool by Rubin's rules, as R mice's pool() and summary(pool(fit), conf.int = TRUE): one row
    per term with estimate, std.error, statistic, df, p.value, conf.low, conf.high, ubar, b, t,
    dfcom, riv, lambda, fmi and m; with von Hippel's count of imputations needed. It joins the
    job's report. 422 names a column the model cannot find or a fit that fails."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        return analysis.analyse_job(
            store=state.store, session=session, job=job, model=body.model, family=body.family
        )


@router.get("/{job_id}/analysis")
def get_analysis(job_id: RowId, admin: AdminUser, state: StateDep) -> dict[str, Any]:
    """The job's pooled analysis (404 when none was named); it outlives the datasets."""
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=admin)
        return analysis.stored_analysis(session, job)


def _out(state: CentralState, job_id: int, user: User) -> JobOut:
    with state.database.session() as session:
        job = service.get_job(session=session, job_id=job_id, user=user)
        return JobOut.of(job, results=state.store.has_results(job_id), viewer=user)
