"""Row-level security (PostgreSQL): the database itself keeps owners apart.

Everything here connects as a role the test creates (not a superuser: superusers bypass
row-level security) and owns a database of its own, dropped at the end. The proof is
black-box: plain SQL as that role, the store in an owner scope, and the JSON API and live
stream served with the app's own owner filter switched off.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from jobtrack.errors import JobNotFound, NotSupported
from jobtrack.models import (
    Batch,
    Event,
    Item,
    ItemStatus,
    JobFilter,
    JobStatus,
    JobUpdate,
    LogLine,
)
from jobtrack.schema import RLS_TABLES
from jobtrack.settings import Settings
from jobtrack.store import Store, owner_scope
from jobtrack.web import create_app
from tests.acceptance.webkit import read_events, serve
from tests.conftest import PG_ADMIN_URL, _unavailable

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:8]
APP_ROLE, REPORT_ROLE, DB = f"jt_app_{RUN}", f"jt_report_{RUN}", f"jt_rls_{RUN}"
BASE = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1].split("@", 1)[-1]  # host:port
A_TOKEN, B_TOKEN = "owner-a-token-0001", "owner-b-token-0001"


def url_as(role: str) -> str:
    return f"postgresql://{role}@{BASE}/{DB}"


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """A database owned by a plain role (no superuser, no BYPASSRLS), and its URL."""
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        _unavailable("PostgreSQL at 127.0.0.1:5432", "./scripts/test (it starts it)")
        raise
    with admin:
        admin.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
        admin.execute(f"CREATE ROLE {REPORT_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
        admin.execute(f"CREATE DATABASE {DB} OWNER {APP_ROLE}")
    try:
        yield url_as(APP_ROLE)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {REPORT_ROLE}")
            admin.execute(f"DROP ROLE IF EXISTS {APP_ROLE}")


def job(job_id: str, owner: str, status: JobStatus = JobStatus.COMPLETED) -> JobUpdate:
    return JobUpdate.transition(job_id, status, owner_id=owner, name=f"job of {owner}")


def rows_of(job_id: str) -> Batch:
    now = datetime.now(UTC)
    return Batch(
        items=[Item(job_id, "k1", ItemStatus.SUCCESS, processed_at=now)],
        events=[Event(job_id, now, JobStatus.RUNNING, 0)],
        logs=[LogLine(job_id, now, "INFO", "app", f"a line of {job_id}")],
    )


@pytest.fixture(scope="module")
def store(app_url: str) -> Iterator[Store]:
    """The app role's store, with jobs of owners a and b, row-level security on."""
    store = Store(app_url)
    store.ensure_schema()
    assert store.row_security() == dict.fromkeys(RLS_TABLES, False)
    for job_id, owner in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        store.write_batch(Batch([job(job_id, owner)]))
        store.write_batch(rows_of(job_id))
    assert store.row_security(True) == dict.fromkeys(RLS_TABLES, True)
    yield store
    store.close()


def sql(url: str, *statements: str, owner: str | None = None) -> list[Any]:
    """Run ``statements`` in one transaction as the URL's role; the last one's rows."""
    with psycopg.connect(url) as conn:
        if owner is not None:
            conn.execute("SELECT set_config('jobtrack.owner_id', %s, true)", (owner,))
        rows: list[Any] = []
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else [cursor.rowcount]
        return rows


