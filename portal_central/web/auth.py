"""Sign-in, sign-out and self-registration pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from portal_central.accounts import notices, passwords, service
from portal_central.accounts.actions import forgot_answer
from portal_central.accounts.limits import RateLimited, client_address
from portal_central.deps import SESSION_COOKIE, CurrentUser, OptionalUser, StateDep
from portal_central.errors import FieldInvalid, PortalError
from portal_common.web import render

router = APIRouter(include_in_schema=False)
DEVICE_COOKIE = "fip_device"
"""Set at a successful sign-in (sent only to /sign-in): this browser signed in as that user,
so a wait that strangers put on the username does not apply to it."""
DEVICE_SECONDS = 90 * 24 * 3600


def _safe_next(target: str) -> str:
    """Only a path on this portal, never another site (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, user: OptionalUser, next: str = "/") -> Response:
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(
        request,
        "central/auth/sign_in.html",
        {"error": "", "username": "", "next": _safe_next(next), "nav": "sign-in"},
    )


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    state: StateDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    client = client_address(request)
    try:
        state.sign_in_limit.hit(client)
    except RateLimited as error:
        page = render(
            request,
            "central/auth/sign_in.html",
            {"error": error.message, "username": username, "next": _safe_next(next)},
            status_code=error.status_code,
        )
        page.headers.update(error.headers)
        return page
    known = state.tokens.check_device(request.cookies.get(DEVICE_COOKIE), username)
    with state.database.session() as session:
        outcome = service.authenticate(
            session=session,
            passwords=state.passwords,
            throttle=state.throttle,
            username=username,
            password=password,
            client=client,
            known_device=known,
        )
        user = outcome.user
    if user is None:
        assert outcome.error is not None
        return render(
            request,
            "central/auth/sign_in.html",
            {"error": outcome.error.message, "username": username, "next": _safe_next(next)},
            status_code=outcome.error.status_code,
        )
    cookie = state.tokens.issue(
        user_id=user.id,
        role=user.role,
        token_version=user.token_version,
        site_id=user.site_id,
        kind="session",
        lifetime_seconds=state.settings.session_hours * 3600,
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=state.settings.session_hours * 3600,
        httponly=True,
        secure=state.settings.tls,
        samesite="lax",
    )
    response.set_cookie(
        DEVICE_COOKIE,
        state.tokens.device(user.username, lifetime_seconds=DEVICE_SECONDS),
        max_age=DEVICE_SECONDS,
        path="/sign-in",
        httponly=True,
        secure=state.settings.tls,
        samesite="strict",
    )
    return response


@router.post("/sign-out")
def sign_out(request: Request, user: CurrentUser, state: StateDep) -> Response:
    """End this browser session here and now: its cookie stops working even if copied."""
    claims = getattr(request.state, "claims", None)
    if claims is not None and claims.kind == "session":
        with state.database.session() as session:
            service.sign_out_session(
                session=session,
                session_id=claims.session_id,
                expires_at=datetime.fromtimestamp(claims.expires, UTC),
            )
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request) -> Response:
    return render(
        request,
        "central/auth/register.html",
        {
            "values": {"username": "", "email": "", "institution": ""},
            "errors": {},
            "nav": "register",
        },
    )


