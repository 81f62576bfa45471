"""ten million jobs: a word index for search (PostgreSQL), so a search holding a rare
whole word reads that word's jobs, not the posting lists of its common trigrams

On a large table this revision builds the index for minutes and holds writes to
``jobs`` meanwhile: see docs/operations.md ("Upgrading a large table") for building it
concurrently first.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: As jobtrack.schema's WORDS_INDEX_DDL was when this revision was written (a revision
#: never changes; a test checks they still agree).
_WORDS_INDEX = "ix_jobs_search_words"
_WORDS_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {_WORDS_INDEX} ON jobs USING gin "
    "(array_remove(regexp_split_to_array(lower((coalesce(name, '') || chr(31) || "
    "coalesce(error_message, ''))), '[^[:alnum:]]+'), ''))"
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # IF NOT EXISTS: an operator may have built it concurrently first. The search
        # picks its word from the index's statistics: gathered now, not at the next
        # autovacuum.
        op.execute(_WORDS_INDEX_DDL)
        op.execute("ANALYZE jobs")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {_WORDS_INDEX}")
