"""Every SQL statement jobtrack runs. One transaction per public method.

Callers (the writer, the Celery wiring, the CLI, the dashboard) call methods here and
never build queries. Driver errors become :class:`~jobtrack.errors.StoreError` at this
boundary. The monotonic state rules of :mod:`jobtrack.models` are enforced in the SQL of
the upsert itself, so concurrent writers in many processes cannot move a job backwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    literal_column,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

from ..errors import (
    AmbiguousJobId,
    ConfigurationError,
    DataRefused,
    JobNotFound,
    NotSupported,
    QueryTimeout,
    StoreError,
)
from ..models import (
    BEFORE,
    Batch,
    Count,
    Event,
    EventRow,
    Item,
    ItemStatus,
    Job,
    JobFilter,
    JobStatus,
    JobUpdate,
    Row,
    Stats,
    is_owner_id,
    rows_in_order,
    unfold_events,
)
from ..schema import (
    OWNER_SETTING,
    RLS_TABLES,
    SCHEMA_LOCK_ID,
    job_events,
    job_items,
    job_logs,
    jobs,
    metadata,
    partitioning,
)
from .actions import ActionQueries
from .alerts import AlertQueries
from .common import (
    CHANGES_CHANNEL,
    SearchWords,
    escape_like,
    filtered,
    id_only,
    job_of,
    notify,
    notify_payload,
    search_matches,
    sqlite_functions,
)
from .dialects import MYSQL_INIT, insert_for, is_mysql, mysql_session
from .failures import FailureQueries
from .fleet import FleetQueries
from .insights import InsightQueries
from .leases import Leases
from .logs import LogQueries
from .partitions import (
    BOUNDARY_LOCK_ID,
    TWINS,
    PartitionQueries,
    near_boundary,
    period_start,
)
from .replicas import (
    ReadRoute,
    ReplicaPolicy,
    Replicas,
    current_route,
    lsn_number,
    lsn_text,
    server_name,
)
from .replicas import routed as _routed
from .replicas import unreachable as _unreachable
from .requests import Requests
from .searches import (
    EXACT_MATCHES,
    PROBE_S,
    SAMPLE_ROWS,
    TableStats,
    search_counts,
    search_page,
)
from .suggest import SuggestQueries
from .upkeep import MESSAGE_LOST, Upkeep
from .workflows import WorkflowQueries
from .writes import (
    ALL_STAGING,
    JSON_COLUMNS,
    STAGING,
    WRITE_COLUMNS,
    encode_events,
    encode_records,
    encode_rows,
    event_dicts,
    item_row,
    jobs_and_events_sql,
    json_text,
    log_row,
    row_dicts,
    write_statement,
)

__all__ = [
    "CHANGES_CHANNEL",
    "MESSAGE_LOST",
    "MIN_ID_PREFIX",
    "Batch",
    "ChangeListener",
    "MetricsSnapshot",
    "ReadRoute",
    "ReplicaPolicy",
    "Store",
    "current_owner",
    "current_route",
    "describe_url",
    "is_owner_id",
    "lsn_number",
    "normalize_url",
    "owner_scope",
    "time_limit",
]

log = logging.getLogger("jobtrack.store")

#: Shortest start of a job id taken for the id (``jobtrack jobs show a74a``), as git
#: takes a commit's.
MIN_ID_PREFIX = 4
#: Ids an ambiguous start names.
_AMBIGUOUS_SHOWN = 5

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jobtrack_owner_scope", default=None
)
_limit: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "jobtrack_time_limit", default=None
)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Every statement the store runs in this context (thread, asyncio task, request)
    stops after ``seconds`` with :class:`~jobtrack.errors.QueryTimeout`: the dashboard's
    reads run so (``web_query_timeout_s``), so no search or filter can hold a connection
    for long. None: no limit."""
    token = _limit.set(seconds if seconds and seconds > 0 else None)
    try:
        yield
    finally:
        _limit.reset(token)


@contextmanager
def owner_scope(owner_id: str) -> Iterator[None]:
    """Run the store's queries made inside (in this thread or asyncio task, and what
    it starts) as ``owner_id``'s: on PostgreSQL each transaction sets the session
    setting row-level security reads (``jobtrack.owner_id``), so with it enabled the
    database itself shows and accepts only that owner's jobs, items and events.
    Outside any scope jobtrack's connections serve every owner (``*``). On SQLite,
    which has no row-level security, it changes nothing."""
    if not is_owner_id(owner_id):
        raise ValueError(f"owner_scope needs one owner id, not {owner_id!r}")
    token = _owner.set(owner_id)
    try:
        yield
    finally:
        _owner.reset(token)


def current_owner() -> str | None:
    """The owner of the innermost :func:`owner_scope` here, or None (every owner)."""
    return _owner.get()


def describe_url(url: str) -> str:
    """A database URL as it may be shown (to a log, a footer): no password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unreadable database URL)"


#: The driver a bare ``mysql://`` or ``mariadb://`` URL gets (see docs/design.md,
#: "MySQL and MariaDB": measured against mysqlclient).
MYSQL_DRIVER = "pymysql"


def _in_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def normalize_url(url: str) -> str:
    """Pick psycopg 3 for a bare ``postgresql://`` URL (SQLAlchemy would pick psycopg2),
    and :data:`MYSQL_DRIVER` for a bare ``mysql://`` or ``mariadb://`` one."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+{MYSQL_DRIVER}")
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class MetricsSnapshot:
    """Aggregates for the Prometheus collector (see :mod:`jobtrack.metrics`)."""

    by_status: dict[str, int]
    #: (task_name, job_type, status, count) for finished jobs
    finished: list[tuple[str | None, str | None, str, int]]
    #: (task_name, count, sum in seconds, cumulative bucket counts) in the window
    durations: list[tuple[str | None, int, float, list[int]]]
    #: finished jobs by status in the window
    window: dict[str, int]
    stale_running: int
    oldest_pending: datetime | None


