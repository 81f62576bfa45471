"""operator actions: the audit trail, what each action covers, and replays

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import JSON_DOC, ROW_ID, TEXT, TS, table_options

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_REPLAYS = "replay_of IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "replay_of",
                sa.String(255),
                comment="the job an operator replayed (with edited arguments) as this one",
            )
        )
    op.create_index(
        "ix_jobs_replay_of",
        "jobs",
        ["replay_of"],
        postgresql_where=sa.text(_REPLAYS),
        sqlite_where=sa.text(_REPLAYS),
    )
    op.create_table(
        "jobtrack_actions",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.String(255)),
        sa.Column("bulk", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("filter", JSON_DOC),
        sa.Column("options", JSON_DOC),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("job_id", sa.String(255)),
        sa.Column("matched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", TEXT),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_jobtrack_actions"),
        comment="the audit trail: every operator action, from any interface (append-only)",
        **table_options(),
    )
    op.create_index("ix_jobtrack_actions_created_at", "jobtrack_actions", ["created_at"])
    op.create_table(
        "jobtrack_action_targets",
        sa.Column("action_id", ROW_ID, nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
        sa.Column("result_id", sa.String(255)),
        sa.Column("outcome", sa.String(500)),
        sa.PrimaryKeyConstraint("action_id", "job_id", name="pk_jobtrack_action_targets"),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["jobtrack_actions.id"],
            name="fk_jobtrack_action_targets_action_id_jobtrack_actions",
            ondelete="CASCADE",
        ),
        **table_options(),
    )
    op.create_index("ix_jobtrack_action_targets_job_id", "jobtrack_action_targets", ["job_id"])


def downgrade() -> None:
    op.drop_table("jobtrack_action_targets")
    op.drop_table("jobtrack_actions")
    op.drop_index("ix_jobs_replay_of", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("replay_of")
