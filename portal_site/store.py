"""The site's own small database: where central is, the refresh token, approvals, the ledger.

The ledger lists every message the site sent: its kind, array shapes, the rows behind it,
bytes and time. It never holds a value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, create_engine, delete, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from federation.sqltypes import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Config(Base):
    """The one row of connection settings."""

    __tablename__ = "config"

    id: Mapped[int] = mapped_column(primary_key=True)
    central_url: Mapped[str] = mapped_column(String(500), default="")
    site_id: Mapped[str] = mapped_column(String(16), default="")
    ca_file: Mapped[str] = mapped_column(String(1000), default="")
    username: Mapped[str] = mapped_column(String(64), default="")
    refresh_token: Mapped[str] = mapped_column(String(200), default="")


class Approval(Base):
    """An algorithm version whose remote half the site's user approved to run here."""

    __tablename__ = "approvals"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40))
    approved_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """One message that left the site, described without its values."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(200))
    shapes: Mapped[list[Any]]
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")


class Store:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(self.engine, "connect")
        def _pragmas(connection, _record):  # type: ignore[no-untyped-def]
            # WAL with synchronous=NORMAL: a ledger line per message without an fsync each.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def config(self) -> Config:
        with self._sessions.begin() as session:
            config = session.get(Config, 1)
            if config is None:
                config = Config(
                    id=1, central_url="", site_id="", ca_file="", username="", refresh_token=""
                )
                session.add(config)
            return config

    def update_config(self, **values: str) -> Config:
        with self._sessions.begin() as session:
            config = session.get(Config, 1) or Config(id=1)
            for key, value in values.items():
                setattr(config, key, value)
            session.add(config)
            return config

    def approvals(self) -> list[Approval]:
        with self._sessions() as session:
            return list(session.scalars(select(Approval).order_by(Approval.approved_at.desc())))

    def approved(self, digest: str) -> bool:
        with self._sessions() as session:
            return session.get(Approval, digest) is not None

    def approve(self, *, digest: str, name: str, version: str) -> None:
        with self._sessions.begin() as session:
            if session.get(Approval, digest) is None:
                session.add(Approval(digest=digest, name=name, version=version))

    def withdraw(self, digest: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(Approval).where(Approval.digest == digest))

    def record(
        self, *, job_id: str, kind: str, shapes: list[Any], rows: int, size: int, note: str = ""
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                LedgerEntry(
                    job_id=job_id, kind=kind, shapes=shapes, rows=rows, bytes=size, note=note
                )
            )

    def ledger(self, *, limit: int = 500) -> list[LedgerEntry]:
        with self._sessions() as session:
            return list(
                session.scalars(select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(limit))
            )

    def dispose(self) -> None:
        self.engine.dispose()