class Store(PartitionQueries):
    """The tracking database.

    Give it a URL (it then owns and disposes its engine) or an engine of yours (it then
    never disposes it). Engines are made lazily and replaced after ``fork()``, so no
    connection is ever shared between processes.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        connect_timeout_s: float = 5.0,
        create_tables: bool = True,
        replicas: ReplicaPolicy | None = None,
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("give a database URL or an engine, not both or neither")
        self._url = normalize_url(url) if url is not None else None
        if self._url is not None and _in_memory_sqlite(self._url):
            # Each connection to it is a database of its own, and jobtrack writes from
            # a thread of its own: nothing written would ever be read (every write
            # failed, "no such table", and was spooled as if the database were down).
            raise ConfigurationError(
                "database_url",
                url,
                "a database every connection shares, not in-memory SQLite (it lives in "
                "one connection, and jobtrack writes from a thread of its own): a file "
                "such as sqlite:///jobs.db",
            )
        self._engine = engine
        self._owns_engine = engine is None
        self._connect_timeout_s = connect_timeout_s
        self._create_tables = create_tables
        self._schema_ready = False
        self._lock = threading.Lock()
        self._search_words = SearchWords()
        self._table_stats = TableStats()
        # Reads inside reading() go to these (see store/replicas.py); their engines are
        # the store's own kind, made on first use.
        self._replicas = (
            Replicas(
                replicas,
                self._make_engine,
                self._primary_position,
                server_name(self._url or (engine.url.render_as_string() if engine else "")),
            )
            if replicas is not None and replicas.urls
            else None
        )
        if engine is not None and engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _serve_every_owner)
        if engine is not None and is_mysql(engine.dialect.name):
            event.listen(engine, "connect", mysql_session)
        elif engine is not None and engine.dialect.name == "sqlite":
            event.listen(engine, "connect", lambda dbapi_conn, _: sqlite_functions(dbapi_conn))
        _live_stores.add(self)

    @functools.cached_property
    def actions(self) -> ActionQueries:
        """Operator actions: the audit trail and bulk actions' targets
        (:mod:`jobtrack.store.actions`)."""
        return ActionQueries(self._begin, self._read, self._write_jobs)

    @functools.cached_property
    def alerts(self) -> AlertQueries:
        """Alert rules' reports, state and deliveries (:mod:`jobtrack.store.alerts`)."""
        return AlertQueries(self._begin, self._read)

    @functools.cached_property
    def failures(self) -> FailureQueries:
        """The failure groups' reads (:mod:`jobtrack.store.failures`)."""
        return FailureQueries(self._begin)

    @functools.cached_property
    def suggest(self) -> SuggestQueries:
        """The values the dashboard's filters suggest (:mod:`jobtrack.store.suggest`)."""
        return SuggestQueries(self._begin)

    @functools.cached_property
    def fleet(self) -> FleetQueries:
        """What the rows say of workers and queues (:mod:`jobtrack.store.fleet`)."""
        return FleetQueries(self._begin)

    @functools.cached_property
    def logs(self) -> LogQueries:
        """A job's captured log lines (:mod:`jobtrack.store.logs`)."""
        return LogQueries(self._read)

    @functools.cached_property
    def workflows(self) -> WorkflowQueries:
        """A workflow's jobs and the lists' roll-ups (:mod:`jobtrack.store.workflows`)."""
        return WorkflowQueries(self._read)

    @functools.cached_property
    def insights(self) -> InsightQueries:
        """Trends over a window (:mod:`jobtrack.store.insights`)."""
        return InsightQueries(self._read)

    @functools.cached_property
    def leases(self) -> Leases:
        """Named leases: who does a chore now (:mod:`jobtrack.store.leases`)."""
        return Leases(self._begin, lambda: self.dialect, lambda: utcnow())

    @functools.cached_property
    def requests(self) -> Requests:
        """Operators' requests of one job (:mod:`jobtrack.store.requests`)."""
        return Requests(self._begin, self._write_rows, lambda: utcnow())

    @functools.cached_property
    def upkeep(self) -> Upkeep:
        """Lost jobs found and marked (:mod:`jobtrack.store.upkeep`)."""
        return Upkeep(self._begin, self._write_rows, lambda: utcnow())

    # -- connection handling -------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._make_engine()
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _make_engine(self, url_text: str | None = None) -> Engine:
        """The engine for the store's URL (or a replica's: ``url_text``)."""
        url = make_url(normalize_url(url_text) if url_text is not None else self._url or "")
        if url.get_backend_name() == "sqlite":
            engine = create_engine(
                url,
                connect_args={
                    "timeout": max(self._connect_timeout_s, 30.0),
                    "check_same_thread": False,
                },
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args = {
                "connect_timeout": max(int(self._connect_timeout_s), 1),
                "application_name": "jobtrack",
                # Every owner unless a transaction says otherwise (owner_scope): set at
                # connection start, no round trip of its own. No JIT: its compilation
                # costs the store's short reads more than it saves, and a session that
                # has used it runs later parallel reads slower (docs/design.md).
                "options": f"-c {OWNER_SETTING}=* -c jit=off",
            }
        options: dict[str, Any] = {}
        if is_mysql(url.get_backend_name()):
            connect_args = {
                "connect_timeout": max(int(self._connect_timeout_s), 1),
                "charset": "utf8mb4",
                "init_command": MYSQL_INIT,
            }
            options["isolation_level"] = "READ COMMITTED"  # see dialects.mysql_session
            # A connection idle longer than the server's wait_timeout is gone: recycle
            # before the usual 8 hours (the ping of an idle connection catches the rest).
            options["pool_recycle"] = 3600
        engine = create_engine(
            url, pool_size=2, max_overflow=4, connect_args=connect_args, **options
        )
        _ping_when_idle(engine)
        return engine

    def _after_fork(self) -> None:
        """In a forked child (prefork pool, gunicorn …): drop the parent's pool without
        touching its sockets; the child connects anew on first use."""
        self._lock = threading.Lock()
        self._search_words = SearchWords()
        self._table_stats = TableStats()
        if self._engine is not None and self._owns_engine:
            self._engine.dispose(close=False)
        if self._replicas is not None:
            self._replicas.after_fork()

    def close(self) -> None:
        """Dispose the engine if this store created it (and the replicas' engines)."""
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None
        if self._replicas is not None:
            self._replicas.close()

    # -- reads on replicas -------------------------------------------------------------

    @property
    def replicas(self) -> Replicas | None:
        """The replicas reads inside :meth:`reading` may go to (None: none given)."""
        return self._replicas

    @contextmanager
    def reading(self, *, min_lsn: str | None = None) -> Iterator[ReadRoute]:
        """Send this store's reads in this context (thread, asyncio task, request) to a
        replica, when it has any (see :mod:`jobtrack.store.replicas`); writes stay on
        the primary. ``min_lsn``: the primary's WAL position after a write the reads
        must see (:meth:`primary_lsn`), waited for up to the policy's ``wait_s``. The
        route says which server served, once a read has been made; an unreadable
        ``min_lsn`` is ignored (a read then sees what the replica has)."""
        wanted = None
        if min_lsn:
            try:
                wanted = lsn_number(min_lsn)
            except ValueError:
                wanted = None
        with _routed(ReadRoute(min_lsn=wanted, owner=self)) as route:
            yield route

    def primary_lsn(self) -> str | None:
        """The primary's WAL position now (PostgreSQL; None elsewhere): a read given it
        as ``reading(min_lsn=...)`` sees every write committed before this call."""
        if self.dialect != "postgresql":
            return None
        return lsn_text(self._primary_position())

    def _primary_position(self) -> int:
        with self._begin("primary position") as conn:
            return lsn_number(conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one())

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        """A read-only transaction: on the route's server inside :meth:`reading` (a
        replica that cannot be reached is left out and the route chosen again), else
        on the primary, as :meth:`_begin`."""
        route = current_route()
        if self._replicas is None or route is None or route.owner is not self:
            with self._begin(action) as conn:
                yield conn
            return
        engine: Engine | None = None
        try:
            with contextlib.ExitStack() as stack:
                while True:
                    engine = self._replicas.choose(route)
                    try:
                        conn = stack.enter_context(self._begin(action, engine=engine))
                    except StoreError as exc:
                        if engine is None or not _unreachable(exc):
                            raise
                        self._replicas.failed(route, exc)  # and choose again
                        continue
                    break
                yield conn
        except StoreError as exc:
            if engine is not None and route.engine is engine and _unreachable(exc):
                self._replicas.failed(route, exc)  # gone mid-read: the next read chooses
            raise

    @contextmanager
    def _begin(
        self,
        action: str,
        *,
        writes_data: bool = False,
        single: bool = False,
        engine: Engine | None = None,
    ) -> Iterator[Connection]:
        """One transaction; every driver error leaves as a :class:`StoreError`
        (:class:`DataRefused` when the database refused the data itself). With
        ``writes_data``, a value the driver cannot even send counts as refused data.

        ``single``: the caller runs one statement, atomic on its own: it runs without
        BEGIN and COMMIT (two round trips fewer), outside any owner scope or time limit.
        ``engine``: a replica's (a read), instead of the primary's.
        """
        refusable: tuple[type[BaseException], ...] = _PYTHON_DATA_ERRORS if writes_data else ()
        limit = _limit.get()
        try:
            if not self._schema_ready and self._create_tables:
                self.ensure_schema()
            if single:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    try:
                        yield conn
                    except BaseException:
                        if writes_data:
                            self.forget_partitioning()
                        raise
                return
            with (engine or self.engine).begin() as conn:
                owner = _owner.get()
                if owner is not None and conn.dialect.name == "postgresql":
                    conn.execute(_SET_OWNER, {"owner": owner})
                try:
                    with _limited(conn, limit):
                        yield conn
                except BaseException:
                    _forget_staging(conn)  # created in this transaction: rolled back
                    if writes_data:  # the tables may have been partitioned meanwhile
                        self.forget_partitioning()
                    raise
        except StoreError:
            raise
        except _TRANSLATED as exc:
            if limit is not None and _stopped_by_limit(exc):
                raise QueryTimeout(action, limit) from exc
            raise _translate(action, exc) from exc
        except refusable as exc:
            raise DataRefused(action, f"{type(exc).__name__}: {exc}"[:500]) from exc

    # -- schema ----------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create or upgrade the tables to the newest migration, once per process."""
        if self._schema_ready:
            return
        from ..migrate import upgrade_to_head  # Alembic is only imported when needed

        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_ID)))
                    upgrade_to_head(conn)
                elif is_mysql(conn.dialect.name):
                    # DDL commits there as it goes: a named lock of the session instead.
                    with _mysql_lock(conn, f"jobtrack_schema_{SCHEMA_LOCK_ID}"):
                        upgrade_to_head(conn)
                else:
                    upgrade_to_head(conn)
        except SQLAlchemyError as exc:
            raise StoreError("schema upgrade", _short(exc)) from exc
        self._schema_ready = True

    def schema_revision(self) -> str | None:
        """The jobtrack migration the database is at (None: no tables yet)."""
        from ..migrate import current_revision

        try:
            with self.engine.connect() as conn:
                return current_revision(conn)
        except SQLAlchemyError as exc:
            raise StoreError("schema revision", _short(exc)) from exc

    # -- writes ----------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        """Apply job rows, trace entries, items and log lines, in one transaction.

        Rows of one job must already be merged (one row per id). See
        :mod:`jobtrack.store.writes` for how each kind reaches the tables.
        """
        if not batch:
            return
        if self._one_statement(batch):
            # The common flush (job rows and trace entries of plain tables): one statement.
            with self._begin("write batch", writes_data=True, single=True) as conn:
                self._write_jobs(conn, batch.updates, batch.events, batch.job_ids())
            return
        with self._begin("write batch", writes_data=True) as conn:
            ids = batch.job_ids()
            if batch.updates or batch.events:
                self._write_jobs(conn, batch.updates, batch.events, ids)
            else:
                notify(conn, ids)
            if batch.items:
                latest: dict[tuple[str, str], Item] = {}
                for item in batch.items:  # a key recorded twice in a batch: the later counts
                    latest[(item.job_id, item.key)] = item
                self._write_rows(conn, "job_items", [item_row(i) for i in latest.values()])
                self._recount(conn, sorted({job_id for job_id, _ in latest}))
            if batch.logs:
                self._write_rows(conn, "job_logs", [log_row(line) for line in batch.logs])

    def _one_statement(self, batch: Batch) -> bool:
        """Whether ``batch`` is written by one statement with no transaction around it:
        job rows and trace entries only, on PostgreSQL tables known not to be partitioned
        (near a period boundary a partitioned write takes a lock for its transaction),
        outside any owner scope or time limit, with no job that had two runs in it."""
        return (
            self.dialect == "postgresql"
            and not batch.items
            and not batch.logs
            and not any(BEFORE in row for row in batch.updates)
            and self._period_known
            and self._period is None
            and _owner.get() is None
            and _limit.get() is None
        )

    def _write_jobs(
        self,
        conn: Connection,
        rows: Sequence[Row],
        events: Sequence[EventRow],
        notify_ids: Sequence[str],
    ) -> None:
        """Upsert job rows and insert trace entries; tell listeners about ``notify_ids``
        (PostgreSQL: all in one statement). A row holding rows of an earlier run of its
        job (see :func:`~jobtrack.models.merge_row`) has those written first, each run
        by a statement of its own."""
        if any(BEFORE in row for row in rows):
            chains = [rows_in_order(row) for row in rows]
            for depth in range(max(map(len, chains)) - 1):
                earlier = [chain[depth] for chain in chains if len(chain) > depth + 1]
                self._write_jobs(conn, earlier, (), notify_ids)
            rows = [chain[-1] for chain in chains]
        if conn.dialect.name != "postgresql":
            if rows:
                conn.execute(write_statement(conn.dialect.name, "jobs"), row_dicts(rows))
            if events:
                conn.execute(write_statement(conn.dialect.name, "job_events"), event_dicts(events))
            return
        part = self._new_part(conn, creates_jobs=bool(rows))
        statement = jobs_and_events_sql(conn.dialect, bool(rows), bool(events), part is not None)
        values = {"ids": notify_payload(notify_ids), "part": part}
        if rows:
            values["jobs"] = encode_rows(rows)
        if events:
            values["job_events"] = encode_events(events)
        from psycopg import RawCursor

        driver = conn.connection.driver_connection
        assert driver is not None
        with RawCursor(driver) as cursor:
            cursor.execute(statement.sql, statement.parameters(values), prepare=True)

    def _new_part(self, conn: Connection, *, creates_jobs: bool = True) -> date | None:
        """On partitioned tables, the period a new job row takes here (the writer's
        clock); near a period boundary the boundary lock is taken first, so that two
        writers creating one job on either side of it make one row (see
        :mod:`jobtrack.store.partitions`). None when the tables are not partitioned."""
        period = self.partitioned() if conn.dialect.name == "postgresql" else None
        if period is None:
            return None
        moment = utcnow()
        if creates_jobs and near_boundary(moment, period):
            conn.execute(select(func.pg_advisory_xact_lock(BOUNDARY_LOCK_ID)))
        return period_start(moment, period)

    def _write_rows(self, conn: Connection, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Write rows (values in ``WRITE_COLUMNS[table]`` order) to items, events or logs.

        On PostgreSQL, items are streamed with COPY into a staging table and merged from
        there; events and log lines, which never conflict, go in as one JSON document
        (a COPY straight into a table is refused where row-level security binds it).
        """
        columns = WRITE_COLUMNS[table]
        if conn.dialect.name != "postgresql":
            conn.execute(
                write_statement(conn.dialect.name, table),
                [dict(zip(columns, row, strict=True)) for row in rows],
            )
            return
        part = self._new_part(conn, creates_jobs=False)
        if table != "job_items":
            params: dict[str, Any] = {table: encode_records(columns, rows)}
            if part is not None:
                params["part"] = part
            conn.execute(write_statement("postgresql", table, "json", part is not None), params)
            return
        json_at = [i for i, name in enumerate(columns) if name in JSON_COLUMNS[table]]
        target = STAGING[table]
        info = conn.connection.info
        if target.name not in info:  # once per database session (forgotten on error)
            target.create(conn, checkfirst=True)
            info[target.name] = True
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {target.name} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                if json_at:
                    row = list(row)
                    for i in json_at:
                        row[i] = json_text(row[i])
                copy.write_row(row)
        conn.execute(
            write_statement("postgresql", table, "staging", part is not None), {"part": part}
        )

    def _recount(self, conn: Connection, job_ids: Sequence[str]) -> None:
        """Set each job's item counters from its items: idempotent under replays."""

        def count(status: ItemStatus | None) -> Any:
            where = job_items.c.job_id == jobs.c.id
            if status is not None:
                where = and_(where, job_items.c.status == status.value)
            return select(func.count()).where(where).scalar_subquery()

        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(job_ids))
            .values(
                processed_items=count(None) - count(ItemStatus.PENDING),
                failed_items=count(ItemStatus.ERROR),
                skipped_items=count(ItemStatus.SKIPPED),
            )
        )

    def upsert_job(self, update_: JobUpdate, *, overwrite: Sequence[str] = ()) -> None:
        """Write one update now; columns in ``overwrite`` replace stored values.

        Used by the helpers (``upsert_job`` …): what a caller passes explicitly wins
        over what the Celery wiring filled in.
        """
        with self._begin("upsert job", writes_data=True) as conn:
            self._write_jobs(conn, [update_.row()], [], [update_.id])
            values = {name: getattr(update_, name) for name in overwrite}
            if values:
                conn.execute(update(jobs).where(jobs.c.id == update_.id).values(**values))

    def create_job(self, update_: JobUpdate) -> bool:
        """Insert the job row unless one with its id exists; True if this call made it.
        The first of several concurrent calls with one id wins (the primary key
        decides), so a repeated request can find the job instead of making another."""
        values = dict(zip(JobUpdate.COLUMNS, update_.values(), strict=True))
        with self._begin("create job", writes_data=True) as conn:
            part = self._new_part(conn)
            if is_mysql(conn.dialect.name):
                made = _insert_new(conn, insert_for(conn.dialect.name)(jobs).values(values))
                if made:
                    notify(conn, [update_.id])
                return made
            if part is None:
                insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
                stmt = (
                    insert(jobs).values(values).on_conflict_do_nothing(index_elements=[jobs.c.id])
                )
            else:  # partitioned: no row of this id in any partition, then this one's
                twin = TWINS["jobs"]
                chosen = select(
                    *[
                        bindparam(f"v_{name}", value, type_=twin.c[name].type)
                        for name, value in values.items()
                    ],
                    bindparam("part", part, type_=twin.c.part.type),
                ).where(~exists().where(twin.c.id == update_.id))
                stmt = (
                    postgresql.insert(twin)
                    .from_select([*values, "part"], chosen)
                    .on_conflict_do_nothing(index_elements=[twin.c.id, twin.c.part])
                )
            made = conn.execute(stmt.returning(literal_column("id"))).first() is not None
            if made:
                notify(conn, [update_.id])
        return made

    def row_security(self, enable: bool | None = None) -> dict[str, bool]:
        """Whether row-level security binds each job-scoped table (enabled and forced,
        so the tables' owner is bound too); with ``enable``, switch it first. The
        policies themselves come with the schema (see docs/schema.md). Raises
        :class:`~jobtrack.errors.NotSupported` on SQLite."""
        if self.dialect != "postgresql":
            backend = _BACKEND_NAMES.get(self.dialect, self.dialect)
            raise NotSupported(
                f"row-level security needs PostgreSQL; {backend} has none (the dashboard "
                "and API still show an owner-bound token only its owner's jobs)"
            )
        with self._begin("row-level security") as conn:
            if enable is not None:
                for table in RLS_TABLES:
                    how = "ENABLE" if enable else "DISABLE"
                    force = "FORCE" if enable else "NO FORCE"
                    conn.execute(text(f"ALTER TABLE {table} {how} ROW LEVEL SECURITY"))
                    conn.execute(text(f"ALTER TABLE {table} {force} ROW LEVEL SECURITY"))
            rows = conn.execute(
                text(
                    "SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class "
                    "WHERE relname = ANY(:tables) AND relnamespace = "
                    "to_regnamespace(current_schema())::oid"
                ),
                {"tables": list(RLS_TABLES)},
            ).all()
        return {name: bool(on) for name, on in rows}

    def set_counts(
        self,
        job_id: str,
        *,
        processed: int | None = None,
        failed: int | None = None,
        skipped: int | None = None,
        total: int | None = None,
    ) -> None:
        """Set item counters directly (for jobs that count without recording items)."""
        values = {
            name: value
            for name, value in (
                ("processed_items", processed),
                ("failed_items", failed),
                ("skipped_items", skipped),
                ("total_items", total),
            )
            if value is not None
        }
        if not values:
            return
        with self._begin("set counts") as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            notify(conn, [job_id])

    # -- reads -----------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        with self._read("get job") as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return job_of(row)

    def resolve_id(self, given: str, *, owner_id: str | None = None) -> str:
        """The id of the job ``given`` names: its whole id, or a unique start of it (at
        least :data:`MIN_ID_PREFIX` characters; case counts, as in ids), as psql and
        the job list print ids shortened. With ``owner_id``, only that owner's jobs are
        looked at. Raises :class:`~jobtrack.errors.JobNotFound`, or
        :class:`~jobtrack.errors.AmbiguousJobId` naming the first few that start so."""
        owned = [jobs.c.owner_id == owner_id] if owner_id is not None else []
        with self._read("resolve id") as conn:
            exact = conn.execute(select(jobs.c.id).where(jobs.c.id == given, *owned)).scalar()
            if exact is not None:
                return str(exact)
            if len(given) < MIN_ID_PREFIX:
                raise JobNotFound(given)
            starts = conn.execute(
                select(jobs.c.id)
                .where(
                    jobs.c.id.like(escape_like(given) + "%", escape="\\"),
                    func.substr(jobs.c.id, 1, len(given)) == given,  # SQLite's LIKE: any case
                    *owned,
                )
                .order_by(jobs.c.id)
                .limit(_AMBIGUOUS_SHOWN + 1)
            ).scalars()
            found = [str(job_id) for job_id in starts]
        if not found:
            raise JobNotFound(given)
        if len(found) > 1:
            more = len(found) > _AMBIGUOUS_SHOWN
            raise AmbiguousJobId(given, found[:_AMBIGUOUS_SHOWN], more)
        return found[0]

    def find_job(self, job_id: str) -> Job | None:
        try:
            return self.get_job(job_id)
        except JobNotFound:
            return None

    def list_jobs(
        self,
        where: JobFilter | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        before: tuple[datetime, str] | None = None,
    ) -> list[Job]:
        """Jobs ``where`` matches, newest first; every value a bound parameter.

        ``before`` is a keyset cursor, the (created_at, id) of the last job of the
        previous page: stable paging while new jobs arrive. A filter on a column with a
        ``(column, status, created_at)`` index and several statuses (a tab, or none: all
        of them) is read as one backward range per status, merged: each range stops after
        the page, however many rows match.
        """
        return self._list(where, limit, offset, before, exhaustive=True)[0]

    def list_page(
        self,
        where: JobFilter | None = None,
        *,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> tuple[list[Job], bool]:
        """A dashboard page: :meth:`list_jobs`, except that a search whose page no
        bounded read finds (its matches too many to read, too few among the newest jobs;
        see :mod:`jobtrack.store.searches`) is not read any further: the matches among
        the newest jobs are returned, and False says the page may miss older ones."""
        return self._list(where, limit, 0, before, exhaustive=False)

    def _list(
        self,
        where: JobFilter | None,
        limit: int,
        offset: int,
        before: tuple[datetime, str] | None,
        *,
        exhaustive: bool,
    ) -> tuple[list[Job], bool]:
        where = where or JobFilter()
        limit = max(min(limit, 10_000), 1)
        offset = max(offset, 0)
        statuses = where.status
        if statuses is None and _by_status_index(where):
            statuses = tuple(JobStatus)
        with self._read("list jobs") as conn:
            if statuses is not None and len(statuses) > 1 and _by_status_index(where):
                # The ranges merged give the page's keys; its jobs are then read by id:
                # the rows every range reads past the page are never carried (nor their
                # columns built into each range's statement).
                parts = [
                    select(
                        _page(
                            where.where(status=(status,)), before, limit + offset, keys=True
                        ).subquery()
                    )
                    for status in statuses
                ]
                merged = union_all(*parts).subquery()
                newest = (
                    select(merged.c.id)
                    .order_by(merged.c.created_at.desc(), merged.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                    .subquery()
                )
                query = (
                    select(jobs)
                    .join(newest, jobs.c.id == newest.c.id)
                    .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                )
            else:
                word = self._search_words.word(conn, where.search) if where.search else None
                if word is None and where.search and not id_only(where.search):
                    # The page among a bounded number of jobs (the search's few matches,
                    # or the newest jobs when many match), else the search's index.
                    ids, complete = search_page(
                        conn, where, before, limit + offset, self._search_words
                    )
                    if complete or not exhaustive:
                        query = (
                            select(jobs)
                            .where(jobs.c.id.in_(ids))
                            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                            .limit(limit)
                            .offset(offset)
                        )
                        return [job_of(r) for r in conn.execute(query).mappings()], complete
                # Many jobs hold the word: the page is first looked for among the newest
                # of them; it is the page if that slice holds a whole one.
                since = (
                    self._search_words.newest_since(
                        conn, word, limit + offset, before[0] if before else None
                    )
                    if word is not None
                    else None
                )
                if since is not None:
                    sliced = _page(where, before, limit, word=word, since=since).offset(offset)
                    found = conn.execute(sliced).mappings().all()
                    if len(found) == limit:
                        return [job_of(r) for r in found], True
                query = _page(where, before, limit, word=word).offset(offset)
            return [job_of(r) for r in conn.execute(query).mappings()], True

    def list_items(
        self,
        job_id: str,
        *,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
    ) -> list[Item]:
        """The job's items in the order they were recorded. ``after`` (the ``id`` of the
        last item of the previous page) is a keyset cursor: every page, however deep, is
        one range of the ``(job_id[, status], id)`` index; ``offset`` reads and skips."""
        query = select(job_items).where(job_items.c.job_id == job_id)
        if status is not None:
            query = query.where(job_items.c.status == ItemStatus(status).value)
        if after is not None:
            query = query.where(job_items.c.id > after)
        query = query.order_by(job_items.c.id).limit(max(limit, 1)).offset(max(offset, 0))
        with self._read("list items") as conn:
            return [
                Item(
                    job_id=r.job_id,
                    key=r.key,
                    status=ItemStatus(r.status),
                    message=r.message,
                    error_code=r.error_code,
                    before_state=r.before_state,
                    after_state=r.after_state,
                    processed_at=r.processed_at,
                    id=int(r.id),
                )
                for r in conn.execute(query)
            ]

    def count_items(self, job_id: str, status: str) -> int:
        """How many of the job's items are in ``status`` (one range of the
        ``(job_id, status, id)`` index; the row's counters hold the others)."""
        query = select(func.count()).where(
            job_items.c.job_id == job_id, job_items.c.status == ItemStatus(status).value
        )
        with self._begin("count items") as conn:
            return int(conn.execute(query).scalar_one())

    def list_events(self, job_id: str) -> list[Event]:
        """The job's trace, oldest first; an attempt written as one entry (its
        ``running`` folded into its outcome) is given back as the two it stands for."""
        query = (
            select(job_events)
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.at, job_events.c.id)
        )
        with self._read("list events") as conn:
            return unfold_events(
                [
                    Event(
                        job_id=r.job_id,
                        at=r.at,
                        status=JobStatus(r.status),
                        attempt=r.attempt,
                        worker=r.worker,
                        error_type=r.error_type,
                        error_message=r.error_message,
                        stage=r.stage,
                        note=r.note,
                        started_at=r.started_at,
                    )
                    for r in conn.execute(query)
                ]
            )

    def stats(self, *, since: datetime | None = None) -> Stats:
        """Counts by status and by type, failure rate and durations (percentiles by
        nearest rank, alike on every backend). Two reads of the ``created_at`` index,
        which carries status, type and duration: no row of the table is visited."""
        where = [jobs.c.created_at >= since] if since is not None else []
        by_type_q = (
            select(jobs.c.job_type, jobs.c.status, func.count())
            .where(*where)
            .group_by(jobs.c.job_type, jobs.c.status)
        )
        timed = [
            jobs.c.status == JobStatus.COMPLETED.value,
            jobs.c.duration_ms.is_not(None),
            *where,
        ]
        durations = [func.avg(jobs.c.duration_ms), func.max(jobs.c.duration_ms), func.count()]
        with self._read("stats") as conn:
            by_status: dict[str, int] = {}
            by_type: dict[str, dict[str, int]] = {}
            for job_type, status, n in conn.execute(by_type_q):
                by_type.setdefault(job_type or "(none)", {})[status] = int(n)
                by_status[status] = by_status.get(status, 0) + int(n)
            percentiles: dict[int, Any] = {}
            if conn.dialect.name == "postgresql":
                ranks = func.percentile_disc(postgresql.array([0.5, 0.95, 0.99])).within_group(
                    jobs.c.duration_ms
                )
                row = conn.execute(select(*durations, ranks.label("p")).where(*timed)).one()
                avg, max_ = row[0], row[1]
                percentiles = dict(zip((50, 95, 99), row[3] or (), strict=False))
            else:
                avg, max_, timed_count = conn.execute(select(*durations).where(*timed)).one()
                for p in (50, 95, 99):  # nearest rank: what percentile_disc answers
                    rank = (p * int(timed_count) + 99) // 100 - 1
                    if rank >= 0:
                        percentiles[p] = conn.execute(
                            select(jobs.c.duration_ms)
                            .where(*timed)
                            .order_by(jobs.c.duration_ms)
                            .limit(1)
                            .offset(rank)
                        ).scalar_one()
        finished = by_status.get("completed", 0) + by_status.get("failed", 0)
        return Stats(
            by_status=by_status,
            by_type=by_type,
            total=sum(by_status.values()),
            failure_rate=(by_status.get("failed", 0) / finished) if finished else None,
            duration_ms_avg=float(avg) if avg is not None else None,
            duration_ms_max=int(max_) if max_ is not None else None,
            duration_ms_p50=percentiles.get(50),
            duration_ms_p95=percentiles.get(95),
            duration_ms_p99=percentiles.get(99),
        )

    def prune(
        self, *, finished_before: datetime, statuses: Sequence[str], batch_size: int = 5000
    ) -> int:
        """Delete jobs in ``statuses`` that finished before ``finished_before``, with
        their items and events, in batches of ``batch_size`` (one short transaction
        each, so workers writing meanwhile are not held up). Returns how many went.
        On partitioned tables whole periods are dropped instead (:meth:`drop_partitions`)."""
        wanted = [JobStatus(s).value for s in statuses]
        if not wanted:
            return 0
        if self.partitioned() is not None:  # whole periods go (see drop_partitions)
            return self.drop_partitions(dict.fromkeys(wanted, finished_before))[1]
        batch = (
            select(jobs.c.id)
            .where(
                jobs.c.status.in_(wanted),
                func.coalesce(jobs.c.completed_at, jobs.c.updated_at) < finished_before,
            )
            .limit(max(batch_size, 1))
        )
        total = 0
        while True:
            with self._begin("prune") as conn:
                ids = list(conn.execute(batch).scalars())
                if not ids:
                    return total
                for table in (job_items, job_events, job_logs):  # also where cascades are off
                    conn.execute(delete(table).where(table.c.job_id.in_(ids)))
                total += conn.execute(
                    delete(jobs).where(jobs.c.id.in_(ids), jobs.c.status.in_(wanted))
                ).rowcount

    def count_by_status(
        self, statuses: Sequence[str], *, cap: int | None = None, where: JobFilter | None = None
    ) -> dict[str, int]:
        """How many jobs ``where`` matches are in each of ``statuses`` (its own status
        field is replaced by them).

        With ``cap``, each status is counted only up to ``cap + 1`` (a value above
        ``cap`` means "more than ``cap``"): the scan of the ``(status, created_at)``
        index then stops after ``cap + 1`` matching rows instead of reading them all.
        """
        base = where or JobFilter()
        wanted = tuple(JobStatus(s) for s in statuses)
        if not wanted:
            return {}
        if cap is None:
            query = filtered(
                select(jobs.c.status, func.count()), base.where(status=wanted)
            ).group_by(jobs.c.status)
            with self._read("count by status") as conn:
                return {status: int(n) for status, n in conn.execute(query)}
        cap = max(cap, 0)
        with self._read("count by status") as conn:
            word = self._search_words.word(conn, base.search) if base.search else None
            if word is not None and base.search:
                # Few jobs hold the search's word (by the statistics): its matches are
                # counted whole, read by the word index.
                matches = search_matches(base.search, word)
                query = filtered(
                    select(matches.c.status, func.count()),
                    base.where(status=wanted, search=None),
                    columns=matches.c,
                ).group_by(matches.c.status)
                return {s: min(int(n), cap + 1) for s, n in conn.execute(query) if n}
            if base.search:
                # A search's matches are read once (one trigram index scan), not once per
                # status; only when they are too many for that is each status counted
                # on its own (each stopping at the cap).
                bound = (cap + 1) * len(wanted)
                matches = (
                    filtered(select(jobs.c.status), base.where(status=wanted))
                    .limit(bound)
                    .subquery()
                )
                found = {
                    status: int(n)
                    for status, n in conn.execute(
                        select(matches.c.status, func.count()).group_by(matches.c.status)
                    )
                }
                if sum(found.values()) < bound:
                    return {s: min(n, cap + 1) for s, n in found.items() if n}
            capped = select(
                *(
                    select(func.count())
                    .select_from(
                        filtered(select(jobs.c.status), base.where(status=(status,)))
                        .limit(cap + 1)
                        .subquery()
                    )
                    .scalar_subquery()
                    for status in wanted
                )
            )
            row = conn.execute(capped).one()
        return {status.value: int(n) for status, n in zip(wanted, row, strict=True) if n}

    def tab_counts(
        self,
        statuses: Sequence[str],
        *,
        cap: int,
        where: JobFilter | None = None,
        exact_matches: int = EXACT_MATCHES,
        sample_rows: int = SAMPLE_ROWS,
        probe_s: float = PROBE_S,
        every_match: bool = False,
    ) -> dict[str, Count]:
        """Each of ``statuses``' count of the jobs ``where`` matches, as the dashboard's
        tabs show them, each read bounded whatever the table holds: exact up to ``cap``,
        past it a floor ("more than ``cap``"). Under a search (PostgreSQL) a count is
        exact when at most ``exact_matches`` jobs match and its index reads them within
        ``probe_s`` seconds (or the status holds fewer than ``sample_rows``), else
        estimated from the status's newest ``sample_rows`` jobs (see
        :mod:`jobtrack.store.searches`). Elsewhere, or with ``every_match`` (the
        dashboard's full search), as :meth:`count_by_status`: every match read, up to
        the cap per status, however long that takes."""
        base = where or JobFilter()
        wanted = tuple(JobStatus(s) for s in statuses)
        cap = max(cap, 0)
        if base.search and self.dialect == "postgresql" and not every_match:
            with self._read("tab counts") as conn:
                return search_counts(
                    conn,
                    wanted,
                    cap,
                    base,
                    self._search_words,
                    self._table_stats,
                    exact_matches=max(exact_matches, 0),
                    sample_rows=max(sample_rows, 1),
                    probe_s=probe_s,
                )
        found = self.count_by_status([s.value for s in wanted], cap=cap, where=base)
        return {
            s.value: Count(min(n, cap), exact=n <= cap)
            for s in wanted
            for n in [found.get(s.value, 0)]
        }

    def metrics_snapshot(
        self, *, since: datetime, stale_before: datetime, buckets_s: Sequence[float]
    ) -> MetricsSnapshot:
        """What the Prometheus collector reports, read in one transaction."""
        ms = [b * 1000 for b in buckets_s]
        finished = [s.value for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)]
        by_status = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        by_task = (
            select(jobs.c.task_name, jobs.c.job_type, jobs.c.status, func.count())
            .where(jobs.c.status.in_(finished))
            .group_by(jobs.c.task_name, jobs.c.job_type, jobs.c.status)
        )
        durations = (
            select(
                jobs.c.task_name,
                func.count(),
                func.coalesce(func.sum(jobs.c.duration_ms), 0),
                *[func.sum(case((jobs.c.duration_ms <= b, 1), else_=0)) for b in ms],
            )
            .where(
                jobs.c.status == JobStatus.COMPLETED.value,
                jobs.c.duration_ms.is_not(None),
                jobs.c.completed_at >= since,
            )
            .group_by(jobs.c.task_name)
        )
        window = (
            select(jobs.c.status, func.count())
            .where(jobs.c.status.in_(finished), jobs.c.completed_at >= since)
            .group_by(jobs.c.status)
        )
        stale = select(func.count()).where(
            jobs.c.status == JobStatus.RUNNING.value,
            func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at, jobs.c.updated_at) < stale_before,
        )
        oldest_pending = select(func.min(jobs.c.created_at)).where(
            jobs.c.status == JobStatus.PENDING.value
        )
        with self._read("metrics") as conn:
            return MetricsSnapshot(
                by_status={s: int(n) for s, n in conn.execute(by_status)},
                finished=[(t, jt, s, int(n)) for t, jt, s, n in conn.execute(by_task)],
                durations=[
                    (row[0], int(row[1]), float(row[2]) / 1000, [int(v or 0) for v in row[3:]])
                    for row in conn.execute(durations)
                ],
                window={s: int(n) for s, n in conn.execute(window)},
                stale_running=int(conn.execute(stale).scalar_one()),
                oldest_pending=conn.execute(oldest_pending).scalar_one(),
            )

    # -- change feed -----------------------------------------------------------------

    def recent_changes(
        self, *, since: datetime, limit: int = 1000
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """``(id, version)`` of jobs updated at or after ``since``, newest first; the
        version changes whenever a row's state, progress or counters do (for polling
        where LISTEN/NOTIFY is not available)."""
        query = (
            select(
                jobs.c.id,
                jobs.c.updated_at,
                jobs.c.state_seq,
                jobs.c.processed_items,
                jobs.c.progress_percent,
                jobs.c.progress_stage,
                jobs.c.heartbeat_at,
            )
            .where(jobs.c.updated_at >= since)
            .order_by(jobs.c.updated_at.desc())
            .limit(max(limit, 1))
        )
        with self._read("recent changes") as conn:
            return [(row[0], tuple(row[1:])) for row in conn.execute(query)]

    def listen_changes(self) -> ChangeListener | None:
        """A connection of its own that waits for :data:`CHANGES_CHANNEL` notifications,
        or None where the database has no LISTEN (SQLite) or the driver is not psycopg."""
        if self.dialect != "postgresql" or self.engine.driver != "psycopg":
            return None
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        try:
            conn = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                application_name="jobtrack-listen",
                connect_timeout=max(int(self._connect_timeout_s), 1),
            )
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except psycopg.Error as exc:
            raise StoreError("listen for changes", str(exc).strip()[:500]) from exc
        return ChangeListener(conn)

    def count_jobs(self) -> int:
        with self._read("count jobs") as conn:
            return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())

    def delete_all(self) -> None:
        """Empty the three tables (tests and the demo)."""
        with self._begin("delete all") as conn:
            for table in reversed(metadata.sorted_tables):
                if table is not partitioning:  # how the tables are built, not data
                    conn.execute(delete(table))