@router.post("/register", response_class=HTMLResponse)
def register(
    request: Request,
    state: StateDep,
    background: BackgroundTasks,
    username: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    institution: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    values = {"username": username, "email": email, "institution": institution}
    try:
        state.register_limit.hit(client_address(request))
        with state.database.session() as session:
            user = service.register(
                session=session,
                passwords=state.passwords,
                username=username,
                email=email,
                institution=institution,
                password=password,
            )
    except PortalError as error:
        page = render(
            request,
            "central/auth/register.html",
            {"values": values, "errors": {error.field or "form": error.message}, "nav": "register"},
            status_code=error.status_code,
        )
        if isinstance(error, RateLimited):
            page.headers.update(error.headers)
        return page
    background.add_task(notices.tell_admins_of_registration, state, user.id)
    return render(
        request,
        "central/auth/registered.html",
        {"username": user.username, "email": user.email, "institution": user.institution},
        status_code=201,
    )


# ---------------------------------------------------------------- forgotten and changed passwords


@router.get("/forgot-password", response_class=HTMLResponse)
def forgot_page(request: Request) -> Response:
    return render(
        request, "central/auth/forgot.html", {"who": "", "error": "", "sent": "", "nav": "sign-in"}
    )


@router.post("/forgot-password", response_class=HTMLResponse)
def forgot(
    request: Request,
    state: StateDep,
    background: BackgroundTasks,
    who: Annotated[str, Form()] = "",
) -> Response:
    """Mail a one-time reset link; the same answer, after the same work, for unknown accounts
    (the mail goes out after the answer)."""
    try:
        state.reset_limit.hit(client_address(request))
    except RateLimited as error:
        page = render(
            request,
            "central/auth/forgot.html",
            {"who": who, "error": error.message, "sent": ""},
            status_code=error.status_code,
        )
        page.headers.update(error.headers)
        return page
    if not who.strip():
        return render(
            request,
            "central/auth/forgot.html",
            {"who": who, "error": "enter your username or email", "sent": ""},
            status_code=422,
        )
    minutes = state.settings.password_reset_minutes
    with state.database.session() as session:
        link = passwords.request_reset(
            session=session, who=who, base_url=state.settings.url, minutes=minutes
        )
    background.add_task(notices.send_requested_reset_link, state, link)
    return render(
        request,
        "central/auth/forgot.html",
        {"who": "", "error": "", "sent": forgot_answer(minutes)},
    )


@router.get("/reset-password", response_class=HTMLResponse)
def reset_page(request: Request, state: StateDep, token: str = "") -> Response:
    try:
        with state.database.session() as session:
            user = passwords.check_reset_token(session=session, token=token)
            username = user.username
    except PortalError as error:
        return render(
            request,
            "central/auth/reset.html",
            {"token": "", "username": "", "errors": {"token": error.message}},
            status_code=error.status_code,
        )
    return render(
        request,
        "central/auth/reset.html",
        {"token": token, "username": username, "errors": {}},
    )


@router.post("/reset-password", response_class=HTMLResponse)
def reset(
    request: Request,
    state: StateDep,
    token: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Set the new password; every session and token of the account stops working."""
    try:
        if new_password != confirm:
            raise FieldInvalid("the two passwords differ", field="confirm")
        with state.database.session() as session:
            user = passwords.reset_password(
                session=session, passwords=state.passwords, token=token, new=new_password
            )
            username = user.username
    except PortalError as error:
        field = error.field or "form"
        return render(
            request,
            "central/auth/reset.html",
            {
                "token": "" if field == "token" else token,
                "username": "",
                "errors": {field: error.message},
            },
            status_code=error.status_code,
        )
    return render(
        request,
        "central/auth/sign_in.html",
        {
            "error": "",
            "notice": "Your password is changed. Sign in with it; every other session of "
            "your account was signed out.",
            "username": username,
            "next": "/",
            "nav": "sign-in",
        },
    )


@router.get("/password", response_class=HTMLResponse)
def password_page(request: Request, user: CurrentUser) -> Response:
    return render(
        request, "central/auth/password.html", {"errors": {}, "notice": "", "nav": "password"}
    )


@router.post("/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    current_password: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Change the signed-in user's password; the current one is required."""
    try:
        if new_password != confirm:
            raise FieldInvalid("the two passwords differ", field="confirm")
        with state.database.session() as session:
            passwords.change_password(
                session=session,
                passwords=state.passwords,
                user_id=user.id,
                current=current_password,
                new=new_password,
            )
    except PortalError as error:
        return render(
            request,
            "central/auth/password.html",
            {"errors": {error.field or "form": error.message}, "notice": "", "nav": "password"},
            status_code=error.status_code,
        )
    return render(
        request,
        "central/auth/password.html",
        {"errors": {}, "notice": "Your password is changed.", "nav": "password"},
    )
