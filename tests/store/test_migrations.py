"""The migrations build exactly the tables ``schema.py`` defines, on every backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import jobtrack
from jobtrack.migrate import alembic_config, head_revision, upgrade_to_head
from jobtrack.schema import (
    DIALECT_ONLY_INDEXES,
    ERROR_GROUP_FUNCTION_DDL,
    ERROR_GROUP_TRIGGERS_DDL,
    FAILURE_GROUPS_INDEX_DDL,
    FILTER_COLUMNS,
    ID_PREFIX_INDEX_DDL,
    SEARCH_INDEX_DDL,
    WORDS_INDEX_DDL,
    jobs,
    metadata,
)
from jobtrack.store import Store
from tests.conftest import fresh_pg_database


def test_a_migrated_database_matches_the_table_definitions(store: Store) -> None:
    assert store.schema_revision() == head_revision()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff: list[Any] = compare_metadata(context, metadata)
    # Alembic's own version table, and the indexes revisions make on some backends only
    # (see schema.DIALECT_ONLY_INDEXES), are the only things the table definitions do
    # not hold.
    leftover = [
        d
        for d in diff
        if not (d[0] == "remove_table" and d[1].name.endswith("alembic_version"))
        and not (d[0] == "remove_index" and d[1].name in DIALECT_ONLY_INDEXES)
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
    groups = _revision("0015_handled_failure_groups")
    assert groups.FUNCTION == ERROR_GROUP_FUNCTION_DDL
    assert groups.TRIGGERS == ERROR_GROUP_TRIGGERS_DDL
    assert groups.INDEX == FAILURE_GROUPS_INDEX_DDL


def _jobs_indexes(url: str) -> dict[str, tuple[int, list[str]]]:
    """Each index of ``jobs`` in PostgreSQL's catalog: its oid and its included columns
    (Alembic's comparison above does not see those)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.oid, coalesce(array_agg(a.attname ORDER BY k.n) "
            "FILTER (WHERE k.n > i.indnkeyatts), '{}') "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, n) "
            "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = 'jobs'::regclass AND NOT i.indisprimary "
            "GROUP BY c.relname, c.oid"
        ).fetchall()
    return {name: (oid, list(included)) for name, oid, included in rows}


def _filter_indexes(url: str) -> dict[str, tuple[int, list[str]]]:
    names = {f"ix_jobs_{column}_status_created_at" for column in FILTER_COLUMNS}
    return {name: made for name, made in _jobs_indexes(url).items() if name in names}


def test_the_migrated_indexes_carry_the_columns_the_schema_includes(pg_url: str) -> None:
    """Every index of ``jobs`` carries what its definition includes (PostgreSQL; SQLite
    has no INCLUDE, and the comparison above covers its indexes)."""
    store = Store(pg_url)
    store.ensure_schema()
    store.close()
    made = _jobs_indexes(pg_url)
    expected = {
        str(index.name): list(index.dialect_options["postgresql"]["include"] or [])
        for index in jobs.indexes
    }
    assert {name: made[name][1] for name in expected} == expected
    assert made["ix_jobs_owner_id_status_created_at"][1] == ["job_type", "queue"]
    assert made["ix_jobs_created_at"][1] == ["status", "job_type", "duration_ms"]


def test_revision_0012_keeps_filter_indexes_built_by_hand_and_rebuilds_the_rest() -> None:
    """An operator who built an index concurrently, as docs/operations.md shows, keeps
    it (the upgrade finds its columns and skips it); the others are rebuilt; downgrading
    gives the plain indexes back."""
    with fresh_pg_database() as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0011")
            assert [inc for _, inc in _filter_indexes(url).values()] == [[]] * len(FILTER_COLUMNS)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE INDEX CONCURRENTLY ix_jobs_owner_id_new ON jobs "
                    "(owner_id, status, created_at) INCLUDE (job_type, queue)"
                )
                conn.execute("DROP INDEX CONCURRENTLY ix_jobs_owner_id_status_created_at")
                conn.execute(
                    "ALTER INDEX ix_jobs_owner_id_new RENAME TO ix_jobs_owner_id_status_created_at"
                )
            by_hand = _filter_indexes(url)
            with engine.begin() as conn:
                upgrade_to_head(conn)
            upgraded = _filter_indexes(url)
            assert {name: inc for name, (_, inc) in upgraded.items()} == {
                "ix_jobs_task_name_status_created_at": ["owner_id", "job_type", "queue"],
                "ix_jobs_owner_id_status_created_at": ["job_type", "queue"],
                "ix_jobs_job_type_status_created_at": ["queue"],
                "ix_jobs_queue_status_created_at": [],
            }
            kept = "ix_jobs_owner_id_status_created_at"
            assert upgraded[kept][0] == by_hand[kept][0]  # the same index, not rebuilt
            rebuilt = "ix_jobs_task_name_status_created_at"
            assert upgraded[rebuilt][0] != by_hand[rebuilt][0]
            with engine.begin() as conn:
                command.downgrade(alembic_config(conn), "0011")
            assert [inc for _, inc in _filter_indexes(url).values()] == [[]] * len(FILTER_COLUMNS)
        finally:
            engine.dispose()


def test_revision_0014_gives_jobs_owned_by_nobody_no_owner_and_back() -> None:
    """Jobs stored with the owner '' before the upgrade have none after it (the policy
    change itself is proven in tests/integration/test_row_security.py); downgrading
    restores revision 0005's policy."""
    with fresh_pg_database() as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0012")
            with psycopg.connect(url) as conn:
                for job_id, owner in (("j1", ""), ("j2", "acme"), ("j3", None)):
                    conn.execute(
                        "INSERT INTO jobs (id, status, state_seq, created_at, updated_at, "
                        "owner_id) VALUES (%s, 'pending', 0, now(), now(), %s)",
                        (job_id, owner),
                    )
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "0014")
            with psycopg.connect(url) as conn:
                owners = conn.execute("SELECT id, owner_id FROM jobs ORDER BY id").fetchall()
                policy = conn.execute(
                    "SELECT qual FROM pg_policies WHERE tablename = 'jobs'"
                ).fetchone()
            assert owners == [("j1", None), ("j2", "acme"), ("j3", None)]
            assert policy is not None and "NULLIF" in policy[0]
            with engine.begin() as conn:
                command.downgrade(alembic_config(conn), "0012")
            with psycopg.connect(url) as conn:
                policy = conn.execute(
                    "SELECT qual FROM pg_policies WHERE tablename = 'jobs'"
                ).fetchone()
            assert policy is not None and "NULLIF" not in policy[0]
        finally:
            engine.dispose()


def test_stores_of_one_process_migrate_at_the_same_time(tmp_path: Path) -> None:
    """Alembic runs a migration through module globals it sets up and tears down: two
    stores upgrading at once in one process (a writer's thread and a helper, two
    trackers) tore down each other's ("KeyError: 'config'") before the runs were
    serialized. Four new databases, upgraded together from four threads, all reach head."""
    import threading

    stores = [Store(f"sqlite:///{tmp_path / f'db{n}.db'}") for n in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def upgrade(store: Store) -> None:
        start.wait()
        try:
            store.ensure_schema()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert [s.schema_revision() for s in stores] == [head_revision()] * len(stores)
    finally:
        for store in stores:
            store.close()
