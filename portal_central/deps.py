"""Request dependencies: the portal's state, who is asking, and CSRF protection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased
from starlette.concurrency import run_in_threadpool

from portal_central.accounts.status import AccountStatus, Role
from portal_central.errors import Forbidden, Unauthorized
from portal_central.models import SignedOutSession, User
from portal_central.security import Claims, InvalidToken
from portal_central.state import CentralState
from portal_common.uploads import MultipartStream, allow_body

SESSION_COOKIE = "fip_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def get_state(request: Request) -> CentralState:
    state: CentralState = request.app.state.fip
    return state


StateDep = Annotated[CentralState, Depends(get_state)]


def _claims(request: Request, state: CentralState) -> tuple[Claims, bool] | None:
    """The caller's claims and whether they came from the browser cookie."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        try:
            return state.tokens.read(header[7:].strip(), kind="access"), False
        except InvalidToken:
            raise Unauthorized("the access token is not valid or has expired") from None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        try:
            return state.tokens.read(cookie, kind="session"), True
        except InvalidToken:
            return None
    return None


async def optional_user(request: Request, state: StateDep) -> User | None:
    """The signed-in user, if any; checks that the account is still approved and unrevoked."""
    found = _claims(request, state)
    if found is None:
        return None
    claims, from_cookie = found
    # The database is read in a worker thread: this runs before every signed-in request.
    user, signed_out, pending = await run_in_threadpool(_account, state, claims, from_cookie)
    if signed_out:
        return None
    if (
        user is None
        or user.status != AccountStatus.APPROVED
        or user.token_version != claims.token_version
    ):
        if from_cookie:
            return None
        raise Unauthorized("the access token was revoked; sign in again")
    if from_cookie and request.method in _UNSAFE:
        await _check_csrf(request, state, claims.session_id)
    request.state.claims = claims
    request.state.page_context = {
        "user": user,
        "csrf_token": state.tokens.csrf(claims.session_id) if from_cookie else "",
        "pending_count": pending,
    }
    return user


def _account(
    state: CentralState, claims: Claims, from_cookie: bool
) -> tuple[User | None, bool, int]:
    """The caller's account, whether its browser session was signed out, and (for an admin's
    page) how many registrations wait: one statement for a page as for an API call."""
    with state.database.session() as session:
        if not from_cookie:
            return session.get(User, claims.user_id), False, 0
        signed_out = exists().where(SignedOutSession.session_id == claims.session_id)
        waiting = aliased(User)  # not the caller's row: every account that waits
        pending = (
            select(func.count())
            .select_from(waiting)
            .where(waiting.status == AccountStatus.PENDING)
            .scalar_subquery()
        )
        row = session.execute(
            select(User, signed_out, pending).where(User.id == claims.user_id)
        ).first()
    if row is None:  # the account is gone: the cookie signs nobody in
        return None, False, 0
    user, out, count = row
    return user, bool(out), count if user.role == Role.ADMIN else 0


async def _check_csrf(request: Request, state: CentralState, session_id: str) -> None:
    """The token from the X-CSRF-Token header (HTMX) or the form's hidden field. A multipart
    form is read only up to that field, which must come before its files: no file is read,
    let alone buffered, before the token is checked."""
    token = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    parsed = getattr(request, "_form", None)  # a route with Form() parameters read it already
    if token is None and parsed is not None:
        value = parsed.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    elif token is None and content_type.startswith("multipart/form-data"):
        token = await MultipartStream.of(request).field_before_files(CSRF_FIELD)
    elif token is None and content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form()  # parsed in memory; the body limit keeps it small
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not state.tokens.check_csrf(session_id, token):
        raise Forbidden("the form has expired or did not come from this portal; reload the page")


def data_upload(request: Request, state: StateDep) -> None:
    """A route's dependency that lets its body be a data upload (central's CSV, the wizard's
    header): up to FIP_CENTRAL_MAX_UPLOAD_BYTES instead of the form limit. Nothing is read."""
    allow_body(request, state.settings.max_upload_bytes, "FIP_CENTRAL_MAX_UPLOAD_BYTES")


OptionalUser = Annotated[User | None, Depends(optional_user)]


def current_user(user: OptionalUser) -> User:
    if user is None:
        raise Unauthorized("sign in first")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if user.role != Role.ADMIN:
        raise Forbidden("only admins may do this")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
