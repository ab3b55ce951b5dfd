"""Accounts as the admin and the users see them: register, decide, sign in, hold tokens."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from portal_central.errors import (
    Conflict,
    FieldInvalid,
    Forbidden,
    InvalidTransition,
    NotFound,
    Unauthorized,
)
from portal_central.models import RefreshToken, SignedOutSession, User, utcnow
from portal_central.security import (
    Passwords,
    Tokens,
    hash_refresh_token,
    new_refresh_token,
    password_problem,
)
from portal_central.settings import CentralSettings

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SITE_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
SITE_ID_LENGTH = 6

STATUS_TRANSITIONS: dict[str, dict[str, str]] = {
    "approve": {"pending": "approved", "rejected": "approved"},
    "reject": {"pending": "rejected"},
    "disable": {"approved": "disabled"},
    "enable": {"disabled": "approved"},
}
"""For each admin action, the statuses it applies to and the status it leads to."""
STATUSES = ("pending", "approved", "rejected", "disabled")


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def register(
    *,
    session: Session,
    passwords: Passwords,
    username: str,
    email: str,
    institution: str,
    password: str,
) -> User:
    """A new site user, pending until an admin approves it."""
    username, email, institution = username.strip().lower(), email.strip(), institution.strip()
    _check_new_account(session, username=username, email=email, password=password)
    if not institution:
        raise FieldInvalid("say which institution the site belongs to", field="institution")
    if len(institution) > 200:
        raise FieldInvalid("use at most 200 characters", field="institution")
    user = User(
        username=username,
        email=email,
        institution=institution,
        password_hash=passwords.hash(password),
        role="site",
        status="pending",
        failed_sign_ins=0,
        token_version=0,
    )
    session.add(user)
    session.flush()
    return user


def create_admin(
    *, session: Session, passwords: Passwords, username: str, email: str, password: str
) -> User:
    """An approved admin account (the first one comes from `fip central create-admin`)."""
    username = username.strip().lower()
    _check_new_account(session, username=username, email=email.strip(), password=password)
    user = User(
        username=username,
        email=email.strip(),
        institution="central",
        password_hash=passwords.hash(password),
        role="admin",
        status="approved",
        decided_at=utcnow(),
        failed_sign_ins=0,
        token_version=0,
    )
    session.add(user)
    session.flush()
    return user


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: the user, or the error to show once the failure is counted."""

    user: User | None
    error: Unauthorized | Forbidden | None = None


def authenticate(
    *,
    session: Session,
    passwords: Passwords,
    settings: CentralSettings,
    username: str,
    password: str,
    now: datetime | None = None,
) -> SignIn:
    """Check a username and password, counting failures towards a lock-out.

    Failures are returned, not raised, so that the caller commits the failure count first.
    """
    now = now or utcnow()
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is not None and user.locked_until is not None and user.locked_until > now:
        return SignIn(None, Forbidden(_locked_message(user.locked_until, now)))
    if user is None or not passwords.verify(user.password_hash, password):
        if user is not None:
            user.failed_sign_ins += 1
            if user.failed_sign_ins >= settings.lockout_attempts:
                user.failed_sign_ins = 0
                user.locked_until = now + timedelta(minutes=settings.lockout_minutes)
                return SignIn(None, Forbidden(_locked_message(user.locked_until, now)))
        else:
            passwords.verify(None, password)  # same work as for a real account
        return SignIn(None, Unauthorized("wrong username or password"))
    user.failed_sign_ins = 0
    user.locked_until = None
    refusal = {
        "pending": "your registration is waiting for an admin's approval",
        "rejected": "your registration was not approved; contact central's admin",
        "disabled": "your account is disabled; contact central's admin",
    }.get(user.status)
    if refusal:
        return SignIn(None, Forbidden(refusal))
    return SignIn(user)


