"""Admin pages: registrations and accounts, and the mail outbox."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from portal_central.accounts import service, throttle
from portal_central.accounts.actions import apply_decision, delete_account, send_reset_link
from portal_central.accounts.status import Role
from portal_central.deps import AdminUser, StateDep
from portal_central.errors import PortalError
from portal_central.models import OutboxMail, User
from portal_central.paths import RowId
from portal_central.state import CentralState
from portal_common.web import is_htmx, render

_in_thread = run_in_threadpool
"""Database work from an async route: in a worker thread, never on the loop."""
router = APIRouter(prefix="/admin", include_in_schema=False)
log = logging.getLogger(__name__)
ACTIONS = {
    status: [a for a, moves in service.STATUS_TRANSITIONS.items() if status in moves]
    for status in service.STATUSES
}


@router.get("/users", response_class=HTMLResponse)
def users_page(
    request: Request, admin: AdminUser, state: StateDep, status: str = "pending"
) -> Response:
    with state.database.session() as session:
        users = service.list_users(session=session, status=status)
        failures = throttle.failures(session, [u.username for u in users])
        counts = _counts(session)
    return render(
        request,
        "central/admin/users.html",
        {
            "users": [u for u in users if u.role == Role.SITE],
            "status": status,
            "statuses": service.STATUSES,
            "counts": counts,
            "actions": ACTIONS,
            "central_url": state.settings.url,
            "presence": _presence(state, users),
            "failures": failures,
            "nav": "users",
        },
    )


@router.post("/users/{user_id}/unlock", response_class=HTMLResponse)
def unlock(
    request: Request, user_id: RowId, admin: AdminUser, state: StateDep, tab: str = ""
) -> Response:
    """Clear an account's failed sign-ins and wait; answers with the updated row for HTMX."""
    with state.database.session() as session:
        user = service.get_user(session=session, user_id=user_id)
        service.unlock(session=session, username=user.username)
    return _user_row(
        request, state, user, notice=f"{user.username} may sign in again now.", tab=tab
    )


@router.post("/users/{user_id}/reset-link", response_class=HTMLResponse)
async def reset_link(
    request: Request, user_id: RowId, admin: AdminUser, state: StateDep, tab: str = ""
) -> Response:
    """Mail the account a one-time link to choose a new password (to the outbox without SMTP)."""
    user, notice, failed = await send_reset_link(state, user_id=user_id)
    return await _in_thread(_user_row, request, state, user, notice=notice, failed=failed, tab=tab)


@router.post("/users/{user_id}/email", response_class=HTMLResponse)
def edit_email(
    request: Request,
    user_id: RowId,
    admin: AdminUser,
    state: StateDep,
    email: Annotated[str, Form()] = "",
    tab: str = "",
) -> Response:
    """Correct an account's email address; answers with the updated row for HTMX."""
    try:
        with state.database.session() as session:
            user = service.edit_email(session=session, user_id=user_id, email=email)
    except PortalError as error:
        if error.status_code == 404:
            raise
        with state.database.session() as session:
            user = service.get_user(session=session, user_id=user_id)
        return _user_row(request, state, user, notice=error.message, failed=True, tab=tab)
    return _user_row(request, state, user, notice=f"Email changed to {user.email}.", tab=tab)


@router.post("/users/{user_id}/delete", response_class=HTMLResponse)
async def delete_user(
    request: Request, user_id: RowId, admin: AdminUser, state: StateDep, tab: str = ""
) -> Response:
    """Delete an account (refused for the last admin and while a job under way names it)."""
    try:
        notice = await delete_account(state, user_id=user_id, admin=admin)
    except PortalError as error:
        if error.status_code == 404:
            raise
        user = await _in_thread(_user, state, user_id)
        return await _in_thread(
            _user_row, request, state, user, notice=error.message, failed=True, tab=tab
        )
    if not is_htmx(request):
        return RedirectResponse(f"/admin/users?status={tab or 'approved'}", status_code=303)
    return await _in_thread(_gone_row, request, state, user_id, notice)


@router.post("/users/{user_id}/{action}", response_class=HTMLResponse)
async def decide(
    request: Request, user_id: RowId, action: str, admin: AdminUser, state: StateDep, tab: str = ""
) -> Response:
    """Approve, reject, disable or enable; answers with the updated table row for HTMX (a row
    whose status no longer belongs to the tab shown leaves it, with a notice where it went)."""
    user, notice, failed = await apply_decision(state, user_id=user_id, action=action)
    return await _in_thread(_user_row, request, state, user, notice=notice, failed=failed, tab=tab)


def _presence(state: CentralState, users: list[User]) -> dict[int, tuple[bool, float | None]]:
    """Each site's connection: online now, and when central last heard from it."""
    return {
        u.id: (state.connections.online(u.site_id), state.connections.last_seen(u.site_id))
        for u in users
        if u.site_id
    }


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, admin: AdminUser, state: StateDep) -> Response:
    with state.database.session() as session:
        mails = list(session.scalars(select(OutboxMail).order_by(OutboxMail.id.desc())))
    smtp = state.settings.smtp_host
    return render(
        request,
        "central/admin/outbox.html",
        {
            "mails": mails,
            "smtp": f"{smtp}:{state.settings.smtp_port}" if smtp else "",
            "nav": "outbox",
        },
    )


def _counts(session: Session) -> dict[str, int]:
    """Site accounts by status (the tabs' counts)."""
    counts = dict(
        session.execute(
            select(User.status, func.count()).where(User.role == Role.SITE).group_by(User.status)
        ).all()
    )
    return {s: counts.get(s, 0) for s in service.STATUSES}


def _user(state: CentralState, user_id: int) -> User:
    with state.database.session() as session:
        return service.get_user(session=session, user_id=user_id)


def _user_row(
    request: Request,
    state: CentralState,
    user: User,
    *,
    notice: str,
    tab: str = "",
    failed: bool = False,
) -> Response:
    """After an admin's action on an account: its table row for HTMX (or, when its status left
    the tab shown, a line saying where it went), with the tabs' counts; else back to the list."""
    if not is_htmx(request):
        return RedirectResponse(f"/admin/users?status={user.status}", status_code=303)
    with state.database.session() as session:
        failures = throttle.failures(session, [user.username])
        counts = _counts(session)
        pending = service.pending_count(session)
    return render(
        request,
        "central/admin/users.html",
        {
            "row": user,
            "status": tab or user.status,
            "moved": bool(tab) and tab != user.status,
            "actions": ACTIONS,
            "notice": notice,
            "notice_error": failed,
            "presence": _presence(state, [user]),
            "failures": failures,
            "counts": counts,
            "pending_count": pending,
        },
        block="row_update",
    )


def _gone_row(request: Request, state: CentralState, user_id: int, notice: str) -> Response:
    with state.database.session() as session:
        counts = _counts(session)
        pending = service.pending_count(session)
    return render(
        request,
        "central/admin/users.html",
        {"gone_id": user_id, "notice": notice, "counts": counts, "pending_count": pending},
        block="gone_row",
    )
