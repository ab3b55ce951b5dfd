"""The site's own small database: where central is, the refresh token, approvals, the ledger.

The ledger lists every message the site sent: its kind, array shapes, the rows behind it,
bytes and time. It never holds a value. Its rows are written in batches by a thread of their
own (:class:`LedgerWriter`), off the event loop that answers central; reading the ledger waits
for the rows already recorded, so it always lists every message sent before. The schema is made
and changed by Alembic migrations (``portal_site/migrations``), run when the store opens: a
change to the models here needs a migration (tests/test_site_migrations.py compares them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from federation.job import JobEvent
from federation.policy import Policy
from portal_common.migrations import at_head
from portal_common.sqltypes import UTCDateTime

log = logging.getLogger(__name__)


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


class LocalAccount(Base):
    """The one row holding the argon2 hash of the site portal's own (local) password."""

    __tablename__ = "local_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Approval(Base):
    """An algorithm version whose remote half the site's user approved to run here."""

    __tablename__ = "approvals"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40))
    approved_at: Mapped[datetime] = mapped_column(default=utcnow)


class PolicyRow(Base):
    """The one row holding the site's disclosure policy (``federation.policy``) as JSON."""

    __tablename__ = "policy"

    id: Mapped[int] = mapped_column(primary_key=True)
    settings: Mapped[str] = mapped_column(Text, default="")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class EventRecord(Base):
    """One line of a job's event log at this site: a message, never data. Kept so that the
    log outlives a restart of the site portal."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[float] = mapped_column(Float)
    """When (seconds since the epoch)."""
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


_LEDGER = cast(Table, LedgerEntry.__table__)
_EVENTS = cast(Table, EventRecord.__table__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""Alembic's scripts for the site's database (they ship in the package)."""
BEFORE_MIGRATIONS = "site_2026_12_07_initial"
"""The revision whose schema the site made directly before it had migrations."""


def alembic_config(connection: Connection) -> AlembicConfig:
    """Alembic's configuration, working on ``connection`` (the store's engine and pragmas)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest migration. A database that a site portal made before it
    had migrations holds the first revision's tables without Alembic's record: it is marked as
    at that revision first, then upgraded like any other. A database already at the newest
    revision is only looked at (``portal_common.migrations``)."""
    if at_head(connection, MIGRATIONS):
        return
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "config" in tables and "alembic_version" not in tables:
        command.stamp(config, BEFORE_MIGRATIONS)
    command.upgrade(config, "head")


LINGER = 0.05
"""Seconds the writer waits after a row comes for more to write with it (unless someone
reads the ledger, or the store closes): a busy job's messages go in batches of several."""
RETRY_PAUSES = (0.05, 0.25, 1.0)
"""Seconds before each new attempt at a batch whose write failed (the database locked by
another program, say); after the last, its rows are given up (and the loss logged)."""


