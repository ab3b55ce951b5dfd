"""the site's settings, local account, approvals, policy and ledger

Revision ID: site_2026_12_07_initial
Revises:
Create Date: 2026-12-07 09:27:06.341778
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import portal_common.sqltypes

revision = "site_2026_12_07_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("approved_at", portal_common.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_table(
        "config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("central_url", sa.String(length=500), nullable=False),
        sa.Column("site_id", sa.String(length=16), nullable=False),
        sa.Column("ca_file", sa.String(length=1000), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("refresh_token", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", portal_common.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("shapes", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_job_id"), ["job_id"], unique=False)

    op.create_table(
        "local_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("changed_at", portal_common.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("changed_at", portal_common.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("policy")
    op.drop_table("local_account")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_job_id"))

    op.drop_table("ledger")
    op.drop_table("config")
    op.drop_table("approvals")
