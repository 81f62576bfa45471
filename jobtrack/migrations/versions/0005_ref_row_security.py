"""a ref to the domain object a job works on; row-level security policies (PostgreSQL)

The policies exist from this revision on but bind nobody until row-level security is
enabled on the tables (``jobtrack db rls enable``): see docs/schema.md.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OWNER = "current_setting('jobtrack.owner_id', true)"
_EVERY_OWNER = f"{_OWNER} = '*'"
_VISIBLE_JOB = "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {table}.job_id)"
#: One policy per table, the same for reads and writes: a row is visible and writable
#: when the session serves every owner (``*``), or it is the session's owner's (items
#: and events: they belong to a job the session may see, which the jobs policy decides).
#: Unset, the setting matches nothing: a connection that forgot it sees no job.
RLS_POLICIES = tuple(
    f"CREATE POLICY jobtrack_owner ON {table} USING ({rule}) WITH CHECK ({rule})"
    for table, rule in (
        ("jobs", f"{_EVERY_OWNER} OR owner_id = {_OWNER}"),
        ("job_items", f"{_EVERY_OWNER} OR {_VISIBLE_JOB.format(table='job_items')}"),
        ("job_events", f"{_EVERY_OWNER} OR {_VISIBLE_JOB.format(table='job_events')}"),
    )
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "ref",
                sa.String(255),
                comment="what the job works on: @track(ref=...), upsert_job(ref=)",
            )
        )
    op.create_index(
        "ix_jobs_ref_created_at",
        "jobs",
        ["ref", "created_at"],
        postgresql_ops={"ref": "varchar_pattern_ops"},
    )
    if op.get_context().dialect.name == "postgresql":
        for statement in RLS_POLICIES:
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in ("job_events", "job_items", "jobs"):
            op.execute(f"DROP POLICY IF EXISTS jobtrack_owner ON {table}")
    op.drop_index("ix_jobs_ref_created_at", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ref")
