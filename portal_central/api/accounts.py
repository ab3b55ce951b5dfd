"""JSON API: registration, tokens, and the admin's account decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Form, Request
from pydantic import BaseModel
from sqlalchemy import select

from portal_central.accounts import notices, passwords, service
from portal_central.accounts.actions import (
    apply_decision,
    delete_account,
    forgot_answer,
    send_reset_link,
)
from portal_central.accounts.limits import client_address
from portal_central.deps import AdminUser, CurrentUser, StateDep
from portal_central.errors import PortalError
from portal_central.models import OutboxMail, User
from portal_central.paths import RowId

router = APIRouter(prefix="/api", tags=["accounts"])


class Registration(BaseModel):
    username: str
    email: str
    institution: str
    password: str


class UserOut(BaseModel):
    id: int
    username: str
    email: str
    institution: str
    role: str
    status: str
    site_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            institution=user.institution,
            role=user.role,
            status=user.status,
            site_id=user.site_id,
            created_at=user.created_at,
        )


class Decision(UserOut):
    notice: str
    mail_sent: bool


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class RefreshIn(BaseModel):
    refresh_token: str


class PasswordChange(BaseModel):
    current_password: str
    new_password: str


class ForgotIn(BaseModel):
    who: str
    """The account's username or email address."""


class ResetIn(BaseModel):
    token: str
    new_password: str


class EmailIn(BaseModel):
    email: str


class Notice(BaseModel):
    detail: str


class ResetLinkOut(BaseModel):
    notice: str
    mail_sent: bool


class MailOut(BaseModel):
    id: int
    to: str
    subject: str
    body: str
    created_at: datetime


@router.post("/register", status_code=201, responses={429: {"description": "too many"}})
def register(
    body: Registration, request: Request, state: StateDep, background: BackgroundTasks
) -> UserOut:
    """Register a site user; the account is pending until an admin approves it, and every
    admin is mailed about it.

    Each client address may register a few times an hour (429 with Retry-After beyond)."""
    state.register_limit.hit(client_address(request))
    with state.database.session() as session:
        user = service.register(
            session=session,
            passwords=state.passwords,
            username=body.username,
            email=body.email,
            institution=body.institution,
            password=body.password,
        )
        out = UserOut.of(user)
    background.add_task(notices.tell_admins_of_registration, state, out.id)
    return out


