"""comparison jobs: a job's parent

Revision ID: rev_2026_11_23_compare
Revises: rev_2026_11_23_initial
Create Date: 2026-11-23 15:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "rev_2026_11_23_compare"
down_revision = "rev_2026_11_23_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_parent_id"), ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_parent_id"))
        batch_op.drop_column("parent_id")
