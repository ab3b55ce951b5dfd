"""Path parameters that name a database row: bounded, so that a huge or negative id is a clear
422 naming the parameter rather than an overflow deep in the database driver."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ID = 2**31 - 1
"""The largest id an INTEGER primary key holds on PostgreSQL (SQLite's are wider)."""

RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id (1 to 2147483647)")]
