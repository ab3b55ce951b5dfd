"""job reports (fits, costs and chain traces: aggregates, never data), kept across restarts so
that a comparison's table outlives central

Revision ID: rev_2026_12_07_job_reports
Revises: rev_2026_12_07_job_events
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "rev_2026_12_07_job_reports"
down_revision = "rev_2026_12_07_job_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_reports",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )


def downgrade() -> None:
    op.drop_table("job_reports")
