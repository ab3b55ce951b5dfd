"""JSON API: the algorithm registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from federation.errors import InputError
from portal_central import algorithms_store as store
from portal_central.deps import AdminUser, CurrentUser, StateDep
from portal_central.errors import NotFound
from portal_central.intake import read_upload
from portal_common.uploads import multipart_schema

router = APIRouter(prefix="/api/algorithms", tags=["algorithms"])


class VersionOut(BaseModel):
    name: str
    version: str
    description: str
    digest: str
    builtin: bool
    retired: bool
    uploaded_at: datetime
    uploaded_by: str | None
    multiple_targets: bool
    target_types: list[str]
    parameters: dict[str, Any]

    @classmethod
    def of(cls, info: store.VersionInfo) -> VersionOut:
        caps = info.algorithm.capabilities
        return cls(
            name=info.name,
            version=info.version,
            description=info.description,
            digest=info.digest,
            builtin=info.builtin,
            retired=info.retired,
            uploaded_at=info.uploaded_at,
            uploaded_by=info.uploaded_by,
            multiple_targets=caps.multiple_targets,
            target_types=list(caps.target_types),
            parameters=dict(info.algorithm.schema),
        )


@router.get("")
def list_algorithms(user: CurrentUser, state: StateDep) -> list[VersionOut]:
    """Every version of every algorithm, retired ones included (flagged)."""
    with state.database.session() as session:
        return [VersionOut.of(i) for i in store.versions(session=session, registry=state.registry)]


@router.post(
    "",
    status_code=201,
    openapi_extra=multipart_schema(
        central="<Name>Central.py", remote="<Name>Remote.py", params="params.json"
    ),
)
async def upload(request: Request, admin: AdminUser, state: StateDep) -> VersionOut:
    """Upload an algorithm or a new version (multipart fields central, remote, params: the files
    <Name>Central.py, <Name>Remote.py, params.json); it is validated and run once before it is
    stored. Read after the token is checked, in memory, within FIP_CENTRAL_MAX_FORM_BYTES."""
    algorithm = await store.validate_upload_async(await read_upload(request), state.registry)

    def keep() -> VersionOut:
        with state.database.session() as session:
            store.store(
                session=session, registry=state.registry, algorithm=algorithm, uploader=admin
            )
            info = store.current(
                session=session,
                registry=state.registry,
                name=algorithm.name,
                version=algorithm.version,
            )
        return VersionOut.of(info)

    return await run_in_threadpool(keep)


@router.get("/{name}/{version}/files/{file_name}", response_class=PlainTextResponse)
def file(name: str, version: str, file_name: str, user: CurrentUser, state: StateDep) -> str:
    """One file of a version, as text (sites fetch the remote half this way)."""
    try:
        algorithm = state.registry.get(name, version)
    except InputError as error:  # an unknown algorithm or version
        raise NotFound(str(error)) from None
    if file_name not in algorithm.files:
        raise NotFound(
            f"{name} {version} has no file '{file_name}'; its files: {', '.join(algorithm.files)}"
        )
    return algorithm.files[file_name].decode()
