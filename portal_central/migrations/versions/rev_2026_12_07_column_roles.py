"""column roles of a job: factors with their levels, carried columns, predictor lists

Revision ID: rev_2026_12_07_column_roles
Revises: rev_2026_12_07_job_reports
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "rev_2026_12_07_column_roles"
down_revision = "rev_2026_12_07_job_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No server default: PostgreSQL has no equality for json, so a default could not be
    # compared with the model's; the existing jobs get an empty object, then NOT NULL.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("roles", sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE jobs SET roles = '{}'"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("roles", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("roles")
