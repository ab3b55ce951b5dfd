"""Accounts as the admin and the users see them: register, decide, sign in, hold tokens."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from portal_central.accounts import throttle
from portal_central.accounts.status import AccountStatus, Role
from portal_central.accounts.throttle import Throttle
from portal_central.errors import (
    Conflict,
    FieldInvalid,
    Forbidden,
    InvalidTransition,
    NotFound,
    Unauthorized,
)
from portal_central.models import (
    AlgorithmVersion,
    Job,
    JobParticipant,
    PasswordReset,
    RefreshToken,
    SignedOutSession,
    User,
    utcnow,
)
from portal_central.security import (
    Passwords,
    Tokens,
    hash_refresh_token,
    new_refresh_token,
    password_problem,
)
from portal_central.settings import CentralSettings

log = logging.getLogger(__name__)
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SITE_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
SITE_ID_LENGTH = 6

STATUS_TRANSITIONS: dict[str, dict[str, AccountStatus]] = {
    "approve": {
        AccountStatus.PENDING: AccountStatus.APPROVED,
        AccountStatus.REJECTED: AccountStatus.APPROVED,
    },
    "reject": {AccountStatus.PENDING: AccountStatus.REJECTED},
    "disable": {AccountStatus.APPROVED: AccountStatus.DISABLED},
    "enable": {AccountStatus.DISABLED: AccountStatus.APPROVED},
}
"""For each admin action, the statuses it applies to and the status it leads to."""
STATUSES = (
    AccountStatus.PENDING,
    AccountStatus.APPROVED,
    AccountStatus.REJECTED,
    AccountStatus.DISABLED,
)
DELETED = AccountStatus.DELETED
"""The status of a deleted account's nameless row (kept only while finished jobs name it)."""
UNFINISHED_JOB_STATES = ("created", "waiting", "running", "partial")
"""Job states in which an account named by the job cannot be deleted."""


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
        role=Role.SITE,
        status=AccountStatus.PENDING,
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
        role=Role.ADMIN,
        status=AccountStatus.APPROVED,
        decided_at=utcnow(),
        token_version=0,
    )
    session.add(user)
    session.flush()
    return user


