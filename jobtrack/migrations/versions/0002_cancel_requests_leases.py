"""cancel requests kept in the row, leases for chores, no job its own parent

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import TS, table_options

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OPEN_CANCEL = "cancel_requested_at IS NOT NULL AND state_seq < 1099511627776"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "cancel_requested_at",
                TS,
                comment="when an operator asked to cancel; stays set if the task ran anyway",
            )
        )
    op.create_index(
        "ix_jobs_cancel_requested",
        "jobs",
        ["cancel_requested_at"],
        postgresql_where=sa.text(_OPEN_CANCEL),
        sqlite_where=sa.text(_OPEN_CANCEL),
    )
    op.create_table(
        "jobtrack_leases",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_jobtrack_leases"),
        comment="who does a periodic chore (the in-worker reaper) until when",
        **table_options(),
    )
    # Celery gives a retried or replaced task its own id as parent; such rows had none.
    op.execute("UPDATE jobs SET parent_id = NULL WHERE parent_id = id")


def downgrade() -> None:
    op.drop_table("jobtrack_leases")
    op.drop_index("ix_jobs_cancel_requested", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested_at")
