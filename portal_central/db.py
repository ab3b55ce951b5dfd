"""The database engine, sessions, and schema upgrades through Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from portal_common.migrations import at_head

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""Alembic's scripts for central's database (they ship in the package)."""


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets foreign keys on and a busy timeout, as PostgreSQL behaves."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (at start-up, and `fip central db upgrade`);
    a database already there is only looked at (``portal_common.migrations``)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if at_head(connection, MIGRATIONS):
                return
    finally:
        engine.dispose()
    command.upgrade(alembic_config(url), "head")


class Database:
    """The engine and a session factory; ``session()`` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
