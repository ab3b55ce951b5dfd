"""The site portal's own password: only this site's user reaches its pages and its JSON API.

The password is chosen on the first visit (or given as ``FIP_SITE_LOCAL_PASSWORD`` for
automation) and only its argon2 hash is kept, in the site's small database. Signing in opens a
session held in this process's memory: a browser gets it as an HttpOnly, SameSite=Strict cookie
with a CSRF token that every state-changing request carries (htmx sends it as a header, plain
forms as a hidden field); a script gets it as a bearer token from ``POST /api/local/token``.
Restarting the portal ends every session. Wrong passwords make the next try wait longer and
longer (1, 2, 4, ... s, at most a minute); there is no lock-out.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from portal_site.jobs import SiteError
from portal_site.store import Store

SESSION_SECONDS = 12 * 3600
"""How long a local session lasts (browser or bearer token) before signing in again."""
MIN_PASSWORD = 10
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SessionKind = Literal["browser", "api"]


@dataclass(frozen=True)
class LocalSession:
    token: str
    csrf: str
    kind: SessionKind
    expires: float


class TooSoon(SiteError):
    """A password tried before the throttle's wait is over."""

    def __init__(self, seconds: float) -> None:
        self.retry_after = max(1, math.ceil(seconds))
        super().__init__(
            f"too many wrong passwords: wait {self.retry_after} s, then try again",
            status=429,
            field="password",
        )


class Throttle:
    """A growing wait after wrong passwords, never a lock-out.

    After ``n`` wrong passwords in a row the next try is refused for ``first * 2**(n-1)``
    seconds, at most ``most``; a right one starts again from nothing. One counter for the
    portal: it has one user, and every caller comes from this machine.
    """

    def __init__(
        self,
        *,
        first: float = 1.0,
        most: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first, self.most, self._clock = first, most, clock
        self.failures = 0
        self._not_before = 0.0

    def wait(self) -> float:
        """Seconds until the next password may be tried (0: now)."""
        return max(0.0, self._not_before - self._clock())

    def failed(self) -> float:
        self.failures += 1
        delay = min(self.first * 2.0 ** (self.failures - 1), self.most)
        self._not_before = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self._not_before = 0, 0.0


def password_problem(password: str) -> str | None:
    """Why a new local password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if len(set(password)) < 5:
        return "this password is too easy to guess"
    return None


class LocalAuth:
    """The local password (its hash in the store), the throttle and the open sessions."""

    def __init__(self, store: Store, *, port: int, time_cost: int, memory_kib: int) -> None:
        self.store = store
        self.cookie = f"fip_site_{port}"
        """Cookies are not kept apart by port: each site portal on 127.0.0.1 names its own."""
        self.throttle = Throttle()
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._sessions: dict[str, LocalSession] = {}
        self._attempts = asyncio.Lock()

    def has_password(self) -> bool:
        return bool(self.store.local_password_hash())

    def choose(self, password: str) -> None:
        """Set the first local password; refused once one is stored."""
        problem = password_problem(password)
        if problem:
            raise SiteError(problem, status=422, field="password")
        if not self.store.set_local_password_hash(self._hasher.hash(password), only_if_unset=True):
            raise SiteError(
                "a local password is already set: sign in with it", status=409, field="password"
            )

    def forget_password(self) -> None:
        """Drop the stored hash and every session: the next visit chooses a new password."""
        self.store.set_local_password_hash("", only_if_unset=False)
        self._sessions.clear()

    async def verify(self, password: str) -> None:
        """Check the local password; attempts run one at a time so the throttle sees each."""
        async with self._attempts:
            wait = self.throttle.wait()
            if wait > 0:
                raise TooSoon(wait)
            stored = self.store.local_password_hash()
            if not stored:
                raise SiteError(
                    "no local password is set yet: choose one first", status=409, field="password"
                )
            if not await asyncio.to_thread(self._matches, stored, password):
                delay = self.throttle.failed()
                raise SiteError(
                    f"wrong local password (the next try waits {delay:g} s)",
                    status=401,
                    field="password",
                )
            self.throttle.succeeded()

    def _matches(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def open(self, kind: SessionKind) -> LocalSession:
        now = time.monotonic()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
        session = LocalSession(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(24),
            kind=kind,
            expires=now + SESSION_SECONDS,
        )
        self._sessions[session.token] = session
        return session

    def find(self, token: str, kind: SessionKind) -> LocalSession | None:
        session = self._sessions.get(token)
        if session is None or session.kind != kind:
            return None
        if session.expires <= time.monotonic():
            self._sessions.pop(token, None)
            return None
        return session

    def close(self, token: str) -> None:
        self._sessions.pop(token, None)


class SignInRequired(Exception):
    """The request carries no valid local session; the app sends it to sign in."""

    def __init__(self, message: str, *, first_run: bool) -> None:
        super().__init__(message)
        self.message = message
        self.first_run = first_run