def test_plain_sql_sees_and_changes_only_its_owners_rows(store: Store, app_url: str) -> None:
    # No setting at all (a BI tool, a hand-written report): no job.
    assert sql(app_url, "SELECT id FROM jobs") == []
    assert sql(app_url, "SELECT count(*) FROM job_items") == [(0,)]
    # As owner a: a's jobs, and only their items and events.
    assert sorted(sql(app_url, "SELECT id FROM jobs", owner="a")) == [("a1",), ("a2",)]
    for table in ("job_items", "job_events", "job_logs"):
        ids = sql(app_url, f"SELECT DISTINCT job_id FROM {table} ORDER BY 1", owner="a")
        assert ids == [("a1",), ("a2",)]
    # b's row cannot be changed, nor one made in b's name, nor a's given to b.
    assert sql(app_url, "UPDATE jobs SET name = 'x' WHERE id = 'b1'", owner="a") == [0]
    assert sql(app_url, "DELETE FROM job_items WHERE job_id = 'b1'", owner="a") == [0]
    for statement in (
        "INSERT INTO jobs (id, status, state_seq, created_at, updated_at, owner_id) "
        "VALUES ('x1', 'pending', 0, now(), now(), 'b')",
        "UPDATE jobs SET owner_id = 'b' WHERE id = 'a1'",
        "INSERT INTO job_items (job_id, key, status, processed_at) "
        "VALUES ('b1', 'k9', 'error', now())",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            sql(app_url, statement, owner="a")
    # Every owner ('*', what jobtrack's own connections use): everything.
    assert len(sql(app_url, "SELECT id FROM jobs", owner="*")) == 3
    assert store.get_job("b1").name == "job of b"  # the store itself serves every owner


def test_a_session_whose_owner_setting_ended_sees_nothing(store: Store, app_url: str) -> None:
    """After ``set_config(..., true)`` and its transaction's end the setting reads '',
    not NULL: it must match no job, not the jobs whose owner is ''. (Such a row can only
    come from before this was fixed, or from a hand-written insert: jobtrack stores an
    empty owner as none.)"""
    store.write_batch(Batch([job("e1", "")]))
    sql(  # its item, event and log line, as a session serving every owner
        app_url,
        "INSERT INTO job_items (job_id, key, status, processed_at) "
        "VALUES ('e1', 'k1', 'success', now())",
        "INSERT INTO job_events (job_id, at, status, attempt) VALUES ('e1', now(), 'running', 0)",
        "INSERT INTO job_logs (job_id, at, level, message) VALUES ('e1', now(), 'INFO', 'x')",
        owner="*",
    )
    with psycopg.connect(app_url) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('jobtrack.owner_id', 'a', true)")
        assert conn.execute("SELECT current_setting('jobtrack.owner_id', true)").fetchone() == ("",)
        for table in RLS_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        # Nor can it write a row with the owner ''.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO jobs (id, status, state_seq, created_at, updated_at, owner_id) "
                "VALUES ('e2', 'pending', 0, now(), now(), '')"
            )
    assert sql(app_url, "DELETE FROM jobs WHERE id = 'e1'", owner="*") == [1]


def test_an_empty_owner_is_stored_as_none(store: Store, app_url: str) -> None:
    """``@track(owner=...)`` given an empty value, and the helpers given owner_id='',
    store no owner: an empty owner is never a scope."""
    from jobtrack.job import JobSpec
    from jobtrack.tracker import Tracker

    def report(user_id: str) -> None: ...

    assert "owner_id" not in JobSpec(owner="user_id").describe(report, ("",), {})
    assert JobSpec(owner="user_id").describe(report, ("u1",), {})["owner_id"] == "u1"
    tracker = Tracker(Settings(database_url="unused", write_mode="sync"), store=store)
    tracker.upsert_job("e3", owner_id="", name="no owner")
    assert store.get_job("e3").owner_id is None
    assert sql(app_url, "DELETE FROM jobs WHERE id = 'e3'", owner="*") == [1]


def test_owner_scope_narrows_the_store(store: Store) -> None:
    with owner_scope("a"):
        assert sorted(j.id for j in store.list_jobs(JobFilter())) == ["a1", "a2"]
        with pytest.raises(JobNotFound):
            store.get_job("b1")
        assert store.list_items("b1") == [] and store.list_events("b1") == []
        assert store.count_by_status(["completed"]) == {"completed": 2}
    assert len(store.list_jobs(JobFilter())) == 3  # outside the scope: every owner
    with pytest.raises(ValueError, match="one owner id"):
        with owner_scope("*"):
            pass


