"""Password changes and one-time reset links.

A reset link carries a random token; only its SHA-256 is stored. It works once, for
``FIP_CENTRAL_PASSWORD_RESET_MINUTES``, and using it revokes every session, access token and
refresh token of the account (whoever held them). Asking for a link answers the same, after the
same work, whether or not the account exists: the mail goes out after the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from portal_central.accounts import throttle
from portal_central.accounts.service import DELETED, revoke_all
from portal_central.errors import FieldInvalid, PortalError
from portal_central.models import PasswordReset, User, utcnow
from portal_central.security import (
    Passwords,
    hash_refresh_token,
    new_refresh_token,
    password_problem,
)

RESET_PATH = "/reset-password"
"""The page a reset link opens: ``RESET_PATH?token=...``."""


class ResetLinkInvalid(PortalError):
    """A reset token that is unknown, used or expired (the message says which)."""

    status_code = 400


@dataclass(frozen=True)
class ResetLink:
    """A reset link just made: the account it is for and the URL (holding the only copy of the
    token, which goes into the mail and nowhere else)."""

    user: User
    url: str
    minutes: float


def change_password(
    *, session: Session, passwords: Passwords, user_id: int, current: str, new: str
) -> User:
    """Replace a signed-in user's password; the current one is required (a borrowed session
    alone cannot take the account over). Other sessions and tokens keep working."""
    user = session.get(User, user_id)
    if user is None or not passwords.verify(user.password_hash, current):
        raise FieldInvalid("the current password is wrong", field="current_password")
    _set_password(passwords, user, new)
    return user


def new_reset_link(
    *, session: Session, user: User, base_url: str, minutes: float, now: datetime | None = None
) -> ResetLink:
    """A fresh one-time link for ``user`` (earlier unused links stay valid until one is used)."""
    now = now or utcnow()
    token, digest = new_refresh_token()
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=digest,
            created_at=now,
            expires_at=now + timedelta(minutes=minutes),
        )
    )
    return ResetLink(user=user, url=f"{base_url}{RESET_PATH}?token={token}", minutes=minutes)


def request_reset(
    *, session: Session, who: str, base_url: str, minutes: float, now: datetime | None = None
) -> ResetLink | None:
    """ "Forgot password": a link for the account with this username or email, or None.

    The caller answers the same either way and sends the mail after answering. The work is the
    same too: a token is drawn and hashed whether or not an account matches."""
    key = who.strip().lower()
    user = session.scalar(
        select(User)
        .where(
            or_(User.username == key, func.lower(User.email) == key),
            User.status != DELETED,
        )
        .order_by(User.id)
        .limit(1)
    )
    if user is None or not key:
        new_refresh_token()  # the work a real link costs, thrown away
        return None
    return new_reset_link(session=session, user=user, base_url=base_url, minutes=minutes, now=now)


def check_reset_token(*, session: Session, token: str, now: datetime | None = None) -> User:
    """The account a reset token is for, or :class:`ResetLinkInvalid` saying why not."""
    reset = _reset(session, token)
    _check_usable(reset, now or utcnow())
    assert reset is not None
    return reset.user


def reset_password(
    *,
    session: Session,
    passwords: Passwords,
    token: str,
    new: str,
    now: datetime | None = None,
) -> User:
    """Set a new password through a reset link: the link and every other open link of the
    account are used up, every token of the account is revoked, its sign-in waits cleared."""
    now = now or utcnow()
    reset = _reset(session, token)
    _check_usable(reset, now)
    assert reset is not None
    user = reset.user
    _set_password(passwords, user, new)
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    revoke_all(session=session, user=user)
    throttle.clear(session, user.username)
    return user


def _reset(session: Session, token: str) -> PasswordReset | None:
    if not token:
        return None
    return session.scalar(
        select(PasswordReset).where(PasswordReset.token_hash == hash_refresh_token(token))
    )


def _check_usable(reset: PasswordReset | None, now: datetime) -> None:
    if reset is None or reset.user.status == DELETED:
        raise ResetLinkInvalid("this reset link is not valid; ask for a new one", field="token")
    if reset.used_at is not None:
        raise ResetLinkInvalid(
            "this reset link was already used; ask for a new one if you need to", field="token"
        )
    if reset.expires_at <= now:
        raise ResetLinkInvalid("this reset link has expired; ask for a new one", field="token")


def _set_password(passwords: Passwords, user: User, new: str) -> None:
    problem = password_problem(new, username=user.username, email=user.email)
    if problem:
        raise FieldInvalid(problem, field="new_password")
    user.password_hash = passwords.hash(new)