class ChangeListener:
    """Waits for job changes on a LISTEN connection (see :meth:`Store.listen_changes`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def wait(self, timeout_s: float) -> set[str] | None:
        """Ids of jobs changed since the last call, waiting up to ``timeout_s`` for the
        first; None when a notification could not name them all (look for yourself)."""
        import psycopg

        ids: set[str] = set()
        try:
            for wait_s, stop_after in ((timeout_s, 1), (0.02, None)):  # then drain
                for note in self._conn.notifies(timeout=wait_s, stop_after=stop_after):
                    if note.payload == "*":
                        return None
                    ids.update(json.loads(note.payload))
        except psycopg.Error as exc:
            raise StoreError("listen for changes", str(exc).strip()[:500]) from exc
        return ids

    def close(self) -> None:
        self._conn.close()


_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def _reset_stores_in_child() -> None:
    for store in list(_live_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_reset_stores_in_child)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__


try:  # psycopg's own errors reach us from the COPY path, outside SQLAlchemy
    import psycopg as _psycopg

    _DRIVER_ERRORS: tuple[type[Exception], ...] = (_psycopg.Error,)
    _DRIVER_DATA_ERRORS: tuple[type[Exception], ...] = (_psycopg.DataError, _psycopg.IntegrityError)
except ImportError:  # pragma: no cover - psycopg is a dependency
    _DRIVER_ERRORS = _DRIVER_DATA_ERRORS = ()
#: Raised by a driver (or SQLAlchemy's bind processing) for a value it cannot send.
_SET_OWNER = text(f"SELECT set_config('{OWNER_SETTING}', :owner, true)")
_SET_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")
_PYTHON_DATA_ERRORS = (UnicodeError, ValueError, TypeError, OverflowError)
_TRANSLATED: tuple[type[Exception], ...] = (SQLAlchemyError, *_DRIVER_ERRORS)


@contextmanager
def _limited(conn: Connection, limit: float | None) -> Iterator[None]:
    """Within ``limit`` seconds: PostgreSQL's statement_timeout for this transaction;
    on SQLite a progress handler that interrupts a statement past the deadline."""
    if limit is None:
        yield
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_SET_TIMEOUT, {"ms": str(max(int(limit * 1000), 1))})
        yield
        return
    if is_mysql(conn.dialect.name):
        # MariaDB: max_statement_time (seconds, every statement); MySQL:
        # max_execution_time (milliseconds, reads only). Set for the session, put back
        # before the connection goes back to the pool.
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
        name, value = (
            ("max_statement_time", f"{limit:.3f}")
            if mariadb
            else ("max_execution_time", str(max(int(limit * 1000), 1)))
        )
        conn.exec_driver_sql(f"SET SESSION {name} = {value}")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                conn.exec_driver_sql(f"SET SESSION {name} = DEFAULT")
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    deadline = time.monotonic() + limit
    driver.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        yield
    finally:
        driver.set_progress_handler(None, 0)


def _stopped_by_limit(exc: BaseException) -> bool:
    """A statement stopped by :func:`_limited`: PostgreSQL's query_canceled (57014),
    SQLite's "interrupted", MariaDB's 1969 and MySQL's 3024 (max statement or execution
    time exceeded)."""
    cause = getattr(exc, "orig", None) or exc
    return (
        getattr(cause, "sqlstate", None) == "57014"
        or "interrupted" in str(cause)
        or _mysql_code(cause) in _MYSQL_TIME_LIMIT_CODES
    )


def _translate(action: str, exc: BaseException) -> StoreError:
    """The :class:`StoreError` for a driver error: :class:`DataRefused` when the
    database (or the driver) refused the data itself, whatever the backend."""
    cause = getattr(exc, "orig", None) or exc
    refused = (
        isinstance(exc, (DataError, IntegrityError))
        or isinstance(cause, _DRIVER_DATA_ERRORS)
        or (isinstance(exc, DBAPIError) and _mysql_code(cause) in _MYSQL_REFUSED)
        or (
            isinstance(exc, StatementError)
            and not isinstance(exc, DBAPIError)
            and isinstance(cause, _PYTHON_DATA_ERRORS)
        )
    )
    detail = _short(exc)
    if _MISSING_TABLE.search(detail):
        detail += " (jobtrack's tables are missing: run jobtrack db upgrade)"
    return (DataRefused if refused else StoreError)(action, detail)


#: How PostgreSQL, SQLite and MySQL say a table is not there.
_MISSING_TABLE = re.compile(
    r'relation "(jobs|job_items|job_events|jobtrack_\w+)" does not '
    r"exist|no such table: (jobs|job_items|job_events|jobtrack_\w+)"
    r"|Table '[^']*\.(jobs|job_items|job_events|jobtrack_\w+)' doesn't exist"
)
#: MySQL and MariaDB errors that refuse the data itself, whatever class the driver
#: gives them: a CHECK failed (MariaDB's JSON columns check json_valid), invalid JSON,
#: a wrong value for the column (text not in utf8mb4, a date), out of range, too long.
_MYSQL_REFUSED = frozenset({4025, 3819, 3140, 1366, 1292, 1264, 1406, 1048, 1452})


def _mysql_code(cause: BaseException) -> int | None:
    """The error number of a MySQL driver's error (its first argument)."""
    code = cause.args[0] if cause.args else None
    return code if type(code) is int else None


