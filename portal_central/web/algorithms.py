"""Algorithm pages: the list, one algorithm's versions and code, uploads and retiring."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from federation.registry import Algorithm, file_names
from portal_central import algorithms_store as store
from portal_central.deps import AdminUser, CurrentUser, StateDep
from portal_central.errors import NotFound, PortalError
from portal_central.intake import read_upload
from portal_central.models import User
from portal_central.paths import RowId
from portal_central.state import CentralState
from portal_common.web import render

router = APIRouter(prefix="/algorithms", include_in_schema=False)


def _grouped(infos: list[store.VersionInfo]) -> dict[str, list[store.VersionInfo]]:
    grouped: dict[str, list[store.VersionInfo]] = {}
    for info in infos:
        grouped.setdefault(info.name, []).append(info)
    return grouped


def _list_page(
    request: Request, state: StateDep, *, error: str = "", field: str = "", status: int = 200
) -> Response:
    with state.database.session() as session:
        infos = store.versions(session=session, registry=state.registry)
    return render(
        request,
        "central/algorithms/list.html",
        {"algorithms": _grouped(infos), "error": error, "error_field": field, "nav": "algorithms"},
        status_code=status,
    )


@router.get("", response_class=HTMLResponse)
def algorithms_page(request: Request, user: CurrentUser, state: StateDep) -> Response:
    return _list_page(request, state)


@router.post("", response_class=HTMLResponse)
async def upload(request: Request, admin: AdminUser, state: StateDep) -> Response:
    """Upload a new algorithm or a new version: validated, run once, then stored. The form
    (three small files) is read in memory after the admin and the CSRF token are checked."""
    try:
        algorithm = await store.validate_upload_async(await read_upload(request), state.registry)
        await run_in_threadpool(_keep, state, algorithm, admin)
    except PortalError as error:
        return await run_in_threadpool(
            _list_page,
            request,
            state,
            error=error.message,
            field=error.field or "",
            status=error.status_code,
        )
    return RedirectResponse(
        f"/algorithms/{algorithm.name}?version={algorithm.version}", status_code=303
    )


def _keep(state: CentralState, algorithm: Algorithm, admin: User) -> None:
    with state.database.session() as session:
        store.store(session=session, registry=state.registry, algorithm=algorithm, uploader=admin)


@router.get("/{name}", response_class=HTMLResponse)
def algorithm_page(
    request: Request, name: str, user: CurrentUser, state: StateDep, version: str | None = None
) -> Response:
    with state.database.session() as session:
        infos = store.versions(session=session, registry=state.registry, name=name)
    if not infos:
        raise NotFound(f"no algorithm named '{name}'")
    shown = next((i for i in infos if i.version == version), infos[-1])
    central, remote, params = file_names(name)
    files = shown.algorithm.files
    return render(
        request,
        "central/algorithms/detail.html",
        {
            "name": name,
            "versions": infos,
            "shown": shown,
            "code": [(f, files[f].decode()) for f in (central, remote, params)],
            "nav": "algorithms",
        },
    )


@router.post("/{name}/versions/{version_id}/{action}", response_class=HTMLResponse)
def retire(
    request: Request, name: str, version_id: RowId, action: str, admin: AdminUser, state: StateDep
) -> Response:
    if action not in ("retire", "restore"):
        raise NotFound(f"no action '{action}'")
    with state.database.session() as session:
        row = store.retire(
            session=session, name=name, version_id=version_id, retired=action == "retire"
        )
        version = row.version
    return RedirectResponse(f"/algorithms/{name}?version={version}", status_code=303)
