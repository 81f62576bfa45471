"""The migrations build exactly the tables ``schema.py`` defines, on both backends."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import jobtrack
from jobtrack.migrate import head_revision
from jobtrack.schema import (
    ID_PREFIX_INDEX_DDL,
    POSTGRESQL_ONLY_INDEXES,
    SEARCH_INDEX_DDL,
    WORDS_INDEX_DDL,
    metadata,
)
from jobtrack.store import Store


def test_a_migrated_database_matches_the_table_definitions(store: Store) -> None:
    assert store.schema_revision() == head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff: list[Any] = compare_metadata(context, metadata)
    # Alembic's own version table, and the indexes revisions 0009 and 0011 make on
    # PostgreSQL only
    # (see schema.POSTGRESQL_ONLY_INDEXES), are the only things the table definitions do
    # not hold.
    leftover = [
        d
        for d in diff
        if not (d[0] == "remove_table" and d[1].name.endswith("alembic_version"))
        and not (d[0] == "remove_index" and d[1].name in POSTGRESQL_ONLY_INDEXES)
    ]
    assert leftover == []


def _revision(name: str) -> Any:
    path = Path(jobtrack.__file__).parent / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
    assert spec is not None and spec.loader is not None
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    return revision


def test_the_search_indexes_are_made_as_the_schema_spells_them() -> None:
    scale = _revision("0009_scale_indexes")
    assert scale._SEARCH_INDEX_DDL == SEARCH_INDEX_DDL
    assert scale._ID_PREFIX_INDEX_DDL == ID_PREFIX_INDEX_DDL
    assert _revision("0011_search_words")._WORDS_INDEX_DDL == WORDS_INDEX_DDL