#: MariaDB's max_statement_time, MySQL's max_execution_time exceeded; 188 (aborted by
#: user) is what MariaDB reports when the limit stops a FULLTEXT search inside InnoDB (only
#: taken for the limit when the statement ran under one).
_MYSQL_TIME_LIMIT_CODES = frozenset({1969, 3024, 188})
#: What the NotSupported messages call a backend.
_BACKEND_NAMES = {"sqlite": "SQLite", "mysql": "MySQL", "mariadb": "MariaDB"}
#: MySQL's duplicate key error.
_MYSQL_DUPLICATE_KEY = 1062


def _insert_new(conn: Connection, stmt: Any) -> bool:
    """Run an INSERT of one row; False, and nothing changed, if a row with its key is
    there already (MySQL and MariaDB: their upsert cannot tell a duplicate apart, so the
    duplicate key error is caught in a savepoint)."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(stmt)
    except IntegrityError as exc:
        savepoint.rollback()
        orig = exc.orig
        if orig is not None and orig.args and orig.args[0] == _MYSQL_DUPLICATE_KEY:
            return False
        raise
    savepoint.commit()
    return True


@contextmanager
def _mysql_lock(conn: Connection, name: str, timeout_s: int = 300) -> Iterator[None]:
    """A MySQL named lock held by ``conn``'s session for the block (released after,
    whatever happens: the session outlives the transaction)."""
    got = conn.execute(
        text("SELECT GET_LOCK(:name, :timeout)"), {"name": name, "timeout": timeout_s}
    )
    if got.scalar() != 1:
        raise StoreError("schema upgrade", f"could not take the lock {name!r} in {timeout_s} s")
    try:
        yield
    finally:
        conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})


def _forget_staging(conn: Connection) -> None:
    """After a failed transaction the staging tables it may have created are gone:
    forget that this connection has them."""
    with contextlib.suppress(Exception):
        if not conn.invalidated:
            for table in ALL_STAGING.values():
                conn.connection.info.pop(table.name, None)


#: A pooled connection unused for longer than this is pinged before it is lent.
PING_AFTER_S = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection before lending it, if it sat unused for longer than
    :data:`PING_AFTER_S` (a server restart, an idle timeout in between): a dead one is
    replaced, and the caller never sees it. A connection in steady use (a writer
    flushing every quarter second) is lent without that round trip; if it died within
    the last few seconds, the statement fails, the pool drops it, and the next try
    (a flush is retried) gets a new one."""

    def connected(_dbapi_conn: Any, record: Any) -> None:
        record.info["jobtrack_used"] = time.monotonic()

    def checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["jobtrack_used"] = time.monotonic()

    def checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("jobtrack_used", 0.0) < PING_AFTER_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc

    event.listen(engine, "connect", connected)
    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checked_out)


