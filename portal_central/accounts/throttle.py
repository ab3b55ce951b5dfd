"""Growing waits after failed sign-ins, per username and per client address; no hard lock.

After ``free`` failures of a key, its next attempt must wait ``first · 2^(failures − free)``
seconds, up to a maximum. An attempt inside a wait is refused without looking at the password
(the caller still spends one argon2 verification on it and answers as for a wrong password),
and it is not counted: only checked passwords count, so hammering during a wait gains nothing
and extends nothing.

Two keys are counted on each checked failure:

- ``account:NAME``, for the name typed (whether or not an account has it, so that throttling
  says nothing about which names exist). Its maximum is short (a minute by default) because a
  stranger can drive it: the real owner gets in again soon after the stranger stops.
  A browser the owner signed in from before carries a signed cookie that skips this wait,
  so even strangers at many addresses, who can keep the account waiting, do not keep the owner
  out of the browser they use.
- ``client:ADDRESS``, for every name tried from one address. Its maximum is long (15 minutes),
  and its own failures are what a single guesser makes: the guesser waits, not the admin.

The state lives in the database: `fip central unlock`, a separate process, clears it; it holds
across restarts and across several workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal_central.models import SignInThrottle
from portal_central.settings import CentralSettings

_KEY_LENGTH = 160


@dataclass(frozen=True)
class Policy:
    free: int
    first: float
    longest: float

    def wait(self, failures: int) -> float | None:
        """Seconds the next attempt must wait after ``failures`` failures (None: no wait)."""
        if failures < self.free:
            return None
        return float(min(self.longest, self.first * 2.0 ** min(failures - self.free, 40)))


def account_key(username: str) -> str:
    return ("account:" + username.strip().lower())[:_KEY_LENGTH]


def client_key(address: str) -> str:
    return ("client:" + address)[:_KEY_LENGTH]


class Throttle:
    """The two policies, from settings, and the rows that carry their state."""

    def __init__(self, settings: CentralSettings) -> None:
        first = settings.sign_in_first_delay_seconds
        self.account = Policy(
            settings.account_free_failures, first, settings.account_max_delay_seconds
        )
        self.client = Policy(
            settings.client_free_failures, first, settings.client_max_delay_seconds
        )
        self.forget = timedelta(minutes=settings.sign_in_forget_minutes)

    def waiting(
        self, session: Session, *, username: str, client: str, now: datetime, known: bool = False
    ) -> bool:
        """Whether either key must still wait: the attempt is then refused unchecked. A browser
        that this username signed in from before (``known``) waits only for its address."""
        keys = (client_key(client),) if known else (account_key(username), client_key(client))
        found = session.scalars(
            select(SignInThrottle.wait_until).where(
                SignInThrottle.key.in_(keys), SignInThrottle.wait_until > now
            )
        )
        return found.first() is not None

    def failed(self, session: Session, *, username: str, client: str, now: datetime) -> None:
        """Count a checked failure against both keys and set their waits."""
        session.execute(
            delete(SignInThrottle).where(
                SignInThrottle.last_failure_at < now - self.forget,
                (SignInThrottle.wait_until.is_(None)) | (SignInThrottle.wait_until < now),
            )
        )
        for key, policy in (
            (account_key(username), self.account),
            (client_key(client), self.client),
        ):
            failures = _count(session, key, now)
            seconds = policy.wait(failures)
            if seconds is not None:
                session.execute(
                    update(SignInThrottle)
                    .where(SignInThrottle.key == key)
                    .values(wait_until=now + timedelta(seconds=seconds))
                )

    def succeeded(self, session: Session, *, username: str) -> None:
        """The right password: the username's failures are forgotten (the address's are not,
        or a guesser could reset its own count by signing in to an account of its own)."""
        clear(session, username)


def clear(session: Session, username: str) -> bool:
    """Forget a username's failures and wait (`fip central unlock`, the admin's button)."""
    result = session.execute(
        delete(SignInThrottle).where(SignInThrottle.key == account_key(username))
    )
    return bool(getattr(result, "rowcount", 0))


def failures(session: Session, usernames: list[str]) -> dict[str, int]:
    """Recent failures by username, for the admin's page (names without any are left out)."""
    keys = {account_key(name): name for name in usernames}
    rows = session.execute(
        select(SignInThrottle.key, SignInThrottle.failures).where(SignInThrottle.key.in_(keys))
    )
    return {keys[key]: count for key, count in rows}


def _count(session: Session, key: str, now: datetime) -> int:
    """One more failure for ``key``, atomically (concurrent failures all count)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(SignInThrottle)
        .values(key=key, failures=1, last_failure_at=now, wait_until=None)
        .on_conflict_do_update(
            index_elements=[SignInThrottle.key],
            set_={"failures": SignInThrottle.failures + 1, "last_failure_at": now},
        )
        .returning(SignInThrottle.failures)
    )
    count: int = session.execute(statement).scalar_one()
    return count
