"""MySQL and MariaDB: an index on jobs.updated_at, the live stream's change cursor

Those databases have no LISTEN/NOTIFY: the dashboard's live stream polls for the jobs
changed since a moment, which this index makes one short range however large the table.
PostgreSQL and SQLite are left as they are.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import op

from jobtrack.migrations.dialects import is_mysql

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None

#: As jobtrack.schema's CHANGES_INDEX was when this revision was written.
_CHANGES_INDEX = "ix_jobs_updated_at"


def upgrade() -> None:
    if is_mysql():
        op.create_index(_CHANGES_INDEX, "jobs", ["updated_at"])


def downgrade() -> None:
    if is_mysql():
        op.drop_index(_CHANGES_INDEX, "jobs")
