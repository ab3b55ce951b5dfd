"""Sign-in, sign-out and self-registration pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from portal_central.accounts import service
from portal_central.accounts.limits import RateLimited, client_address
from portal_central.deps import SESSION_COOKIE, CurrentUser, OptionalUser, StateDep
from portal_central.errors import PortalError
from portal_common.web import render

router = APIRouter()
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
    return render(
        request,
        "central/auth/registered.html",
        {"username": user.username, "email": user.email, "institution": user.institution},
        status_code=201,
    )
