"""Partitioned job tables (PostgreSQL, optional): set-up, upkeep and retention by period.

A mixin of :class:`~jobtrack.store.Store`. ``jobtrack db partition --by month`` converts
``jobs``, ``job_items``, ``job_events`` and ``job_logs`` into tables partitioned by
``part``, the first day of the job's period; a job's items, events and log lines sit in
its job's partition. Retention then drops whole partitions (a month of jobs goes in
seconds, with no long delete and no bloat) instead of deleting rows.

How a row's partition is chosen, so that a job is never split across two:

* a write adopts the ``part`` of the job's existing row (one index probe per partition);
* a new job takes the period of the writer's clock;
* near a period boundary (:data:`BOUNDARY_WINDOW`) two writers could create the same new
  job on either side of it at once, so there every write of jobs first takes one
  transaction-level advisory lock: the later writer then sees the earlier one's row and
  adopts its ``part``. Clocks of the writing hosts must agree within that window.

Every statement here is a builder or runs on the store's own transactions
(``Store._begin``); nothing here is reached from a Celery hook.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.schema import CreateIndex, CreateTable, SetColumnComment, SetTableComment

from ..errors import NotSupported
from ..models import JobStatus
from ..schema import (
    ERROR_GROUP_TRIGGERS_DDL,
    FAILURE_GROUPS_INDEX,
    FAILURE_GROUPS_INDEX_DDL,
    ID_PREFIX_INDEX,
    ID_PREFIX_INDEX_DDL,
    PARTITION_KEY,
    PARTITIONED_TABLES,
    SCHEMA_LOCK_ID,
    SEARCH_INDEX,
    SEARCH_INDEX_DDL,
    TRACE_VIEW,
    WORDS_INDEX,
    WORDS_INDEX_DDL,
    job_events,
    job_items,
    job_logs,
    jobs,
    partitioned_twin,
    partitioning,
    trace_view_ddl,
)

__all__ = [
    "BOUNDARY_LOCK_ID",
    "BOUNDARY_WINDOW",
    "PERIODS",
    "TWINS",
    "Partition",
    "PartitionQueries",
    "near_boundary",
    "period_start",
]

log = logging.getLogger("jobtrack.store")

#: The periods a table can be partitioned by.
PERIODS = ("month", "day")
#: Partitions made ahead of the current period (by upkeep, prune and the conversion).
AHEAD = {"month": 2, "day": 7}
#: Writes of jobs within this much of a period boundary serialise on one advisory lock.
BOUNDARY_WINDOW = timedelta(minutes=10)
BOUNDARY_LOCK_ID = 0x6A6F6275
#: The partitioned tables as the store writes them (``part`` included).
TWINS: dict[str, Table] = {
    t.name: partitioned_twin(t) for t in (jobs, job_items, job_events, job_logs)
}
_OLD = "jobtrack_unpartitioned_"


def period_start(moment: datetime, period: str) -> date:
    """The first day of ``moment``'s period (UTC)."""
    day = moment.astimezone(UTC).date()
    return day.replace(day=1) if period == "month" else day


def _next_start(start: date, period: str) -> date:
    if period == "day":
        return start + timedelta(days=1)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def near_boundary(moment: datetime, period: str) -> bool:
    """Whether ``moment`` is within :data:`BOUNDARY_WINDOW` of a period boundary."""
    start = period_start(moment, period)
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end_day = _next_start(start, period)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=UTC)
    return moment - begin < BOUNDARY_WINDOW or end - moment < BOUNDARY_WINDOW


def partition_name(table: str, start: date | None) -> str:
    return f"{table}_p{start:%Y%m%d}" if start is not None else f"{table}_pdefault"


@dataclass(frozen=True)
class Partition:
    """One period's partition of ``jobs`` (its items', events' and logs' partitions
    share its bounds); ``start`` None is the default partition (rows of a period that
    has none yet: upkeep moves them out)."""

    name: str
    start: date | None
    end: date | None
    jobs: int  #: the planner's estimate (pg_class.reltuples), -1 before any ANALYZE


