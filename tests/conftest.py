"""Shared fixtures: real PostgreSQL, MariaDB, SQLite and Redis; no mocks.

A missing service fails the run in CI (CI=true) and skips outside it, with a message
saying how to start it. Every service address comes from the environment
(JOBTRACK_TEST_PG, JOBTRACK_TEST_MYSQL, JOBTRACK_TEST_REDIS, JOBTRACK_TEST_REDIS_BACKEND),
and every test spools into a folder of its own. PostgreSQL and MariaDB tests get a
database of their own for the session, dropped at the end; every store is checked for
leaked connections when it closes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import redis
from sqlalchemy.engine import make_url

from jobtrack.store import Store
from tests.memory_broker import use_quick_memory
from tests.pgcluster import StreamingPair, server_bin

PG_ADMIN_URL = os.environ.get("JOBTRACK_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")
#: A MariaDB (or MySQL) server and an account that may create databases.
MYSQL_ADMIN_URL = os.environ.get("JOBTRACK_TEST_MYSQL", "mariadb://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("JOBTRACK_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: Result backend for the tests that need one: the broker's server, the next database.
REDIS_BACKEND_URL = os.environ.get(
    "JOBTRACK_TEST_REDIS_BACKEND",
    f"{REDIS_URL.rsplit('/', 1)[0]}/{int(REDIS_URL.rsplit('/', 1)[1] or 0) + 1}",
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# In-process workers on memory:// pick messages up and stop within hundredths of a
# second, not 1 and 3-4 s (see tests/memory_broker.py).
use_quick_memory()

#: The container tests run from scripts/test-containers only (it readies the engine).
collect_ignore = [] if os.environ.get("JOBTRACK_CONTAINER_TESTS") else ["containers", "smoke"]


def _unavailable(what: str, how: str) -> None:
    message = f"{what} is not reachable; start it with: {how}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def fresh_pg_database(prefix: str = "jobtrack_test") -> Iterator[str]:
    """A new PostgreSQL database, dropped (with whatever still holds it) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        _unavailable(
            "PostgreSQL at 127.0.0.1:5432",
            "./scripts/test (it starts it) or pg_ctlcluster <version> main start",
        )
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    with fresh_pg_database() as url:
        yield url


def _mysql_admin() -> pymysql.connections.Connection[Any]:
    url = make_url(MYSQL_ADMIN_URL)
    try:
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            connect_timeout=5,
            autocommit=True,
        )
    except pymysql.err.OperationalError:
        _unavailable(
            "MariaDB at 127.0.0.1:3306",
            "./scripts/test (it starts it) or start-stop-daemon --start --oknodo "
            "--background --exec /usr/sbin/mariadbd",
        )
        raise


@contextmanager
def fresh_mysql_database(prefix: str = "jobtrack_test") -> Iterator[str]:
    """A new MariaDB database (utf8mb4), dropped afterwards: its URL (no driver named,
    so the store picks its own)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield make_url(MYSQL_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database for this test session."""
    with fresh_mysql_database() as url:
        yield url


def mysql_connections(url: str) -> int:
    """Connections open to the database of ``url`` (other than the asking one)."""
    admin = _mysql_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist "
                "WHERE db = %s AND id <> CONNECTION_ID()",
                (make_url(url).database,),
            )
            row = cursor.fetchone()
    finally:
        admin.close()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="session")
def streaming_pair() -> Iterator[StreamingPair]:
    """A PostgreSQL primary and its streaming replica, both this session's own (see
    tests/pgcluster.py), jobtrack's tables made on the primary and replayed."""
    found = server_bin()
    if found is None:
        _unavailable("PostgreSQL's server programs (initdb)", "apt-get install postgresql")
    assert found is not None
    with StreamingPair(found) as pair:
        schema = Store(pair.primary_url)
        schema.ensure_schema()
        schema.close()
        pair.caught_up()
        yield pair


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError:
        _unavailable(
            "Redis at 127.0.0.1:6379",
            "./scripts/test (it starts it) or redis-server --daemonize yes",
        )
    return REDIS_URL


def pg_connections(url: str, application: str = "jobtrack") -> int:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = %s AND pid <> pg_backend_pid()",
            (dbname, application),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float = 20.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll until ``condition()`` is truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message} (last: {last!r})")


@pytest.fixture(autouse=True)
def own_spool(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test spools into a folder of its own (worker subprocesses inherit it), never
    into the system's temp directory."""
    folder = tmp_path_factory.mktemp("spool")
    monkeypatch.setenv("JOBTRACK_SPOOL_DIR", str(folder))
    return folder


@pytest.fixture
def still_rate_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's rate limits read a clock held still: no budget refills between a
    test's requests, however slowly the machine runs them (mocking time only)."""
    from jobtrack.web import auth

    monkeypatch.setattr(auth, "_limit_clock", lambda: 1_000 * 60 + 30.0)


@pytest.fixture(scope="session")
def redis_backend_url(redis_url: str) -> str:
    return REDIS_BACKEND_URL


def pg_address(url: str) -> tuple[str, int]:
    """The host and port of a PostgreSQL URL (for a proxy in front of it)."""
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """Each store test runs on every backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobtrack.db'}"
        return
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")
    _empty(url)
    yield url
    _empty(url)  # the session's database is shared: leave nothing behind


def _empty(url: str) -> None:
    store = Store(url)
    store.ensure_schema()
    store.delete_all()
    store.close()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    store.ensure_schema()
    yield store
    store.close()
    if db_url.startswith("postgresql"):
        wait_for(lambda: pg_connections(db_url) == 0, 5, message="store connections closed")
    elif db_url.startswith(("mysql", "mariadb")):
        wait_for(lambda: mysql_connections(db_url) == 0, 5, message="store connections closed")
