"""The site portal's JSON API (under /api, documented at /docs)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from federation.errors import InputError
from federation.job import target_to_wire
from federation.policy import Policy
from portal_common.uploads import file_part, multipart_schema
from portal_site.jobs import LocalJob, SiteError
from portal_site.local_auth import SESSION_SECONDS, TooSoon
from portal_site.pages import OpenSite, Site, connection, csv_upload, save_settings, set_policy

bearer = HTTPBearer(
    auto_error=False,
    description="A local access token: POST the site portal's own password to /api/local/token.",
)
router = APIRouter(prefix="/api", tags=["site"], dependencies=[Depends(bearer)])
local = APIRouter(prefix="/api/local", tags=["local sign-in"])


class LocalPassword(BaseModel):
    password: str


class LocalToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@local.post("/token", response_model=LocalToken)
async def local_token(body: LocalPassword, site: OpenSite) -> Response:
    """Exchange the site portal's own (local) password for a bearer token for this API.
    Wrong passwords make the next try wait longer (429 with Retry-After)."""
    try:
        await site.auth.verify(body.password)
    except TooSoon as error:
        return JSONResponse(
            {"detail": error.message, "field": "password"},
            status_code=429,
            headers={"Retry-After": str(error.retry_after)},
        )
    except SiteError as error:
        return JSONResponse(
            {"detail": error.message, "field": "password"}, status_code=error.status
        )
    session = site.auth.open("api")
    return JSONResponse(
        LocalToken(access_token=session.token, expires_in=SESSION_SECONDS).model_dump()
    )


@local.post("/sign-out", status_code=204, dependencies=[Depends(bearer)])
def local_sign_out(request: Request, site: Site) -> None:
    """End this token's (or this browser's) local session."""
    site.auth.close(request.state.local_session.token)


class SettingsIn(BaseModel):
    central_url: str
    site_id: str
    ca_file: str = ""


class SignIn(BaseModel):
    username: str
    password: str


class StatusOut(BaseModel):
    status: str
    detail: str
    site_id: str
    central_url: str
    username: str
    signed_in: bool


class JobOut(BaseModel):
    id: str
    name: str
    state: str
    message: str
    algorithm: str
    version: str
    digest: str
    columns: list[str]
    targets: list[dict[str, Any]]
    parameters: dict[str, Any]
    data_loaded: bool
    rows: int | None
    code_trusted: bool | None
    started: bool
    progress: float
    key_fingerprints: dict[str, str]
    """Secure aggregation: every site's public key fingerprint as central relayed it."""

    @classmethod
    def of(cls, job: LocalJob, *, trusted: bool | None = None) -> JobOut:
        info = job.info
        return cls(
            id=job.job_id,
            name=info.name,
            state=info.state.value,
            message=info.message,
            algorithm=info.algorithm,
            version=info.version,
            digest=info.digest,
            columns=list(info.columns),
            targets=[target_to_wire(t) for t in info.targets],
            parameters=dict(info.parameters),
            data_loaded=job.table is not None,
            rows=job.table.rows if job.table is not None else None,
            code_trusted=trusted,
            started=job.started,
            progress=job.progress,
            key_fingerprints=job.fingerprints,
        )


class LedgerOut(BaseModel):
    at: datetime
    job_id: str
    kind: str
    shapes: list[Any]
    rows: int
    bytes: int
    note: str


def _status(site: Site) -> StatusOut:
    config = site.store.config()
    live = connection(site)
    return StatusOut(
        status=live["status"],
        detail=live["detail"],
        site_id=config.site_id,
        central_url=config.central_url,
        username=config.username,
        signed_in=bool(config.refresh_token),
    )


@router.post("/settings")
async def settings(body: SettingsIn, site: Site) -> StatusOut:
    """Where central is: its URL, this site's site_id, and optionally central's CA file."""
    save_settings(site, central_url=body.central_url, site_id=body.site_id, ca_file=body.ca_file)
    return _status(site)


