"""Alembic at a portal's start: a database already at the newest revision is left as it is.

``alembic.command.upgrade`` runs the migration environment and executes every revision script
on each call, to find that nothing is to be done; a portal starts far more often than its
schema changes. The scripts' heads are read once per process (they ship in the package and do
not change under it); a database whose recorded revisions are those heads needs nothing more.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection


@functools.cache
def _heads(scripts: Path) -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def at_head(connection: Connection, scripts: Path) -> bool:
    """The database behind ``connection`` is at the newest revision of the ``scripts`` folder."""
    current = MigrationContext.configure(connection).get_current_heads()
    return frozenset(current) == _heads(scripts)
