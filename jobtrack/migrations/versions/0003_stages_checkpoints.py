"""stages and checkpoints of long jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import JSON_DOC, TS

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "stage_index",
                sa.Integer,
                comment="position of progress_stage in the declared plan, from 1",
            )
        )
        batch.add_column(
            sa.Column(
                "stage_count", sa.Integer, comment="how many stages @track(stages=...) declares"
            )
        )
        batch.add_column(
            sa.Column("checkpoint", JSON_DOC, comment="the latest job.checkpoint(data)")
        )
        batch.add_column(sa.Column("checkpoint_at", TS))
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(
            sa.Column("stage", sa.String(255), comment="set on the event of a stage change")
        )


def downgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("stage")
    with op.batch_alter_table("jobs") as batch:
        for name in ("checkpoint_at", "checkpoint", "stage_count", "stage_index"):
            batch.drop_column(name)
