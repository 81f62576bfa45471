"""pause requests kept in the row, operator notes in the trace

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import TS

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN_PAUSE = "pause_requested_at IS NOT NULL AND state_seq < 1099511627776"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "pause_requested_at",
                TS,
                comment="when an operator asked to pause; cleared when the job is resumed",
            )
        )
    op.create_index(
        "ix_jobs_pause_requested",
        "jobs",
        ["pause_requested_at"],
        postgresql_where=sa.text(_OPEN_PAUSE),
        sqlite_where=sa.text(_OPEN_PAUSE),
    )
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(
            sa.Column("note", sa.String(255), comment="what an operator did: paused, resumed, ...")
        )


def downgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("note")
    op.drop_index("ix_jobs_pause_requested", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pause_requested_at")