def test_an_engine_given_to_the_store_serves_every_owner_too(store: Store, app_url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(app_url.replace("postgresql://", "postgresql+psycopg://"))
    given = Store(engine=engine, create_tables=False)
    assert len(given.list_jobs(JobFilter())) >= 3
    with owner_scope("b"):
        assert {j.owner_id for j in given.list_jobs(JobFilter())} == {"b"}
    given.close()
    engine.dispose()


def test_a_reporting_role_sees_one_tenant_whatever_it_sets(store: Store) -> None:
    """The recipe of docs/schema.md: a read-only role bound to one owner by a
    restrictive policy, so even setting '*' shows it nothing else."""
    sql(
        url_as(APP_ROLE),
        f"GRANT SELECT ON jobs, job_items, job_events TO {REPORT_ROLE}",
        f"CREATE POLICY report_a_only ON jobs AS RESTRICTIVE TO {REPORT_ROLE} "
        "USING (owner_id = 'a')",
        *(
            f"CREATE POLICY report_a_only ON {table} AS RESTRICTIVE TO {REPORT_ROLE} "
            f"USING (EXISTS (SELECT 1 FROM jobs WHERE jobs.id = {table}.job_id))"
            for table in ("job_items", "job_events")
        ),
    )
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {REPORT_ROLE} IN DATABASE {DB} SET jobtrack.owner_id = 'a'")
    report = url_as(REPORT_ROLE)
    assert sorted(sql(report, "SELECT id FROM jobs")) == [("a1",), ("a2",)]
    assert sorted(sql(report, "SELECT id FROM jobs", owner="*")) == [("a1",), ("a2",)]
    assert sql(report, "SELECT count(*) FROM job_events", owner="*") == [(2,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(report, "UPDATE jobs SET name = 'x' WHERE id = 'a1'")


def web(store: Store, *, owner_filter: bool) -> Any:
    settings = Settings(
        database_url="unused",
        web_tokens=f"{A_TOKEN}=viewer:a,{B_TOKEN}=viewer:b",
        web_poll_interval_s=0.2,
    )
    return create_app(store, settings, owner_filter=owner_filter)


@pytest.mark.parametrize("owner_filter", [False, True], ids=["database-alone", "both-layers"])
def test_the_api_keeps_owners_apart_with_the_apps_filter_removed(
    store: Store, owner_filter: bool
) -> None:
    client = TestClient(web(store, owner_filter=owner_filter))
    auth = {"Authorization": f"Bearer {A_TOKEN}"}
    listed = client.get("/api/jobs", headers=auth).json()["jobs"]
    assert sorted(j["id"] for j in listed) == ["a1", "a2"]
    assert client.get("/api/jobs", params={"owner_id": "b"}, headers=auth).json()["jobs"] == []
    assert client.get("/api/jobs/b1", headers=auth).status_code == 404
    assert client.get("/api/jobs/b1/items", headers=auth).status_code == 404
    assert client.get("/api/jobs/a1", headers=auth).json()["job"]["owner_id"] == "a"
    page = client.get("/?tab=all", headers=auth)
    assert "job of a" in page.text and "job of b" not in page.text


def test_the_stream_reads_changes_back_as_the_streams_owner(store: Store) -> None:
    with (
        serve(web(store, owner_filter=False)) as base,
        httpx.stream(
            "GET",
            f"{base}/api/stream",
            headers={"Authorization": f"Bearer {A_TOKEN}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        ) as response,
    ):
        lines = response.iter_lines()
        for line in lines:
            if line == ": connected":
                break
        # Both owners' jobs change; NOTIFY announces both ids to the feed.
        store.write_batch(Batch([job("b1", "b", JobStatus.FAILED), job("b2", "b")]))
        store.write_batch(Batch([job("a3", "a", JobStatus.RUNNING)]))
        events = read_events(lines, lambda evs: any(e["id"] == "a3" for e in evs))
        assert {e["owner_id"] for e in events} == {"a"}


def test_sqlite_has_no_row_level_security(tmp_path: Any) -> None:
    lite = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.raises(NotSupported, match="row-level security needs PostgreSQL"):
        lite.row_security(True)
    with owner_scope("a"):  # changes nothing there (documented): the app filters
        lite.write_batch(Batch([job("b1", "b")]))
        assert [j.id for j in lite.list_jobs(JobFilter())] == ["b1"]
    lite.close()
