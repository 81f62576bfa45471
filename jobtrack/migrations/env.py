"""Alembic environment for jobtrack's tables; run through jobtrack.migrate.

Online: jobtrack passes the connection (inside its own transaction and lock). Offline
(``jobtrack db upgrade --sql``): the URL is passed and the SQL is printed.
"""

from __future__ import annotations

from alembic import context

from jobtrack.migrate import VERSION_TABLE
from jobtrack.schema import metadata

connection = context.config.attributes.get("connection")

if connection is None:
    context.configure(
        url=context.config.attributes["offline_url"],
        literal_binds=True,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
    )
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
with context.begin_transaction():
    context.run_migrations()
