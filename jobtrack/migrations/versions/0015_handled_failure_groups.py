"""handled failures and failure groups: jobs.retried_by, jobs.error_group (PostgreSQL: kept
by a trigger, filled for the failed and lost jobs already there) and the failure groups'
index

On a large table the fill reads every failed and lost job once; see docs/operations.md
("Upgrading a large table") for building the index concurrently first.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: As jobtrack.models' ERROR_MASKS and ERROR_GROUP_CHARS were when this revision was
#: written (a revision never changes with the code after it).
_MASKS = (
    ("'[^']*'", "'…'"),
    ('"[^"]*"', '"…"'),
    ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<id>"),
    ("[0-9a-fA-F]{8,}", "<id>"),
    ("[A-Za-z_]+[0-9][A-Za-z0-9_]*|[0-9]+[A-Za-z_][A-Za-z0-9_]*", "<id>"),
    ("[0-9]+", "<n>"),
)
_CHARS = 1000
_FAILURES = "status IN ('failed', 'lost') AND retried_by IS NULL"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _group(row: str) -> str:
    masked = f"left(coalesce({row}.error_message, ''), {_CHARS})"
    for pattern, replacement in _MASKS:
        masked = f"regexp_replace({masked}, {_quoted(pattern)}, {_quoted(replacement)}, 'g')"
    return (
        f"CASE WHEN {row}.error_type IS NULL AND {row}.error_message IS NULL THEN NULL "
        f"ELSE md5(coalesce({row}.task_name, '') || chr(31) || coalesce({row}.error_type, '') "
        f"|| chr(31) || {masked}) END"
    )


FUNCTION = (
    "CREATE OR REPLACE FUNCTION jobtrack_error_group() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN NEW.error_group := {_group('NEW')}; RETURN NEW; END $$"
)
TRIGGERS = (
    "CREATE TRIGGER jobtrack_error_group_insert BEFORE INSERT ON jobs FOR EACH ROW "
    "WHEN (NEW.error_type IS NOT NULL OR NEW.error_message IS NOT NULL) "
    "EXECUTE FUNCTION jobtrack_error_group()",
    "CREATE TRIGGER jobtrack_error_group_update BEFORE UPDATE ON jobs FOR EACH ROW "
    "WHEN (NEW.error_message IS DISTINCT FROM OLD.error_message "
    "OR NEW.error_type IS DISTINCT FROM OLD.error_type "
    "OR NEW.task_name IS DISTINCT FROM OLD.task_name) "
    "EXECUTE FUNCTION jobtrack_error_group()",
)
INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_jobs_failure_groups ON jobs (error_group, completed_at) "
    f"INCLUDE (updated_at) WHERE {_FAILURES}"
)


_COLUMNS = (
    ("retried_by", 255, "the job an operator retried or replayed this one as (the newest)"),
    ("error_group", 32, "the failure group of its error (PostgreSQL: kept by a trigger)"),
)


def upgrade() -> None:
    # Columns added by hand first (to build the index concurrently) are kept. (Printing
    # the SQL, nothing can be looked at: it is written for a database without them.)
    context = op.get_context()
    there = (
        set()
        if context.as_sql
        else {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}
    )
    with op.batch_alter_table("jobs") as batch:
        for name, length, comment in _COLUMNS:
            if name in there:
                batch.alter_column(name, comment=comment)
            else:
                batch.add_column(sa.Column(name, sa.String(length), comment=comment))
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite reads its failure groups in Python
    op.execute(FUNCTION)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(
        f"UPDATE jobs SET error_group = {_group('jobs')} WHERE status IN ('failed', 'lost') "
        "AND (error_type IS NOT NULL OR error_message IS NOT NULL)"
    )
    op.execute(INDEX)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_jobs_failure_groups")
        op.execute("DROP TRIGGER IF EXISTS jobtrack_error_group_insert ON jobs")
        op.execute("DROP TRIGGER IF EXISTS jobtrack_error_group_update ON jobs")
        op.execute("DROP FUNCTION IF EXISTS jobtrack_error_group()")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("error_group")
        batch.drop_column("retried_by")