WRONG = "wrong username or password"
"""The one answer to an unknown name, a wrong password and an attempt made during a wait."""


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: the user, or the error to show once the failure is counted."""

    user: User | None
    error: Unauthorized | Forbidden | None = None


def authenticate(
    *,
    session: Session,
    passwords: Passwords,
    throttle: Throttle,
    username: str,
    password: str,
    client: str,
    known_device: bool = False,
    now: datetime | None = None,
) -> SignIn:
    """Check a username and password from a client address, with growing waits after failures
    (see :mod:`portal_central.accounts.throttle`).

    An unknown name, a wrong password and an attempt during a wait get the same answer after
    the same work (one argon2 verification). ``known_device``: the attempt comes from a
    browser this username signed in from before, which skips the username's wait. Failures
    are returned, not raised, so that the caller commits the failure count first.
    """
    now = now or utcnow()
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name))
    if throttle.waiting(session, username=name, client=client, now=now, known=known_device):
        passwords.verify(None, password)  # the same work as a checked attempt; not counted
        return SignIn(None, Unauthorized(WRONG))
    if not passwords.verify(user.password_hash if user is not None else None, password):
        throttle.failed(session, username=name, client=client, now=now)
        return SignIn(None, Unauthorized(WRONG))
    assert user is not None
    throttle.succeeded(session, username=name)
    refusals: dict[str, str] = {
        AccountStatus.PENDING: "your registration is waiting for an admin's approval",
        AccountStatus.REJECTED: "your registration was not approved; contact central's admin",
        AccountStatus.DISABLED: "your account is disabled; contact central's admin",
    }
    refusal = refusals.get(user.status)
    if refusal:
        return SignIn(None, Forbidden(refusal))
    return SignIn(user)


def unlock(*, session: Session, username: str) -> User:
    """Clear an account's sign-in waits and failures (`fip central unlock`, the admin's page)."""
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        raise NotFound(f"no account '{name}'", field="username")
    throttle.clear(session, name)
    return user


def decide(*, session: Session, user_id: int, action: str, now: datetime | None = None) -> User:
    """Apply an admin action (approve, reject, disable, enable) through the transition table.

    Approving gives the account a short unique ``site_id``; disabling revokes every token.
    """
    user = get_user(session=session, user_id=user_id)
    moves = STATUS_TRANSITIONS.get(action)
    if moves is None:
        raise NotFound(f"no action '{action}'")
    if user.role == Role.ADMIN:
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


def edit_email(*, session: Session, user_id: int, email: str) -> User:
    """Change an account's email address (an admin's correction)."""
    user = get_user(session=session, user_id=user_id)
    email = email.strip()
    if not EMAIL.match(email) or len(email) > 254:
        raise FieldInvalid("enter an email address such as name@hospital.org", field="email")
    user.email = email
    return user


@dataclass(frozen=True)
class Deleted:
    """What deleting an account did: its name, its site_id (whose connection must close) and
    whether a nameless row stays for finished jobs that name it."""

    username: str
    site_id: str | None
    kept_for_jobs: bool


def delete_account(*, session: Session, user_id: int, by: User) -> Deleted:
    """Delete an account: its username, email, password, tokens and reset links go.

    Refused for the last admin and while a job that is not finished names the account (as a
    participant or its creator). When finished jobs name it, a nameless row with its
    institution stays so that their record still says who took part; otherwise the row goes.
    """
    user = get_user(session=session, user_id=user_id)
    if user.role == Role.ADMIN:
        admins = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN, User.status != DELETED)
        )
        if (admins or 0) <= 1:
            raise Conflict(
                f"{user.username} is the last admin; create another admin before deleting it"
            )
    open_job = session.scalar(
        select(Job)
        .where(
            Job.state.in_(UNFINISHED_JOB_STATES),
            (Job.created_by_id == user.id)
            | Job.id.in_(select(JobParticipant.job_id).where(JobParticipant.user_id == user.id)),
        )
        .order_by(Job.id)
        .limit(1)
    )
    if open_job is not None:
        raise Conflict(
            f"{user.username} takes part in job {open_job.id} '{open_job.name}', which is "
            f"{open_job.state}; cancel that job or let it finish, then delete the account"
        )
    deleted = Deleted(username=user.username, site_id=user.site_id, kept_for_jobs=False)
    throttle.clear(session, user.username)
    session.execute(delete(RefreshToken).where(RefreshToken.user_id == user.id))
    session.execute(delete(PasswordReset).where(PasswordReset.user_id == user.id))
    named = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            (Job.created_by_id == user.id)
            | Job.id.in_(select(JobParticipant.job_id).where(JobParticipant.user_id == user.id))
        )
    ) or session.scalar(
        select(func.count())
        .select_from(AlgorithmVersion)
        .where(AlgorithmVersion.uploaded_by_id == user.id)
    )
    session.expire(user, ["refresh_tokens"])
    if not named:
        session.delete(user)
        log.info("account %s deleted by %s", deleted.username, by.username)
        return deleted
    user.username = f"deleted-{user.id}"
    user.email = ""
    user.password_hash = ""
    user.status = DELETED
    user.token_version += 1
    log.info(
        "account %s deleted by %s (a nameless row stays for its jobs)",
        deleted.username,
        by.username,
    )
    return Deleted(username=deleted.username, site_id=deleted.site_id, kept_for_jobs=True)


def pending_count(session: Session) -> int:
    """Registrations waiting for an admin (the badge in the admins' navigation)."""
    count = session.scalar(
        select(func.count()).select_from(User).where(User.status == AccountStatus.PENDING)
    )
    return count or 0


def admin_addresses(session: Session) -> list[str]:
    """The email address of every approved admin (told of new registrations)."""
    return list(
        session.scalars(
            select(User.email)
            .where(User.role == Role.ADMIN, User.status == AccountStatus.APPROVED)
            .order_by(User.id)
        )
    )


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
    if user is None or user.status == DELETED:
        raise NotFound(f"no user {user_id}")
    return user


def list_users(*, session: Session, status: str | None = None) -> list[User]:
    query = select(User).order_by(User.created_at, User.id)
    if status is not None:
        if status not in STATUSES:
            raise FieldInvalid(f"status must be one of {', '.join(STATUSES)}", field="status")
        query = query.where(User.status == status)
    else:
        query = query.where(User.status != DELETED)
    return list(session.scalars(query))


def issue_tokens(
    *,
    session: Session,
    tokens: Tokens,
    settings: CentralSettings,
    user: User,
    family: str | None = None,
) -> TokenPair:
    """A short access token and a revocable refresh token (stored hashed).

    Without ``family`` this is a password sign-in: the refresh token starts a new family, and
    for a site's account every earlier refresh token of the account is revoked (a site holds
    one sign-in at a time: signing in again shuts out any copy of the old token).
    """
    lifetime = settings.access_token_minutes * 60
    access = tokens.issue(
        user_id=user.id,
        role=user.role,
        token_version=user.token_version,
        site_id=user.site_id,
        kind="access",
        lifetime_seconds=lifetime,
    )
    now = utcnow()
    if family is None:
        family = secrets.token_hex(16)
        if user.role == Role.SITE:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
    refresh, digest = new_refresh_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=digest,
            family_id=family,
            expires_at=now + timedelta(days=settings.refresh_token_days),
        )
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=lifetime)


@dataclass(frozen=True)
class Refreshed:
    """The new pair, or the error to raise once the session is committed (a reuse revokes)."""

    pair: TokenPair | None
    error: Unauthorized | Forbidden | None = None


def refresh_tokens(
    *, session: Session, tokens: Tokens, settings: CentralSettings, refresh_token: str
) -> Refreshed:
    """Trade a refresh token for a new pair of the same family; the old one stops working.

    A token that was already rotated or revoked is a copy in someone else's hands, or the
    original after a thief rotated it: every token of its family is revoked, so that whichever
    of the two holds the newest token must sign in again with the password.
    """
    stored = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
    )
    now = utcnow()
    invalid = Unauthorized("the refresh token is not valid; sign in again")
    if stored is None or stored.expires_at <= now:
        return Refreshed(None, invalid)
    if stored.revoked_at is not None:
        revoked = session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == stored.family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if getattr(revoked, "rowcount", 0):
            log.warning(
                "a used refresh token of user %s came back: its family is revoked", stored.user_id
            )
        return Refreshed(None, invalid)
    if stored.user.status != AccountStatus.APPROVED:
        return Refreshed(None, Forbidden(f"the account is {stored.user.status}"))
    stored.revoked_at = now
    pair = issue_tokens(
        session=session,
        tokens=tokens,
        settings=settings,
        user=stored.user,
        family=stored.family_id,
    )
    return Refreshed(pair)


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
