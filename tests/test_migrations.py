"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from portal_central.db import alembic_config, make_engine, upgrade
from portal_central.models import Base
from tests.central_fixtures import EVERY_DATABASE

pytestmark = EVERY_DATABASE


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            differences: list[object] = list(compare_metadata(context, Base.metadata))
            return differences
    finally:
        engine.dispose()


def _versions(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [
                row[0]
                for row in connection.execute(text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        engine.dispose()


def test_migrations_match_models(database_url: str) -> None:
    upgrade(database_url)

    differences = _differences(database_url)

    assert differences == [], "the migrations and portal_central/models.py differ"


def test_upgrade_is_idempotent(database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    upgrade(database_url)

    upgrade(database_url)

    assert _versions(database_url) == [head]
    assert _differences(database_url) == []
