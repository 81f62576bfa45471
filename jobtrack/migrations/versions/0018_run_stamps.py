"""runs of one job id: jobs.sent_at, when the message of the run a row follows was
published

A task id published again after its job ended is a new run of that job: the publisher
stamps each message, every row a run writes carries the stamp, and a later stamp takes
the job (see docs/design.md, "A job's id published again"). Rows from before this
revision have none and merge as they always did.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import TS

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_COMMENT = "when the message of the run the row follows was published (its stamp)"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sent_at", TS, comment=_COMMENT))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sent_at")
