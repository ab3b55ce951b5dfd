"""Alembic environment of the site's database: the caller hands over a connection of the
site's own engine (see portal_site/store.py), so that its SQLite settings apply."""

from __future__ import annotations

from alembic import context

from portal_site.store import Base

config = context.config
target_metadata = Base.metadata

connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
