"""Passwords (argon2), signed tokens (JWT via joserfc), refresh tokens and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry

TokenKind = Literal["access", "session"]
_COMMON = frozenset(
    {"password", "passw0rd", "1234567890", "qwertyuiop", "letmein123", "iloveyou12", "admin12345"}
)
MIN_PASSWORD = 10


class InvalidToken(Exception):
    """A token that is malformed, forged, expired or of the wrong kind."""


def password_problem(password: str, *, username: str = "", email: str = "") -> str | None:
    """Why a password is too weak, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) < 5:
        return "this password is too easy to guess"
    for personal in (username, email.split("@")[0]):
        if personal and len(personal) >= 3 and personal.lower() in lowered:
            return "do not build the password from your username or email"
    classes = sum(
        any(test(c) for c in password)
        for test in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    if classes < 2 and len(password) < 16:
        return "mix letters with digits or symbols, or use 16 characters or more"
    return None


class Passwords:
    """Argon2id hashing; the cost comes from settings (cheap in tests, strong in production)."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=2)
        self._dummy = self._hasher.hash(secrets.token_hex(8))
        self.verifications = 0
        """How many argon2 verifications ran: every sign-in attempt costs exactly one."""

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Constant work whether or not the account exists (``stored`` None: a dummy hash of
        the same cost is verified, and the answer is False)."""
        self.verifications += 1
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True)
class Claims:
    user_id: int
    role: str
    token_version: int
    site_id: str | None
    kind: TokenKind
    session_id: str
    expires: int


class Tokens:
    """HS256 tokens signed with central's secret key."""

    def __init__(self, secret: bytes) -> None:
        self._key = OctKey.import_key(secret)
        self._secret = secret

    def issue(
        self,
        *,
        user_id: int,
        role: str,
        token_version: int,
        site_id: str | None,
        kind: TokenKind,
        lifetime_seconds: int,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "role": role,
            "tv": token_version,
            "kind": kind,
            "sid": secrets.token_urlsafe(12),
            "iat": now,
            "exp": now + lifetime_seconds,
        }
        if site_id is not None:
            claims["site_id"] = site_id
        return jwt.encode({"alg": "HS256"}, claims, self._key)

    def read(self, token: str, *, kind: TokenKind) -> Claims:
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
            JWTClaimsRegistry(exp={"essential": True}, sub={"essential": True}).validate(
                decoded.claims
            )
        except (JoseError, ValueError) as error:
            raise InvalidToken(str(error) or type(error).__name__) from None
        claims = decoded.claims
        if claims.get("kind") != kind:
            raise InvalidToken(f"not an {kind} token")
        return Claims(
            user_id=int(claims["sub"]),
            role=str(claims["role"]),
            token_version=int(claims["tv"]),
            site_id=claims.get("site_id"),
            kind=kind,
            session_id=str(claims["sid"]),
            expires=int(claims["exp"]),
        )

    def csrf(self, session_id: str) -> str:
        """The CSRF token of a browser session: an HMAC of its id, checked on every form."""
        return hmac.new(self._secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session_id: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf(session_id), token)

    def device(self, username: str, *, lifetime_seconds: int) -> str:
        """A browser's proof that ``username`` signed in from it before: ``expiry.HMAC``."""
        expires = int(time.time()) + lifetime_seconds
        return f"{expires}.{self._device_mac(username, expires)}"

    def check_device(self, token: str | None, username: str) -> bool:
        expires, _, mac = (token or "").partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._device_mac(username, int(expires)), mac)

    def _device_mac(self, username: str, expires: int) -> str:
        message = f"device:{username.strip().lower()}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def new_refresh_token() -> tuple[str, str]:
    """An opaque refresh token and the hash that is stored (never the token itself)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