@router.post("/sign-in")
async def sign_in(body: SignIn, site: Site) -> StatusOut:
    """Exchange the password for tokens at central (the password is not stored)."""
    await site.worker.sign_in(body.username.strip(), body.password)
    return _status(site)


@router.get("/status")
def status(site: Site) -> StatusOut:
    return _status(site)


class PolicyIn(BaseModel):
    """A preset by name, or the rules themselves (``federation.policy.Policy``)."""

    preset: str | None = None
    rules: dict[str, Any] | None = None


@router.get("/policy")
def get_policy(site: Site) -> dict[str, Any]:
    """This site's disclosure policy: what it answers, checked before anything is sent."""
    return site.jobs.policy.summary()


@router.put("/policy")
async def put_policy(body: PolicyIn, site: Site) -> dict[str, Any]:
    """Set the policy from a preset (``datashield``, ``vantage6-glm``, ``nvflare``,
    ``default``) or from rules; a bad rule is a 422 naming it."""
    try:
        if body.preset is not None:
            policy = Policy.preset_named(body.preset)
        else:
            policy = Policy.from_mapping({**(body.rules or {}), "preset": "custom"})
    except InputError as error:
        raise SiteError(str(error), status=422, field="policy") from None
    await set_policy(site, policy)
    return policy.summary()


@router.get("/jobs")
async def jobs(site: Site) -> list[JobOut]:
    return [JobOut.of(j) for j in await site.jobs.refresh()]


@router.get("/jobs/{job_id}")
async def job(job_id: str, site: Site) -> JobOut:
    local = await site.jobs.load(job_id)
    codes = await site.jobs.remote_codes(local)
    return JobOut.of(local, trusted=all(code.approved for code in codes))


@router.post(
    "/jobs/{job_id}/data",
    dependencies=[Depends(csv_upload)],
    openapi_extra=multipart_schema(file="this site's CSV for the job"),
)
async def data(request: Request, job_id: str, site: Site) -> JobOut:
    """This site's CSV for the job (multipart field ``file``), parsed as it arrives, checked
    and held in memory only, never on disk; read after the token is checked and the job
    found. Up to FIP_SITE_MAX_UPLOAD_BYTES (413 when over)."""
    local = await site.jobs.load(job_id)
    async with file_part(request, "file") as file:
        if file is None:
            raise SiteError("choose this site's CSV file", status=422, field="file")
        await site.jobs.upload(local, file.chunks, file.filename)
    return JobOut.of(local)


@router.post("/jobs/{job_id}/start")
async def start(job_id: str, site: Site) -> JobOut:
    """Mark this site ready; central starts the job when every participant is."""
    local = await site.jobs.load(job_id)
    await site.jobs.start(local)
    return JobOut.of(local, trusted=True)


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, site: Site) -> JobOut:
    """Cancel the job everywhere; this site's data is dropped."""
    local = await site.jobs.load(job_id)
    await site.jobs.cancel(local)
    return JobOut.of(local)


@router.post("/algorithms/{digest}/approve")
async def approve(digest: str, site: Site) -> dict[str, str]:
    """Approve the remote half with this digest (it must be the code of one of this site's jobs,
    or of a method of one of its comparisons, downloaded from central and checked against the
    digest)."""
    for local in await site.jobs.refresh():
        if digest == local.digest or any(m.digest == digest for m in local.methods):
            for code in await site.jobs.remote_codes(local):
                if code.digest == digest:
                    await asyncio.to_thread(
                        site.store.approve, digest=code.digest, name=code.name, version=code.version
                    )
                    return {"digest": code.digest, "name": code.name, "version": code.version}
    raise SiteError(f"no job of this site uses an algorithm with digest {digest}", status=404)


@router.get("/ledger")
def ledger(site: Site) -> list[LedgerOut]:
    """Every message this site sent: kind, shapes, rows behind it, bytes. No values."""
    return [
        LedgerOut(
            at=e.at,
            job_id=e.job_id,
            kind=e.kind,
            shapes=e.shapes,
            rows=e.rows,
            bytes=e.bytes,
            note=e.note,
        )
        for e in site.store.ledger()
    ]