def _serve_every_owner(dbapi_conn: Any, _record: Any) -> None:
    """A connection of an engine given to the store serves every owner (``*``) unless
    a transaction says otherwise, like the store's own (which set it at start-up)."""
    with dbapi_conn.cursor() as cursor:
        cursor.execute(f"SELECT set_config('{OWNER_SETTING}', '*', false)")
    dbapi_conn.commit()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_on_begin); WAL lets readers and
    # one writer work at once across processes.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    sqlite_functions(dbapi_conn)


def _sqlite_on_begin(conn: Connection) -> None:
    # Take the write lock at BEGIN, so a busy database waits (busy timeout) instead of
    # failing half-way through a transaction with "database is locked".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _by_status_index(where: JobFilter) -> bool:
    """Whether ``where`` narrows by a column indexed with the status after it (and
    nothing a list reads otherwise: a search, ids, a ref, a workflow)."""
    indexed = (where.job_type, where.owner_id, where.task_name, where.queue)
    other = (where.search, where.ids, where.ref, where.workflow, where.group, where.stage)
    return any(v is not None for v in indexed) and all(v is None for v in other)


def _page(
    where: JobFilter,
    before: tuple[datetime, str] | None,
    limit: int,
    *,
    word: str | None = None,
    since: datetime | None = None,
    keys: bool = False,
) -> Any:
    """Jobs ``where`` matches before the cursor, newest first, at most ``limit``; with a
    search ``word``, read from the search's matches (:func:`common.search_matches`),
    those created ``since`` only if given. With ``keys``, only their ``id`` and
    ``created_at``."""
    source: Any = jobs
    if word is not None and where.search:
        source = search_matches(where.search, word, since)
        where = where.where(search=None)
    picked = (source.c.id, source.c.created_at) if keys else (source,)
    query = filtered(select(*picked), where, columns=source.c)
    if before is not None:
        moment = bindparam("before_at", before[0], type_=jobs.c.created_at.type)
        query = query.where(
            tuple_(source.c.created_at, source.c.id)
            < tuple_(moment, bindparam("before_id", before[1]))
        )
    return query.order_by(source.c.created_at.desc(), source.c.id.desc()).limit(limit)


def utcnow() -> datetime:
    return datetime.now(UTC)
