"""partitioned job tables (PostgreSQL, optional): the table that records the period

The conversion itself is ``jobtrack db partition --by month|day`` (see
docs/operations.md, "Partitioned tables"): it rebuilds the four job tables, so it runs
only when an operator asks for it. Without a row here, nothing is partitioned.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobtrack.migrations.dialects import TS, table_options

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobtrack_partitioning",
        sa.Column("period", sa.String(10), nullable=False, comment="month or day"),
        sa.Column(
            "since",
            TS,
            nullable=False,
            comment="when the tables were converted",
        ),
        sa.PrimaryKeyConstraint("period", name="pk_jobtrack_partitioning"),
        comment="set by jobtrack db partition: the job tables are partitioned by this period",
        **table_options(),
    )


def downgrade() -> None:
    op.drop_table("jobtrack_partitioning")
