"""jobs, job_items and job_events

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import FLOAT, JSON_DOC, ROW_ID, TEXT, TS, table_options

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(255), nullable=False, comment="the Celery task id"),
        sa.Column("task_name", sa.String(255)),
        sa.Column("job_type", sa.String(100)),
        sa.Column("job_subtype", sa.String(100)),
        sa.Column("name", TEXT),
        sa.Column("owner_id", sa.String(255)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column(
            "state_seq",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="order key of status: attempt and rank; terminal states outrank all",
        ),
        sa.Column("queue", sa.String(255)),
        sa.Column("priority", sa.Integer),
        sa.Column("eta", TS),
        sa.Column("parent_id", sa.String(255)),
        sa.Column("root_id", sa.String(255)),
        sa.Column("group_id", sa.String(255)),
        sa.Column("input_data", JSON_DOC),
        sa.Column("output_data", JSON_DOC),
        sa.Column("metadata", JSON_DOC),
        sa.Column("total_items", sa.Integer),
        sa.Column("processed_items", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed_items", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped_items", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_percent", FLOAT),
        sa.Column("progress_stage", sa.String(255)),
        sa.Column("progress_message", TEXT),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_retries", sa.Integer),
        sa.Column("error_type", sa.String(255)),
        sa.Column("error_message", TEXT),
        sa.Column("traceback", TEXT),
        sa.Column("worker", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("completed_at", TS),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        **table_options(),
    )
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_job_type_created_at", "jobs", ["job_type", "created_at"])
    op.create_index("ix_jobs_owner_id_created_at", "jobs", ["owner_id", "created_at"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "job_items",
        sa.Column("id", ROW_ID, nullable=False, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", TEXT),
        sa.Column("error_code", sa.String(100)),
        sa.Column("before_state", JSON_DOC),
        sa.Column("after_state", JSON_DOC),
        sa.Column("processed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_items"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], ondelete="CASCADE", name="fk_job_items_job_id_jobs"
        ),
        sa.UniqueConstraint("job_id", "key", name="uq_job_items_job_id_key"),
        **table_options(),
    )
    op.create_index("ix_job_items_job_id_status", "job_items", ["job_id", "status"])

    op.create_table(
        "job_events",
        sa.Column("id", ROW_ID, nullable=False, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(255)),
        sa.Column("error_type", sa.String(255)),
        sa.Column("error_message", TEXT),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], ondelete="CASCADE", name="fk_job_events_job_id_jobs"
        ),
        **table_options(),
    )
    op.create_index("ix_job_events_job_id_at", "job_events", ["job_id", "at"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("job_items")
    op.drop_table("jobs")