class LedgerWriter:
    """Ledger rows (and event log lines) written by one thread, each batch of what came in
    meanwhile in one transaction: recording a message costs its sender an append, never a
    database write. A batch waits up to ``linger`` seconds for the rows that follow its first
    (not when someone reads the ledger), and each table's rows go in one INSERT by SQLAlchemy
    Core: about 25 us of the site's CPU a row, where one ORM transaction a row took 400 us
    beside the loop answering central. Rows are written in the order they were recorded; a
    batch whose write failed is tried again before any later row."""

    def __init__(
        self,
        engine: Engine,
        *,
        linger: float = LINGER,
        retry_pauses: Sequence[float] = RETRY_PAUSES,
    ) -> None:
        self._engine = engine
        self._linger = linger
        self._retry_pauses = tuple(retry_pauses)
        self._pending: list[tuple[Table, dict[str, Any]]] = []
        self._recorded = 0
        self._written = 0
        self._waiting = 0
        """Readers waiting in :meth:`flush`: the batch goes at once."""
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="site-ledger", daemon=True)
        self._thread.start()

    def record(self, table: Table, row: dict[str, Any]) -> None:
        """Queue ``row`` (every column of ``table`` but its id) for the next batch. Only the
        first row of a batch wakes the writer: the rows that follow it while it lingers, or
        while it writes, change nothing it waits for, and a wake-up per message would cost
        a thread switch beside the loop answering central."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            first = not self._pending
            self._pending.append((table, row))
            self._recorded += 1
            if first:
                self._changed.notify_all()

    def flush(self) -> None:
        """Wait until every row recorded so far is written (or given up, logged)."""
        with self._changed:
            target = self._recorded
            self._waiting += 1
            self._changed.notify_all()
            try:
                self._changed.wait_for(lambda: self._written >= target)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """Write what is pending, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending) or self._closed)
                self._changed.wait_for(lambda: self._closed or self._waiting > 0, self._linger)
                batch, self._pending = self._pending, []
                if not batch and self._closed:
                    return
            self._write(batch)
            with self._changed:
                self._written += len(batch)
                self._changed.notify_all()

    def _write(self, batch: list[tuple[Table, dict[str, Any]]]) -> None:
        """One transaction: each run of rows of one table in one INSERT, in their order."""
        for pause in (*self._retry_pauses, None):
            try:
                with self._engine.begin() as connection:
                    for table, rows in groupby(batch, key=itemgetter(0)):
                        connection.execute(insert(table), [row for _, row in rows])
                return
            except Exception:  # the site keeps answering; a loss is in its log
                if pause is None:
                    log.exception("%d ledger or event row(s) could not be written", len(batch))
                    return
                log.warning(
                    "%d ledger or event row(s) not written yet; trying again in %g s",
                    len(batch),
                    pause,
                    exc_info=True,
                )
                time.sleep(pause)


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

        with self.engine.begin() as connection:
            upgrade(connection)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ledger = LedgerWriter(self.engine)

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

    def local_password_hash(self) -> str:
        """The argon2 hash of the local password; empty before the first one is chosen."""
        with self._sessions() as session:
            account = session.get(LocalAccount, 1)
            return account.password_hash if account is not None else ""

    def set_local_password_hash(self, password_hash: str, *, only_if_unset: bool) -> bool:
        """Store the hash (empty: forget the password); with ``only_if_unset``, only when none
        is stored yet. Whether it was stored."""
        with self._sessions.begin() as session:
            account = session.get(LocalAccount, 1, with_for_update=True)
            if account is None:
                session.add(LocalAccount(id=1, password_hash=password_hash, changed_at=utcnow()))
                return True
            if only_if_unset and account.password_hash:
                return False
            account.password_hash, account.changed_at = password_hash, utcnow()
            return True

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
        """Note a message sent; it is written with the next batch (see :class:`LedgerWriter`)."""
        self._ledger.record(
            _LEDGER,
            {
                "at": utcnow(),
                "job_id": job_id,
                "kind": kind,
                "shapes": shapes,
                "rows": rows,
                "bytes": size,
                "note": note,
            },
        )

    def record_event(self, job_id: str, event: JobEvent) -> None:
        """Keep a line of a job's event log (written with the next batch)."""
        self._ledger.record(
            _EVENTS,
            {"job_id": job_id, "at": event.at, "kind": event.kind, "message": event.message},
        )

    def events(self, job_id: str, *, limit: int = 200) -> list[JobEvent]:
        """A job's stored event log, oldest first (the newest ``limit`` lines)."""
        self._ledger.flush()
        with self._sessions() as session:
            rows = session.scalars(
                select(EventRecord)
                .where(EventRecord.job_id == job_id)
                .order_by(EventRecord.id.desc())
                .limit(limit)
            ).all()
            return [
                JobEvent(kind=r.kind, message=r.message, at=r.at)  # type: ignore[arg-type]
                for r in reversed(rows)
            ]

    def ledger(self, *, limit: int = 500) -> list[LedgerEntry]:
        """The latest messages sent, newest first, every one recorded so far included."""
        self._ledger.flush()
        with self._sessions() as session:
            return list(
                session.scalars(select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(limit))
            )

    def policy(self, min_rows: int = Policy.min_rows) -> Policy:
        """The site's disclosure policy; before its user set one, the default with the
        configured ``min_rows``."""
        with self._sessions() as session:
            row = session.get(PolicyRow, 1)
            if row is None or not row.settings:
                return replace(Policy(), min_rows=min_rows)
            return Policy.from_json(row.settings)

    def set_policy(self, policy: Policy) -> None:
        with self._sessions.begin() as session:
            row = session.get(PolicyRow, 1) or PolicyRow(id=1)
            row.settings, row.changed_at = policy.to_json(), utcnow()
            session.add(row)

    def dispose(self) -> None:
        self._ledger.close()
        self.engine.dispose()