def decide(*, session: Session, user_id: int, action: str, now: datetime | None = None) -> User:
    """Apply an admin action (approve, reject, disable, enable) through the transition table.

    Approving gives the account a short unique ``site_id``; disabling revokes every token.
    """
    user = get_user(session=session, user_id=user_id)
    moves = STATUS_TRANSITIONS.get(action)
    if moves is None:
        raise NotFound(f"no action '{action}'")
    if user.role == "admin":
        raise Forbidden("admin accounts are managed with `fip central create-admin`")
    if user.status not in moves:
        raise InvalidTransition(f"cannot {action} an account that is {user.status}")
    user.status = moves[user.status]
    user.decided_at = now or utcnow()
    if action == "approve" and user.site_id is None:
        user.site_id = _new_site_id(session)
    if action == "disable":
        revoke_all(session=session, user=user)
    return user


def revoke_all(*, session: Session, user: User) -> None:
    """Kill every session, access token and refresh token of a user."""
    user.token_version += 1
    now = utcnow()
    for token in user.refresh_tokens:
        if token.revoked_at is None:
            token.revoked_at = now


def sign_out_session(*, session: Session, session_id: str, expires_at: datetime) -> None:
    """Remember an ended browser session until its cookie would have expired anyway."""
    session.execute(delete(SignedOutSession).where(SignedOutSession.expires_at < utcnow()))
    if session.get(SignedOutSession, session_id) is None:
        session.add(SignedOutSession(session_id=session_id, expires_at=expires_at))


def get_user(*, session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def list_users(*, session: Session, status: str | None = None) -> list[User]:
    query = select(User).order_by(User.created_at, User.id)
    if status is not None:
        if status not in STATUSES:
            raise FieldInvalid(f"status must be one of {', '.join(STATUSES)}", field="status")
        query = query.where(User.status == status)
    return list(session.scalars(query))


def issue_tokens(
    *, session: Session, tokens: Tokens, settings: CentralSettings, user: User
) -> TokenPair:
    """A short access token and a revocable refresh token (stored hashed)."""
    lifetime = settings.access_token_minutes * 60
    access = tokens.issue(
        user_id=user.id,
        role=user.role,
        token_version=user.token_version,
        site_id=user.site_id,
        kind="access",
        lifetime_seconds=lifetime,
    )
    refresh, digest = new_refresh_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=digest,
            expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
        )
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=lifetime)


def refresh_tokens(
    *, session: Session, tokens: Tokens, settings: CentralSettings, refresh_token: str
) -> TokenPair:
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    stored = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
    )
    now = utcnow()
    if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
        raise Unauthorized("the refresh token is not valid; sign in again")
    if stored.user.status != "approved":
        raise Forbidden(f"the account is {stored.user.status}")
    stored.revoked_at = now
    return issue_tokens(session=session, tokens=tokens, settings=settings, user=stored.user)


def revoke_refresh_token(*, session: Session, refresh_token: str) -> None:
    stored = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
    )
    if stored is not None and stored.revoked_at is None:
        stored.revoked_at = utcnow()


def _check_new_account(session: Session, *, username: str, email: str, password: str) -> None:
    if not USERNAME.match(username):
        raise FieldInvalid(
            "use 3 to 32 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="username",
        )
    if not EMAIL.match(email) or len(email) > 254:
        raise FieldInvalid("enter an email address such as name@hospital.org", field="email")
    problem = password_problem(password, username=username, email=email)
    if problem:
        raise FieldInvalid(problem, field="password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"the username '{username}' is taken", field="username")


def _new_site_id(session: Session) -> str:
    while True:
        candidate = "".join(secrets.choice(SITE_ID_ALPHABET) for _ in range(SITE_ID_LENGTH))
        if session.scalar(select(User.id).where(User.site_id == candidate)) is None:
            return candidate


def _locked_message(until: datetime, now: datetime) -> str:
    minutes = max(1, round((until - now).total_seconds() / 60))
    return f"too many failed sign-ins: the account is locked for {minutes} more minute(s)"
