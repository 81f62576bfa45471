"""row-level security: an empty owner setting matches no job; no job is owned by ''

A session setting, once set in a transaction (``set_config(..., true)``), reads ``''``
rather than NULL after that transaction ends. Revision 0005's policy compared it with
``owner_id`` as it was, so such a session saw the jobs whose owner was ``''`` (and their
items, events and logs). The policy now compares with ``NULLIF(setting, '')``: an unset
or ended setting matches nothing. Jobs stored with the owner ``''`` are given no owner
(NULL), as jobtrack now stores them (docs/schema.md).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_OWNER = "current_setting('jobtrack.owner_id', true)"
_RULE = f"{_OWNER} = '*' OR owner_id = NULLIF({_OWNER}, '')"
_OLD_RULE = f"{_OWNER} = '*' OR owner_id = {_OWNER}"


def upgrade() -> None:
    op.execute("UPDATE jobs SET owner_id = NULL WHERE owner_id = ''")
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER POLICY jobtrack_owner ON jobs USING ({_RULE}) WITH CHECK ({_RULE})")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"ALTER POLICY jobtrack_owner ON jobs USING ({_OLD_RULE}) WITH CHECK ({_OLD_RULE})"
        )
