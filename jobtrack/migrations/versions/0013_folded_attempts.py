"""the hot path: job_events.started_at, on an attempt's outcome whose running was not
written on its own (the attempt started and ended between two flushes of its writer),
and the job_trace view, which gives every transition back as its own row

Adding a nullable column without a default rewrites nothing on PostgreSQL (partitioned
tables included: the column reaches every partition).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import TS

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


#: As jobtrack.schema's trace view was when this revision was written.
_VIEW = (
    "CREATE VIEW job_trace{invoker} AS "
    "SELECT job_id, started_at AS at, 'running' AS status, attempt, worker, "
    "NULL AS error_type, NULL AS error_message, NULL AS stage, NULL AS note, id, 0 AS step "
    "FROM job_events WHERE started_at IS NOT NULL "
    "UNION ALL "
    "SELECT job_id, at, status, attempt, worker, error_type, error_message, stage, note, "
    "id, 1 AS step FROM job_events"
)


def upgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(
            sa.Column(
                "started_at",
                TS,
                comment="on an attempt's outcome whose running was not written apart: its start",
            )
        )
    bind = op.get_bind()
    invoker = ""
    if bind.dialect.name == "postgresql":
        version = int(bind.execute(sa.text("SHOW server_version_num")).scalar_one())
        invoker = " WITH (security_invoker = true)" if version >= 150000 else ""
    op.execute(_VIEW.format(invoker=invoker))


def downgrade() -> None:
    op.execute("DROP VIEW job_trace")
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("started_at")
