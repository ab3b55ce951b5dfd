"""The site's database is made by Alembic migrations, which build exactly the schema the models
describe; a database a site portal made before it had migrations is taken over as it is."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from portal_site import store
from portal_site.store import Base, Store


def _head(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            head = ScriptDirectory.from_config(store.alembic_config(connection)).get_current_head()
    finally:
        engine.dispose()
    assert head is not None
    return head


def _versions_and_differences(url: str) -> tuple[list[str], list[object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            versions = [r[0] for r in connection.execute(text("SELECT * FROM alembic_version"))]
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            differences: list[object] = list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()
    return versions, differences


def test_site_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    Store(url).dispose()
    versions, differences = _versions_and_differences(url)
    assert versions == [_head(url)]
    assert differences == [], f"the site's models and migrations differ: {differences}"


def test_opening_the_store_again_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    first = Store(url)
    first.update_config(central_url="https://central.example:8443", site_id="north1")
    first.record(job_id="7", kind="total", shapes=[[1]], rows=40, size=120)
    first.dispose()

    again = Store(url)
    try:
        assert again.config().site_id == "north1"
        assert [e.kind for e in again.ledger()] == ["total"]
    finally:
        again.dispose()
    assert _versions_and_differences(url) == ([_head(url)], [])


def test_a_database_made_before_migrations_is_kept_and_marked(tmp_path: Path) -> None:
    """A site portal of the last release made its tables directly (``create_all``), with no
    record of a revision: opening it keeps every row and records the revision."""
    url = f"sqlite:///{tmp_path / 'site.db'}"
    engine = create_engine(url)
    # That release's tables: the first revision's, before the event log was kept.
    before = [t for name, t in Base.metadata.tables.items() if name != "job_events"]
    Base.metadata.create_all(engine, tables=before)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO config VALUES "
                "(1, 'https://central.example:8443', 'north1', '', '', '')"
            )
        )
        connection.execute(
            text("INSERT INTO approvals VALUES ('ab12', 'SIMI', '1.0.0', '2026-12-01 10:00:00')")
        )
    assert "alembic_version" not in inspect(engine).get_table_names()
    engine.dispose()

    opened = Store(url)
    try:
        assert opened.config().central_url == "https://central.example:8443"
        assert opened.approved("ab12")
    finally:
        opened.dispose()
    assert _versions_and_differences(url) == ([_head(url)], [])
