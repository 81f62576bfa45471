"""The migrations build exactly the tables ``schema.py`` defines, on both backends."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobtrack.migrate import head_revision
from jobtrack.schema import metadata
from jobtrack.store import Store


def test_a_migrated_database_matches_the_table_definitions(store: Store) -> None:
    assert store.schema_revision() == head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff: list[Any] = compare_metadata(context, metadata)
    # Alembic's own version table is the only thing not in the table definitions.
    leftover = [
        d for d in diff if not (d[0] == "remove_table" and d[1].name.endswith("alembic_version"))
    ]
    assert leftover == []
