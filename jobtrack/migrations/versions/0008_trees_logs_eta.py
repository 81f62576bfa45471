"""workflow trees, per-job logs, time left: jobs.root_id index, job_logs, jobs.eta_at

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
_GROUPED = "group_id IS NOT NULL"
#: The same rule as the other job-scoped tables (revision 0005): the session serves every
#: owner, or the line belongs to a job it may see.
_LOGS_POLICY = "CREATE POLICY jobtrack_owner ON job_logs USING ({rule}) WITH CHECK ({rule})".format(
    rule="current_setting('jobtrack.owner_id', true) = '*' OR "
    "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_logs.job_id)"
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("eta_at", _TS, comment="estimated finish, from the recent progress rate")
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
            "seq", _ROW_ID, primary_key=True, autoincrement=True, comment="orders and pages lines"
        ),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("logger", sa.String(255)),
        sa.Column("message", sa.Text),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_job_logs"),
    )
    op.create_index("ix_job_logs_job_id_seq", "job_logs", ["job_id", "seq"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_LOGS_POLICY)


def downgrade() -> None:
    op.drop_table("job_logs")
    op.drop_index("ix_jobs_group_id", "jobs")
    op.drop_index("ix_jobs_root_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("eta_at")
