"""MySQL and MariaDB: an index on jobs.updated_at, the live stream's change cursor, and a
FULLTEXT index over name and error text for search

Those databases have no LISTEN/NOTIFY: the dashboard's live stream polls for the jobs
changed since a moment, which the first index makes one short range however large the
table. A search holding whole words reads the jobs holding them by the second.
PostgreSQL and SQLite are left as they are.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import op

from jobtrack.migrations.dialects import is_mysql

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None

#: As jobtrack.schema's CHANGES_INDEX and FULLTEXT_INDEX were when this revision was
#: written.
_CHANGES_INDEX = "ix_jobs_updated_at"
_FULLTEXT_INDEX = "ix_jobs_search_fulltext"


def upgrade() -> None:
    if is_mysql():
        op.create_index(_CHANGES_INDEX, "jobs", ["updated_at"])
        op.execute(f"CREATE FULLTEXT INDEX {_FULLTEXT_INDEX} ON jobs (name, error_message)")


def downgrade() -> None:
    if is_mysql():
        op.drop_index(_FULLTEXT_INDEX, "jobs")
        op.drop_index(_CHANGES_INDEX, "jobs")
