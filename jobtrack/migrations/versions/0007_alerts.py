"""alerts: messages, their deliveries, what each rule reported, rule state

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import FLOAT, JSON_DOC, ROW_ID, TEXT, TS, table_options

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_completed_at", "jobs", ["status", "completed_at"])
    op.create_table(
        "jobtrack_alerts",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("title", TEXT, nullable=False),
        sa.Column("body", JSON_DOC),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobtrack_alerts"),
        comment="every alert message jobtrack sent or is sending",
        **table_options(),
    )
    op.create_index("ix_jobtrack_alerts_created_at", "jobtrack_alerts", ["created_at"])
    op.create_table(
        "jobtrack_alert_deliveries",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", ROW_ID, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", TEXT),
        sa.Column("sent_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_jobtrack_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["jobtrack_alerts.id"],
            name="fk_jobtrack_alert_deliveries_alert_id_jobtrack_alerts",
            ondelete="CASCADE",
        ),
        **table_options(),
    )
    op.create_index(
        "ix_jobtrack_alert_deliveries_status_next_attempt_at",
        "jobtrack_alert_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_jobtrack_alert_deliveries_alert_id", "jobtrack_alert_deliveries", ["alert_id"]
    )
    op.create_table(
        "jobtrack_alert_seen",
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("alert_id", ROW_ID),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("rule", "job_id", name="pk_jobtrack_alert_seen"),
        **table_options(),
    )
    op.create_index("ix_jobtrack_alert_seen_at", "jobtrack_alert_seen", ["at"])
    op.create_table(
        "jobtrack_alert_state",
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("firing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("value", FLOAT),
        sa.Column("last_sent_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("rule", name="pk_jobtrack_alert_state"),
        **table_options(),
    )
    op.create_table(
        "jobtrack_alert_progress",
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_jobtrack_alert_progress"),
        **table_options(),
    )


def downgrade() -> None:
    for table in (
        "jobtrack_alert_progress",
        "jobtrack_alert_state",
        "jobtrack_alert_seen",
        "jobtrack_alert_deliveries",
        "jobtrack_alerts",
    ):
        op.drop_table(table)
    op.drop_index("ix_jobs_status_completed_at", table_name="jobs")