class PartitionQueries:
    """Partitioning's SQL (mixed into the Store)."""

    def _begin(  # provided by Store
        self, action: str, *, writes_data: bool = False
    ) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    _period: str | None = None
    _period_known = False

    @property
    def dialect(self) -> str:  # provided by Store
        raise NotImplementedError

    def partitioned(self) -> str | None:
        """The period the job tables are partitioned by (``month``, ``day``), or None.
        Read once per store; a failed write reads it again (the tables may have been
        converted meanwhile)."""
        if not self._period_known:
            period = None
            if self.dialect == "postgresql":
                with self._begin("read partitioning") as conn:
                    period = conn.execute(select(partitioning.c.period).limit(1)).scalar()
            self._period, self._period_known = period, True
        return self._period

    def forget_partitioning(self) -> None:
        self._period_known = False

    def partitions(self) -> list[Partition]:
        """The partitions of ``jobs``, oldest first, the default one last."""
        if self.partitioned() is None:
            return []
        with self._begin("list partitions") as conn:
            return _partitions(conn)

    def partition(self, period: str, *, now: datetime | None = None) -> list[Partition]:
        """Convert the job tables into tables partitioned by ``period`` (one
        transaction, holding the tables meanwhile: minutes for millions of rows, see
        docs/operations.md). Existing rows keep their ids and go to the partition of
        their job's ``created_at``. Row-level security, its policies and the search
        indexes are carried over. Returns the partitions made."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        if self.dialect != "postgresql":
            raise NotSupported("partitioning needs PostgreSQL")
        current = self.partitioned()
        if current is not None:
            if current != period:
                raise NotSupported(f"the job tables are partitioned by {current} already")
            return self.partitions()
        moment = now or datetime.now(UTC)
        with self._begin("partition tables") as conn:
            _convert(conn, period, moment)
            made = _partitions(conn)
        self.forget_partitioning()
        return made

    def ensure_partitions(self, *, now: datetime | None = None) -> list[str]:
        """Make the partitions of the current period and the next few (see
        :data:`AHEAD`), moving rows the default partition holds for them; returns the
        names made. Nothing to do (and no write) when they exist."""
        period = self.partitioned()
        if period is None:
            return []
        moment = now or datetime.now(UTC)
        with self._begin("make partitions") as conn:
            # Making a partition locks its parent: never queue the workers' writes
            # behind a long read for it (upkeep tries again next round).
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            return _ensure(conn, period, moment)

    def drop_partitions(
        self, cutoffs: Mapping[str, datetime], *, now: datetime | None = None
    ) -> tuple[int, int]:
        """Retention on partitioned tables: drop a period's partitions once the whole
        period is older than every cutoff (the longest retention), after moving its
        survivors (jobs not finished, finished within their status's retention, or of a
        status not pruned) to the current period. Returns (partitions, jobs) dropped."""
        period = self.partitioned()
        if period is None:
            raise NotSupported("the job tables are not partitioned (jobtrack db partition)")
        moment = now or datetime.now(UTC)
        wanted = {JobStatus(s).value: at for s, at in cutoffs.items()}
        if not wanted:
            return 0, 0
        oldest_cutoff = min(wanted.values())
        dropped = gone = 0
        with self._begin("make partitions") as conn:
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            _ensure(conn, period, moment)
            here = period_start(moment, period)
            candidates = [
                p
                for p in _partitions(conn)
                if p.end is not None
                and p.start is not None
                and p.start < here
                and datetime(p.end.year, p.end.month, p.end.day, tzinfo=UTC) <= oldest_cutoff
            ]
        for p in candidates:
            assert p.start is not None
            with self._begin("drop partition") as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                gone += _drop_one(conn, p.start, here, wanted)
                dropped += 1
            log.info(
                "dropped the %s partitions of %s",
                period,
                p.start.isoformat(),
                extra={"job_id": None, "action": "prune"},
            )
        return dropped, gone


def _partitions(conn: Connection) -> list[Partition]:
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'jobs'::regclass"
        )
    ).all()
    found: list[Partition] = []
    for name, bound, tuples in rows:
        if bound == "DEFAULT":
            found.append(Partition(name, None, None, int(tuples)))
            continue
        low, high = (part.split("'")[1] for part in bound.split(" TO "))
        found.append(
            Partition(name, date.fromisoformat(low), date.fromisoformat(high), int(tuples))
        )
    return sorted(found, key=lambda p: (p.start is None, p.start or date.min))


def _create_partition(conn: Connection, start: date, period: str) -> None:
    end = _next_start(start, period)
    for table in PARTITIONED_TABLES:
        conn.execute(
            text(
                f"CREATE TABLE {partition_name(table, start)} PARTITION OF {table} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        )


def _ensure(conn: Connection, period: str, moment: datetime) -> list[str]:
    have = {p.start for p in _partitions(conn)}
    start = period_start(moment, period)
    wanted = [start]
    for _ in range(AHEAD[period]):
        wanted.append(_next_start(wanted[-1], period))
    made: list[str] = []
    for start in wanted:
        if start in have:
            continue
        end = _next_start(start, period)
        key = f"{PARTITION_KEY} >= '{start.isoformat()}' AND {PARTITION_KEY} < '{end.isoformat()}'"
        held = any(  # an item may have come before its job: every table is asked
            conn.execute(
                text(f"SELECT EXISTS (SELECT 1 FROM {partition_name(table, None)} WHERE {key})")
            ).scalar()
            for table in PARTITIONED_TABLES
        )
        if not held:
            _create_partition(conn, start, period)
        else:  # rows that arrived before their partition: move them into it
            for table in PARTITIONED_TABLES:
                default = partition_name(table, None)
                conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {default}"))
            _create_partition(conn, start, period)
            for table in PARTITIONED_TABLES:
                default = partition_name(table, None)
                conn.execute(text(f"INSERT INTO {table} SELECT * FROM {default} WHERE {key}"))
                conn.execute(text(f"DELETE FROM {default} WHERE {key}"))
                conn.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {default} DEFAULT"))
        made.append(partition_name("jobs", start))
    return made


def _drop_one(conn: Connection, start: date, here: date, cutoffs: Mapping[str, datetime]) -> int:
    """Move one period's surviving jobs (with their rows) to the current period, then
    drop its partitions; returns how many jobs went. The survivors are found by index
    ranges of the partition (statuses not pruned; finished within the retention), not
    by reading it."""
    name = partition_name("jobs", start)
    values: dict[str, Any] = {"start": start, "here": here}
    kept = [s.value for s in JobStatus if s.value not in cutoffs]
    ranges = [f"SELECT id FROM {name} WHERE status = ANY(:kept)"]
    values["kept"] = kept
    for i, (status, cutoff) in enumerate(cutoffs.items()):
        values[f"status_{i}"], values[f"cutoff_{i}"] = status, cutoff
        ranges.append(
            f"SELECT id FROM {name} WHERE status = :status_{i} AND completed_at >= :cutoff_{i}"
        )
        ranges.append(
            f"SELECT id FROM {name} WHERE status = :status_{i} AND completed_at IS NULL "
            f"AND updated_at >= :cutoff_{i}"
        )
    conn.execute(
        text(
            "CREATE TEMPORARY TABLE jobtrack_survivors ON COMMIT DROP AS "
            + " UNION ALL ".join(ranges)
        ),
        values,
    )
    for table in ("job_items", "job_events", "job_logs", "jobs"):
        key = "id" if table == "jobs" else "job_id"
        conn.execute(
            text(
                f"UPDATE {table} SET {PARTITION_KEY} = :here WHERE {PARTITION_KEY} = :start "
                f"AND {key} IN (SELECT id FROM jobtrack_survivors)"
            ),
            values,
        )
    gone = int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
    for table in reversed(PARTITIONED_TABLES):
        conn.execute(text(f"DROP TABLE {partition_name(table, start)}"))
    return gone


def _sequences(conn: Connection, name: str, table: str) -> list[tuple[str, str]]:
    """(column, sequence) of each serial key column of ``table``, as table ``name``."""
    found: list[tuple[str, str]] = []
    for column in TWINS[table].primary_key.columns:
        if column.name == PARTITION_KEY:
            continue
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": column.name}
        ).scalar()
        if sequence:
            found.append((column.name, sequence))
    return found


def _convert(conn: Connection, period: str, moment: datetime) -> None:
    """Rebuild the four job tables as partitioned tables (see Store.partition)."""
    conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_ID)))  # one schema change
    conn.execute(text(f"LOCK TABLE {', '.join(PARTITIONED_TABLES)} IN ACCESS EXCLUSIVE MODE"))
    names = list(PARTITIONED_TABLES)
    policies = conn.execute(
        text(
            "SELECT tablename, policyname, permissive, roles, cmd, qual, with_check "
            "FROM pg_policies WHERE schemaname = current_schema() AND tablename = ANY(:t)"
        ),
        {"t": names},
    ).all()
    security = conn.execute(
        text(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relnamespace = to_regnamespace(current_schema())::oid AND relname = ANY(:t)"
        ),
        {"t": names},
    ).all()
    extra_indexes = set(
        conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = 'jobs' AND indexname = ANY(:i)"
            ),
            {"i": [SEARCH_INDEX, ID_PREFIX_INDEX, WORDS_INDEX, FAILURE_GROUPS_INDEX]},
        ).scalars()
    )
    grouped = conn.execute(  # the error group's triggers (revision 0015): made again below
        text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'jobs'::regclass "
            "AND tgname LIKE 'jobtrack_error_group_%'"
        )
    ).scalar()
    oldest = conn.execute(select(func.min(jobs.c.created_at))).scalar()
    # The trace view reads job_events: made again over the new table at the end.
    had_view = conn.execute(text("SELECT to_regclass(:v)"), {"v": TRACE_VIEW}).scalar()
    if had_view:
        conn.execute(text(f"DROP VIEW {TRACE_VIEW}"))
    # Out of the way: the old tables keep their data under another name until copied;
    # their constraints, indexes and sequences' names are freed for the new ones.
    for table in reversed(names):  # children first: their foreign keys go first
        old = f"{_OLD}{table}"
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {old}"))
        for (constraint,) in conn.execute(
            text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) "
                "ORDER BY contype = 'p'"
            ),
            {"t": old},
        ).all():
            conn.execute(text(f'ALTER TABLE {old} DROP CONSTRAINT "{constraint}"'))
        for (index,) in conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = :t"
            ),
            {"t": old},
        ).all():
            conn.execute(text(f'DROP INDEX "{index}"'))
        for _column, sequence in _sequences(conn, old, table):
            conn.execute(text(f"ALTER SEQUENCE {sequence} RENAME TO {_OLD}{table}_seq"))
    for table in names:
        twin = TWINS[table]
        conn.execute(CreateTable(twin))
        if twin.comment:
            conn.execute(SetTableComment(twin))
        for column in twin.columns:
            if column.comment:
                conn.execute(SetColumnComment(column))
    if grouped:  # on the partitioned table, PostgreSQL makes them on every partition
        for trigger in ERROR_GROUP_TRIGGERS_DDL:
            conn.execute(text(trigger))
    first = period_start(oldest or moment, period)
    start = first
    here = period_start(moment, period)
    while start < here:
        _create_partition(conn, start, period)
        start = _next_start(start, period)
    for table in names:
        conn.execute(
            text(f"CREATE TABLE {partition_name(table, None)} PARTITION OF {table} DEFAULT")
        )
    _ensure(conn, period, moment)
    unit = "month" if period == "month" else "day"
    columns = [c.name for c in TWINS["jobs"].columns if c.name != PARTITION_KEY]
    listed = ", ".join(f'"{c}"' for c in columns)
    conn.execute(
        text(
            f"INSERT INTO jobs ({listed}, {PARTITION_KEY}) SELECT {listed}, "
            f"date_trunc('{unit}', created_at AT TIME ZONE 'UTC')::date FROM {_OLD}jobs"
        )
    )
    for table in names[1:]:
        columns = [c.name for c in TWINS[table].columns if c.name != PARTITION_KEY]
        listed = ", ".join(f'"{c}"' for c in columns)
        chosen = ", ".join(f'o."{c}"' for c in columns)
        conn.execute(
            text(
                f"INSERT INTO {table} ({listed}, {PARTITION_KEY}) "
                f"SELECT {chosen}, coalesce(j.{PARTITION_KEY}, :here) FROM {_OLD}{table} o "
                f"LEFT JOIN jobs j ON j.id = o.job_id"
            ),
            {"here": here},
        )
    for table in names:
        for index in TWINS[table].indexes:
            conn.execute(CreateIndex(index))
    if SEARCH_INDEX in extra_indexes:
        conn.execute(text(SEARCH_INDEX_DDL))
    if ID_PREFIX_INDEX in extra_indexes:
        conn.execute(text(ID_PREFIX_INDEX_DDL))
    if WORDS_INDEX in extra_indexes:
        conn.execute(text(WORDS_INDEX_DDL))
    if FAILURE_GROUPS_INDEX in extra_indexes:
        conn.execute(text(FAILURE_GROUPS_INDEX_DDL))
    for table in reversed(names):
        conn.execute(text(f"DROP TABLE {_OLD}{table}"))
        for key, sequence in _sequences(conn, table, table):
            conn.execute(
                text(
                    f"SELECT setval('{sequence}', coalesce((SELECT max({key}) "
                    f"FROM {table}), 0) + 1, false)"
                )
            )
    for name, enabled, forced in security:
        table = name.removeprefix(_OLD)
        if enabled:
            conn.execute(text(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"))
        if forced:
            conn.execute(text(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
    for table, policy, permissive, roles, cmd, qual, with_check in policies:
        to = ", ".join(roles) if roles else "public"
        sql = f'CREATE POLICY "{policy}" ON {table} AS {permissive} FOR {cmd} TO {to}'
        if qual is not None:
            sql += f" USING ({qual})"
        if with_check is not None:
            sql += f" WITH CHECK ({with_check})"
        conn.execute(text(sql))
    if had_view:
        version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
        conn.execute(text(trace_view_ddl("postgresql", version)))
    conn.execute(insert(partitioning).values(period=period, since=moment))
    for table in names:
        conn.execute(text(f"ANALYZE {table}"))
