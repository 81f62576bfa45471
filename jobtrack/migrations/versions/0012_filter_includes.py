"""ten million jobs: the dashboard filters' indexes carry the filters after their own
(PostgreSQL: INCLUDE), so filters combined are checked in one index, not job by job

On a large table this revision rebuilds three indexes for minutes and holds writes to
``jobs`` meanwhile: see docs/operations.md ("Upgrading a large table") for building them
concurrently first.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: As jobtrack.schema's FILTER_COLUMNS was when this revision was written: each filter's
#: index carries the filters after it.
_FILTERS = ("task_name", "owner_id", "job_type", "queue")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite has no INCLUDE: its indexes stay as they are
    for n, column in enumerate(_FILTERS[:-1]):
        name = f"ix_jobs_{column}_status_created_at"
        carried = list(_FILTERS[n + 1 :])
        if _included(name) == carried:
            continue  # built by hand, concurrently, before the upgrade
        op.drop_index(name, "jobs", if_exists=True)
        op.create_index(name, "jobs", [column, "status", "created_at"], postgresql_include=carried)


def _included(name: str) -> list[str]:
    """The included (non-key) columns of index ``name``, in order; none if it does not
    exist."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT a.attname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE c.relname = :name "
            "AND c.relnamespace = to_regnamespace(current_schema())::oid "
            "AND k.n > i.indnkeyatts ORDER BY k.n"
        ),
        {"name": name},
    )
    return [str(row[0]) for row in rows]


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for column in _FILTERS[:-1]:
        name = f"ix_jobs_{column}_status_created_at"
        op.drop_index(name, "jobs")
        op.create_index(name, "jobs", [column, "status", "created_at"])
