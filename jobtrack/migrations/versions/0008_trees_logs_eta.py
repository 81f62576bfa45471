"""workflow trees, per-job logs, time left: jobs.root_id index, job_logs, jobs.eta_at

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import ROW_ID, TEXT, TS, is_mysql, table_options

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_GROUPED = "group_id IS NOT NULL"
#: The same rule as the other job-scoped tables (revision 0005): the session serves every
#: owner, or the line belongs to a job it may see.
_LOGS_POLICY = "CREATE POLICY jobtrack_owner ON job_logs USING ({rule}) WITH CHECK ({rule})".format(
    rule="current_setting('jobtrack.owner_id', true) = '*' OR "
    "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_logs.job_id)"
)


#: Column comments revisions 0006 and 0007 left out (schema.py has them): added here, so a
#: migrated database matches the table definitions exactly (PostgreSQL keeps comments).
_COMMENTS = {
    ("jobtrack_action_targets", "state"): "pending, sending, done, skipped, failed",
    ("jobtrack_action_targets", "result_id"): "the new job of a retry or replay",
    ("jobtrack_actions", "action"): "retry, cancel, pause, resume, ...",
    ("jobtrack_actions", "actor"): "the token's name, or cli",
    ("jobtrack_actions", "owner_id"): "the owner an owner-bound operator acts for",
    ("jobtrack_actions", "filter"): "what the action covers: a filter, or the ids",
    ("jobtrack_actions", "status"): "pending, running, completed, failed",
    ("jobtrack_actions", "job_id"): "the jobtrack job that tracks a bulk action",
    ("jobtrack_actions", "outcome"): "what it did, in words (single actions), or its error",
    ("jobtrack_alert_deliveries", "status"): "pending, sent or failed",
    ("jobtrack_alert_deliveries", "last_error"): "the last failure, with every secret masked",
    ("jobtrack_alert_state", "value"): "what a rate rule measured last",
    ("jobtrack_alerts", "kind"): "firing, resolved or test",
    ("jobtrack_alerts", "body"): "what it says: counts, a sample of the jobs, the rule",
}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("eta_at", TS, comment="estimated finish, from the recent progress rate")
        )
    op.create_index("ix_jobs_root_id", "jobs", ["root_id"])
    op.create_index(
        "ix_jobs_group_id",
        "jobs",
        ["group_id"],
        postgresql_where=sa.text(_GROUPED),
        sqlite_where=sa.text(_GROUPED),
    )
    op.create_table(
        "job_logs",
        sa.Column(
            "seq", ROW_ID, primary_key=True, autoincrement=True, comment="orders and pages lines"
        ),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("logger", sa.String(255)),
        sa.Column("message", TEXT),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_job_logs"),
        **table_options(),
    )
    op.create_index("ix_job_logs_job_id_seq", "job_logs", ["job_id", "seq"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_LOGS_POLICY)
        for (table, column), comment in _COMMENTS.items():
            op.alter_column(table, column, comment=comment)
    elif is_mysql():  # a comment is set there by restating the whole column
        inspector = sa.inspect(op.get_bind())
        for (table, column), comment in _COMMENTS.items():
            found = {c["name"]: c for c in inspector.get_columns(table)}[column]
            default = found.get("default")
            op.alter_column(
                table,
                column,
                comment=comment,
                existing_type=found["type"],
                existing_nullable=found["nullable"],
                existing_server_default=sa.text(default) if default is not None else None,
            )


def downgrade() -> None:
    op.drop_table("job_logs")
    op.drop_index("ix_jobs_group_id", "jobs")
    op.drop_index("ix_jobs_root_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("eta_at")