@router.post("/auth/token", responses={429: {"description": "too many"}})
def token(
    request: Request,
    state: StateDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> TokenOut:
    """Exchange a username and password (form fields) for an access and a refresh token.

    A site's account holds one sign-in at a time: its earlier refresh tokens are revoked.
    After repeated failures, attempts wait (and are answered as a wrong password); each client
    address may call this a limited number of times a minute (429 with Retry-After beyond)."""
    client = client_address(request)
    state.sign_in_limit.hit(client)
    with state.database.session() as session:
        outcome = service.authenticate(
            session=session,
            passwords=state.passwords,
            throttle=state.throttle,
            username=username,
            password=password,
            client=client,
        )
        if outcome.user is not None:
            pair = service.issue_tokens(
                session=session, tokens=state.tokens, settings=state.settings, user=outcome.user
            )
    if outcome.error is not None:
        raise outcome.error
    return TokenOut(**pair.__dict__)


@router.post("/auth/refresh")
def refresh(body: RefreshIn, state: StateDep) -> TokenOut:
    """A new token pair for a refresh token; the old refresh token stops working. Presenting
    a refresh token that was already used revokes every token descended from its sign-in."""
    with state.database.session() as session:
        outcome = service.refresh_tokens(
            session=session,
            tokens=state.tokens,
            settings=state.settings,
            refresh_token=body.refresh_token,
        )
    if outcome.error is not None:
        raise outcome.error
    assert outcome.pair is not None
    return TokenOut(**outcome.pair.__dict__)


@router.post("/auth/revoke", status_code=204)
def revoke(body: RefreshIn, state: StateDep) -> None:
    """Revoke a refresh token (signing out a script or a site)."""
    with state.database.session() as session:
        service.revoke_refresh_token(session=session, refresh_token=body.refresh_token)


@router.post("/auth/forgot-password", status_code=202, responses={429: {"description": "too many"}})
def forgot_password(
    body: ForgotIn, request: Request, state: StateDep, background: BackgroundTasks
) -> Notice:
    """Mail a one-time link to choose a new password to the account with this username or
    email. The answer is the same whether or not such an account exists; each client address
    may ask a few times an hour (429 with Retry-After beyond)."""
    state.reset_limit.hit(client_address(request))
    if not body.who.strip():
        raise PortalError("give a username or an email address", field="who")
    minutes = state.settings.password_reset_minutes
    with state.database.session() as session:
        link = passwords.request_reset(
            session=session, who=body.who, base_url=state.settings.url, minutes=minutes
        )
    background.add_task(notices.send_requested_reset_link, state, link)
    return Notice(detail=forgot_answer(minutes))


@router.post("/auth/reset-password")
def reset_password(body: ResetIn, state: StateDep) -> Notice:
    """Set a new password with the token of a reset link (once, before it expires). Every
    session, access token and refresh token of the account is revoked."""
    with state.database.session() as session:
        passwords.reset_password(
            session=session, passwords=state.passwords, token=body.token, new=body.new_password
        )
    return Notice(detail="the password is changed; sign in with it")


@router.get("/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@router.post("/me/password")
def change_password(body: PasswordChange, user: CurrentUser, state: StateDep) -> Notice:
    """Change the caller's own password (a site's account too); the current one is required."""
    with state.database.session() as session:
        passwords.change_password(
            session=session,
            passwords=state.passwords,
            user_id=user.id,
            current=body.current_password,
            new=body.new_password,
        )
    return Notice(detail="the password is changed")


@router.get("/users")
def users(admin: AdminUser, state: StateDep, status: str | None = None) -> list[UserOut]:
    """Every account, or those of one status (pending, approved, rejected, disabled)."""
    with state.database.session() as session:
        return [UserOut.of(u) for u in service.list_users(session=session, status=status)]


@router.post("/users/{user_id}/unlock")
def unlock(user_id: RowId, admin: AdminUser, state: StateDep) -> UserOut:
    """Clear an account's failed sign-ins and its wait: it may sign in again at once."""
    with state.database.session() as session:
        user = service.get_user(session=session, user_id=user_id)
        service.unlock(session=session, username=user.username)
        return UserOut.of(user)


@router.post("/users/{user_id}/reset-link")
async def reset_link(user_id: RowId, admin: AdminUser, state: StateDep) -> ResetLinkOut:
    """Mail the account a one-time link to choose a new password (into the outbox when no
    SMTP server is configured: forward it from there)."""
    _, notice, failed = await send_reset_link(state, user_id=user_id)
    return ResetLinkOut(notice=notice, mail_sent=not failed)


@router.patch("/users/{user_id}")
def edit_user(user_id: RowId, body: EmailIn, admin: AdminUser, state: StateDep) -> UserOut:
    """Change an account's email address."""
    with state.database.session() as session:
        return UserOut.of(service.edit_email(session=session, user_id=user_id, email=body.email))


@router.delete("/users/{user_id}")
async def delete_user(user_id: RowId, admin: AdminUser, state: StateDep) -> Notice:
    """Delete an account: it can no longer sign in, a site's connection closes at once.
    Refused (409) for the last admin and while a job that is not finished names the account."""
    return Notice(detail=await delete_account(state, user_id=user_id, admin=admin))


@router.post("/users/{user_id}/{action}")
async def decide(user_id: RowId, action: str, admin: AdminUser, state: StateDep) -> Decision:
    """approve (issues and mails the site_id), reject, disable (revokes tokens) or enable."""
    if action not in service.STATUS_TRANSITIONS:
        raise PortalError(
            f"unknown action '{action}'; use one of {', '.join(service.STATUS_TRANSITIONS)}",
            field="action",
        )
    user, notice, failed = await apply_decision(state, user_id=user_id, action=action)
    return Decision(**UserOut.of(user).model_dump(), notice=notice, mail_sent=not failed)


@router.get("/outbox")
def outbox(admin: AdminUser, state: StateDep) -> list[MailOut]:
    """Mails kept because no SMTP server is configured, newest first."""
    with state.database.session() as session:
        mails = session.scalars(select(OutboxMail).order_by(OutboxMail.id.desc()))
        return [
            MailOut(
                id=m.id, to=m.to_address, subject=m.subject, body=m.body, created_at=m.created_at
            )
            for m in mails
        ]
