"""Admin pages: registrations and accounts, and the mail outbox."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from portal_central.accounts import service, throttle
from portal_central.accounts.mail import MailError
from portal_central.deps import AdminUser, StateDep
from portal_central.models import OutboxMail, User
from portal_central.paths import RowId
from portal_central.sites.connections import DISABLED
from portal_central.state import CentralState
from portal_common.web import is_htmx, render

router = APIRouter(prefix="/admin")
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
        counts = dict(
            session.execute(
                select(User.status, func.count()).where(User.role == "site").group_by(User.status)
            ).all()
        )
    return render(
        request,
        "central/admin/users.html",
        {
            "users": [u for u in users if u.role == "site"],
            "status": status,
            "statuses": service.STATUSES,
            "counts": {s: counts.get(s, 0) for s in service.STATUSES},
            "actions": ACTIONS,
            "central_url": state.settings.url,
            "presence": _presence(state, users),
            "failures": failures,
            "nav": "users",
        },
    )


@router.post("/users/{user_id}/unlock", response_class=HTMLResponse)
def unlock(request: Request, user_id: RowId, admin: AdminUser, state: StateDep) -> Response:
    """Clear an account's failed sign-ins and wait; answers with the updated row for HTMX."""
    with state.database.session() as session:
        user = service.get_user(session=session, user_id=user_id)
        service.unlock(session=session, username=user.username)
    return _user_row(
        request, state, user, notice=f"{user.username} may sign in again now.", failures={}
    )


@router.post("/users/{user_id}/{action}", response_class=HTMLResponse)
async def decide(
    request: Request, user_id: RowId, action: str, admin: AdminUser, state: StateDep
) -> Response:
    """Approve, reject, disable or enable; answers with the updated table row for HTMX."""
    user, notice, failed = await apply_decision(state, user_id=user_id, action=action)
    with state.database.session() as session:
        failures = throttle.failures(session, [user.username])
    return _user_row(request, state, user, notice=notice, failed=failed, failures=failures)


def _presence(state: CentralState, users: list[User]) -> dict[int, tuple[bool, float | None]]:
    """Each site's connection: online now, and when central last heard from it."""
    return {
        u.id: (state.connections.online(u.site_id), state.connections.last_seen(u.site_id))
        for u in users
        if u.site_id
    }


async def apply_decision(
    state: CentralState, *, user_id: int, action: str
) -> tuple[User, str, bool]:
    """Decide, commit, then mail the user; a mail failure does not undo the decision."""
    with state.database.session() as session:
        user = service.decide(session=session, user_id=user_id, action=action)
    if action == "disable" and user.site_id:
        await state.connections.close(user.site_id, code=DISABLED, reason="this site was disabled")
    template = {"approve": "site_approved", "reject": "site_rejected"}.get(action)
    notice = {
        "approve": f"Approved: site_id {user.site_id}, mailed to {user.email}.",
        "reject": f"Rejected; {user.email} was told.",
        "disable": "Disabled: its tokens are revoked.",
        "enable": "Enabled again.",
    }[action]
    if template is None:
        return user, notice, False
    try:
        await state.mailer.send(
            to=user.email, template=template, user=user, central_url=state.settings.url
        )
    except MailError as error:
        return user, f"{notice.split(':')[0]}, but {error}. site_id: {user.site_id}", True
    if state.settings.smtp_host is None:
        notice = notice.replace("mailed to", "mail for") + (
            " is in the outbox" if action == "approve" else ""
        )
    return user, notice, False


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


def _user_row(
    request: Request,
    state: CentralState,
    user: User,
    *,
    notice: str,
    failures: dict[str, int],
    failed: bool = False,
) -> Response:
    """After an admin's action on an account: its table row for HTMX, else back to the list."""
    if not is_htmx(request):
        return RedirectResponse(f"/admin/users?status={user.status}", status_code=303)
    return render(
        request,
        "central/admin/users.html",
        {
            "row": user,
            "actions": ACTIONS,
            "notice": notice,
            "notice_error": failed,
            "presence": _presence(state, [user]),
            "failures": failures,
        },
        block="user_row",
    )
