"""ten million jobs: an index per dashboard filter and status, keyset item pages, and a
trigram index for search (PostgreSQL with pg_trgm)

On a large table this revision builds indexes for minutes and holds writes to ``jobs``
meanwhile: see docs/operations.md ("Upgrading a large table") for building them
concurrently first.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import is_mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

log = logging.getLogger("jobtrack.migrations")

#: As jobtrack.schema's SEARCH_INDEX_DDL and ID_PREFIX_INDEX_DDL were when this revision
#: was written (a revision never changes; a test checks they still agree).
_SEARCH_INDEX = "ix_jobs_search_trgm"
_SEARCH_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {_SEARCH_INDEX} ON jobs USING gin "
    "((coalesce(name, '') || chr(31) || coalesce(error_message, '')) gin_trgm_ops)"
)
_ID_PREFIX_INDEX = "ix_jobs_id_prefix"
_ID_PREFIX_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {_ID_PREFIX_INDEX} ON jobs (id varchar_pattern_ops)"
)
#: Filter columns that get a (column, status, created_at) index.
_FILTERS = ("job_type", "owner_id", "task_name", "queue")


def upgrade() -> None:
    # IF NOT EXISTS: an operator may have built them concurrently first (see
    # docs/operations.md, "Upgrading a large table"). MySQL 8 has neither IF NOT EXISTS
    # nor IF EXISTS for indexes (nor builds them concurrently): plain statements there.
    guard = not is_mysql()
    for column in _FILTERS:
        op.create_index(
            f"ix_jobs_{column}_status_created_at",
            "jobs",
            [column, "status", "created_at"],
            if_not_exists=guard,
        )
    op.create_index("ix_job_items_job_id_id", "job_items", ["job_id", "id"], if_not_exists=guard)
    op.create_index(
        "ix_job_items_job_id_status_id",
        "job_items",
        ["job_id", "status", "id"],
        if_not_exists=guard,
    )
    if op.get_context().dialect.name == "postgresql" and not _carries_stats():
        # stats read from the index alone
        op.drop_index("ix_jobs_created_at", "jobs")
        op.create_index(
            "ix_jobs_created_at",
            "jobs",
            ["created_at"],
            postgresql_include=["status", "job_type", "duration_ms"],
        )
    op.drop_index("ix_jobs_job_type_created_at", "jobs", if_exists=guard)
    op.drop_index("ix_jobs_owner_id_created_at", "jobs", if_exists=guard)
    op.drop_index("ix_job_items_job_id_status", "job_items", if_exists=guard)
    if op.get_context().dialect.name == "postgresql":
        op.execute(_ID_PREFIX_INDEX_DDL)
        _search_index()


def _carries_stats() -> bool:
    """Whether ix_jobs_created_at has its included columns already (built by hand,
    concurrently, before the upgrade)."""
    found = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT i.indnatts > i.indnkeyatts FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'ix_jobs_created_at' "
                "AND c.relnamespace = to_regnamespace(current_schema())::oid"
            )
        )
        .scalar()
    )
    return bool(found)


def _search_index() -> None:
    """The trigram index, where pg_trgm is (or can be) installed; else a warning: a
    search then reads the table, bounded by the read time limit."""
    bind = op.get_bind()
    savepoint = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        log.warning(
            "pg_trgm is not available (%s): job search reads the table; see "
            "docs/schema.md (search) to add the index later",
            str(exc.orig).splitlines()[0],
            extra={"job_id": None, "action": "migrate"},
        )
        return
    savepoint.commit()
    bind.execute(sa.text(_SEARCH_INDEX_DDL))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {_SEARCH_INDEX}")
        op.execute(f"DROP INDEX IF EXISTS {_ID_PREFIX_INDEX}")
    op.drop_index("ix_job_items_job_id_status_id", "job_items")
    op.drop_index("ix_job_items_job_id_id", "job_items")
    op.create_index("ix_job_items_job_id_status", "job_items", ["job_id", "status"])
    for column in _FILTERS:
        op.drop_index(f"ix_jobs_{column}_status_created_at", "jobs")
    op.create_index("ix_jobs_owner_id_created_at", "jobs", ["owner_id", "created_at"])
    op.create_index("ix_jobs_job_type_created_at", "jobs", ["job_type", "created_at"])
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_jobs_created_at", "jobs")
        op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
