"""The central database: accounts, tokens, mail, algorithm versions and job metadata.

No data set, imputed value or derived matrix is ever stored here: a job keeps its column
names, targets, parameters and state, nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from portal_common.sqltypes import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    """A person: an admin, or a site user whose account carries the site's ``site_id``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    institution: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # admin | site
    status: Mapped[str] = mapped_column(String(16))
    """pending | approved | rejected | disabled, or deleted: an account deleted while finished
    jobs still name it keeps a nameless row (no username, email or password) for their record."""
    site_id: Mapped[str | None] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    """Raised when the account is disabled: every access token and session issued before dies."""

    refresh_tokens: Mapped[list[RefreshToken]] = relationship(back_populates="user")


class RefreshToken(Base):
    """A long-lived token that buys short access tokens; stored hashed, revocable."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    """Shared by a sign-in's token and every token rotated from it: presenting a rotated token
    again (a stolen copy, or the original after the thief used it) revokes the family."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="refresh_tokens")


class SignInThrottle(Base):
    """Recent failed sign-ins of one username (``account:NAME``, existing or not) or one client
    address (``client:ADDRESS``), and until when its next attempt is refused unchecked."""

    __tablename__ = "sign_in_throttles"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(index=True)
    wait_until: Mapped[datetime | None]


class PasswordReset(Base):
    """A one-time password reset link: only the hash of its token is stored."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class SignedOutSession(Base):
    """A browser session ended by signing out: its cookie stops working before it expires."""

    __tablename__ = "signed_out_sessions"

    session_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class OutboxMail(Base):
    """A mail that was not sent because no SMTP server is configured; admins read it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlgorithmVersion(Base):
    """One version of an algorithm: its three files, digest, and who uploaded it when."""

    __tablename__ = "algorithm_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), index=True)
    version: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(64))
    central_source: Mapped[str] = mapped_column(Text)
    remote_source: Mapped[str] = mapped_column(Text)
    params_json: Mapped[str] = mapped_column(Text)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    retired_at: Mapped[datetime | None]

    uploaded_by: Mapped[User | None] = relationship()


class Job(Base):
    """A job's metadata: what runs, on which columns, with whom. Never its data."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    algorithm_version_id: Mapped[int] = mapped_column(ForeignKey("algorithm_versions.id"))
    columns: Mapped[list[Any]]
    targets: Mapped[list[Any]]
    params: Mapped[dict[str, Any]]
    roles: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Column roles (``federation.roles.roles_to_wire``): factors with their levels, carried
    columns, predictor lists; empty: every column a predictor, every design the default."""
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    """Set on the child jobs of a comparison: one per method, run by their parent."""

    algorithm: Mapped[AlgorithmVersion] = relationship()
    created_by: Mapped[User] = relationship()
    participants: Mapped[list[JobParticipant]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobParticipant.position"
    )
    children: Mapped[list[Job]] = relationship(
        back_populates="parent", cascade="all, delete-orphan", order_by="Job.id"
    )
    parent: Mapped[Job | None] = relationship(back_populates="children", remote_side="Job.id")

    @property
    def is_comparison(self) -> bool:
        return bool(self.children)

    @property
    def methods(self) -> list[Job]:
        """A comparison's current child per method: the newest attempt, in the first order."""
        newest: dict[str, Job] = {}
        for child in self.children:
            newest[child.algorithm.name] = child
        return sorted(newest.values(), key=lambda c: self._first_position(c.algorithm.name))

    def _first_position(self, name: str) -> int:
        return next(i for i, c in enumerate(self.children) if c.algorithm.name == name)


class JobParticipant(Base):
    """A remote site taking part in a job (central always takes part with its own data)."""

    __tablename__ = "job_participants"
    __table_args__ = (UniqueConstraint("job_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    position: Mapped[int] = mapped_column(Integer)

    job: Mapped[Job] = relationship(back_populates="participants")
    user: Mapped[User] = relationship()


class JobEventRecord(Base):
    """One line of a job's event log: a message or a count of progress, never data. Kept so
    that a job's log outlives a restart of central."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[float] = mapped_column(Float)
    """When (seconds since the epoch)."""
    kind: Mapped[str] = mapped_column(String(16))
    site: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)


class JobReport(Base):
    """A completed job's report: its fits, costs and chain traces (aggregates, never data), as
    JSON. Kept so that a comparison's table outlives a restart of central."""

    __tablename__ = "job_reports"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    report: Mapped[str] = mapped_column(Text)
