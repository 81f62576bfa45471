"""Alembic environment for jobtrack's tables; run through jobtrack.migrate."""

from __future__ import annotations

from alembic import context

from jobtrack.migrate import VERSION_TABLE
from jobtrack.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - jobtrack always passes a connection
    raise RuntimeError("jobtrack migrations run through jobtrack.migrate with a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
