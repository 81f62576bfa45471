"""The write path's statements: built once, run by :meth:`Store.write_batch`.

Builders only, no I/O. Job rows (:data:`~jobtrack.models.Row`, sparse: a missing key
sets nothing) and trace entries reach PostgreSQL as two JSON documents in one
statement: ``json_populate_recordset`` reads them (a missing key reads as NULL, a nested
document lands in its ``jsonb`` column as it is), the jobs upsert and the events insert
are its two data-modifying parts, and the change notification is its result. A short
task's whole lifecycle, many tasks at once, is one round trip. Items and log lines, which
come in thousands, are streamed with ``COPY`` (into a staging table where they must be
merged). Elsewhere (SQLite) the same upsert runs through executemany; on MySQL and
MariaDB it is ``INSERT … ON DUPLICATE KEY UPDATE``, which the drivers send as one
multi-row statement per batch (see :func:`write_statement`).

The merge rules of :mod:`jobtrack.models` are the SET of the upsert
(:func:`job_merge_rules`), so concurrent writers in many processes cannot move a job
backwards, whatever order their batches land in.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.visitors import replacement_traverse

from ..models import (
    ATTEMPT_COLUMNS,
    CANCEL_REQUESTED_SEQ,
    ERROR_COLUMNS,
    EVENT_COLUMNS,
    FILL_COLUMNS,
    MAX_COLUMNS,
    MIN_COLUMNS,
    PROGRESS_COLUMNS,
    RESET_COLUMNS,
    RESET_FILL_COLUMNS,
    RUN_COLUMN,
    TERMINAL_SEQ,
    EventRow,
    Item,
    ItemStatus,
    JobUpdate,
    LogLine,
    Row,
)
from ..payload import Packed, unpack
from ..schema import MYSQL, job_events, job_items, job_logs, jobs, staging_table
from .common import CHANGES_CHANNEL
from .partitions import TWINS

__all__ = [
    "ALL_STAGING",
    "JSON_COLUMNS",
    "STAGING",
    "TABLES",
    "WRITE_COLUMNS",
    "NativeStatement",
    "encode_events",
    "encode_records",
    "encode_rows",
    "event_dicts",
    "item_row",
    "job_merge_rules",
    "jobs_and_events",
    "jobs_and_events_sql",
    "json_text",
    "log_row",
    "row_dicts",
    "write_statement",
]

#: The columns each write statement sets, in order.
WRITE_COLUMNS: dict[str, tuple[str, ...]] = {
    "jobs": JobUpdate.COLUMNS,
    "job_items": (
        "job_id",
        "key",
        "status",
        "message",
        "error_code",
        "before_state",
        "after_state",
        "processed_at",
    ),
    "job_events": EVENT_COLUMNS,
    "job_logs": ("job_id", "at", "level", "logger", "message"),
}
TABLES = {"jobs": jobs, "job_items": job_items, "job_events": job_events, "job_logs": job_logs}
#: COPY lands here first where rows must be merged with existing ones.
STAGING = {"jobs": staging_table(jobs), "job_items": staging_table(job_items)}
#: With partitioned tables events and log lines are staged too (their partition is
#: their job's, looked up in the merge).
ALL_STAGING = {
    **STAGING,
    "job_events": staging_table(job_events),
    "job_logs": staging_table(job_logs),
}
#: Columns holding JSON documents, per table (COPY sends them as JSON text).
JSON_COLUMNS = {
    name: frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
    for name, table in TABLES.items()
}
_JOB_DOCUMENTS = tuple(sorted(JSON_COLUMNS["jobs"]))
#: Naive times are UTC (as the tables' own type takes them); keys that are not text
#: become text, as the standard library's encoder makes them.
_ORJSON = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


def json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_rows(rows: Sequence[Row]) -> str:
    """Job rows as one JSON array (a missing key or None: NULL, which sets nothing)."""
    return orjson.dumps(rows, option=_ORJSON).decode()


def encode_records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows of values (in ``columns`` order) as one JSON array of objects."""
    return orjson.dumps(
        [dict(zip(columns, row, strict=True)) for row in rows], option=_ORJSON
    ).decode()


def encode_events(events: Sequence[EventRow]) -> str:
    """Trace entries as one JSON array of objects."""
    return orjson.dumps(event_dicts(events), option=_ORJSON).decode()


def row_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Job rows with every column (executemany wants the same keys in each), their
    documents as Python values (the column type encodes them)."""
    out = []
    for row in rows:
        values = {name: row.get(name) for name in JobUpdate.COLUMNS}
        for name in _JOB_DOCUMENTS:
            if type(values[name]) is Packed:
                values[name] = unpack(values[name])
        out.append(values)
    return out


def event_dicts(events: Sequence[EventRow]) -> list[dict[str, Any]]:
    return [dict(zip(EVENT_COLUMNS, e, strict=True)) for e in events]


def item_row(i: Item) -> tuple[Any, ...]:
    return (
        i.job_id,
        i.key,
        i.status.value,
        i.message,
        i.error_code,
        i.before_state,
        i.after_state,
        i.processed_at,
    )


def log_row(line: LogLine) -> tuple[Any, ...]:
    return (line.job_id, line.at, line.level, line.logger, line.message)


def _json_source(table: Table, param: str) -> Any:
    """``table``'s rows read from the JSON array parameter ``param`` (one object per
    row, keyed by column; a missing key reads as NULL)."""
    document = cast(bindparam(param, type_=Text), postgresql.JSON)
    records = func.json_populate_recordset(literal_column(f"NULL::{table.name}"), document)
    return records.table_valued(*(column(c.name, c.type) for c in table.columns)).alias(
        f"new_{table.name}"
    )


@functools.cache
def write_statement(
    dialect: str, table_name: str, source: str = "values", partitioned: bool = False
) -> Any:
    """The insert/upsert for one table, built once: every flush runs it.

    ``source``: "values" (executemany's parameters), "staging" (what COPY put in the
    staging table) or "json" (the JSON array parameter named after the table).
    Partitioned (PostgreSQL): a row takes its job's partition if the job has a row, else
    the ``part`` parameter (the writer's period).
    """
    if dialect in MYSQL:
        return _mysql_write_statement(table_name)
    table = TWINS[table_name] if partitioned else TABLES[table_name]
    columns = WRITE_COLUMNS[table_name]
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    if source != "values":
        rows = ALL_STAGING[table_name] if source == "staging" else _json_source(table, table_name)
        chosen: list[ColumnElement[Any]] = [rows.c[name] for name in columns]
        targets = list(columns)
        if partitioned:
            owner = TWINS["jobs"]
            job_id = rows.c.id if table_name == "jobs" else rows.c.job_id
            adopted = select(owner.c.part).where(owner.c.id == job_id).limit(1)
            chosen.append(
                func.coalesce(adopted.scalar_subquery(), bindparam("part", type_=owner.c.part.type))
            )
            targets.append("part")
        stmt = insert(table).from_select(targets, select(*chosen))
    key = [table.c.part] if partitioned else []
    if table_name == "jobs":
        return stmt.on_conflict_do_update(
            index_elements=[table.c.id, *key], set_=job_merge_rules(stmt, table)
        )
    if table_name == "job_items":
        # A planned (pending) item never replaces a recorded outcome.
        return stmt.on_conflict_do_update(
            index_elements=[table.c.job_id, table.c.key, *key],
            set_={name: stmt.excluded[name] for name in columns[2:]},
            where=stmt.excluded.status != ItemStatus.PENDING.value,
        )
    return stmt


@dataclass(frozen=True)
class NativeStatement:
    """A statement compiled once to the server's own placeholders (``$1`` …), to run on
    the driver's raw cursor: every flush runs it, and neither SQLAlchemy (which would
    work out the big statement's cache key) nor the driver (which would parse its
    placeholders again: it caches that only for short statements) does any work on it
    per run."""

    sql: str
    names: tuple[str, ...]
    constants: dict[str, Any]

    @classmethod
    def of(cls, stmt: Any, dialect: Dialect) -> NativeStatement:
        compiled = stmt.compile(dialect=dialect)
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        sql = _PYFORMAT.sub(number, compiled.string).replace("%%", "%")
        return cls(sql, tuple(names), dict(compiled.params))

    def parameters(self, values: dict[str, Any]) -> list[Any]:
        """The values in placeholder order (the constants where ``values`` has none)."""
        return [values[n] if n in values else self.constants.get(n) for n in self.names]


#: SQLAlchemy's psycopg placeholders: ``%(name)s``.
_PYFORMAT = re.compile(r"%\((\w+)\)s")


def _mysql_write_statement(table_name: str) -> Any:
    """The insert/upsert for one table on MySQL and MariaDB: ``ON DUPLICATE KEY
    UPDATE`` with the same rules as elsewhere. MySQL assigns left to right, each
    assignment seeing the ones before it, so ``state_seq`` and ``sent_at``, which the
    other rules read as they were, are assigned last (:func:`job_merge_rules` gives them
    in that order); a pending item's guard reads only the new row's values, so its order
    does not matter."""
    table = TABLES[table_name]
    stmt = mysql.insert(table)
    if table_name == "jobs":
        sets = list(job_merge_rules(stmt, table).items())  # state_seq, sent_at last
    elif table_name == "job_items":
        new = stmt.inserted
        # A planned (pending) item never replaces a recorded outcome.
        recorded = new.status != ItemStatus.PENDING.value
        sets = [
            (name, case((recorded, new[name]), else_=table.c[name]))
            for name in WRITE_COLUMNS[table_name][2:]
        ]
    else:
        return stmt
    # The drivers send a batch as one multi-row INSERT, repeating the VALUES part per
    # row and copying the rest as it is: the update's constants must be in its text.
    return stmt.on_duplicate_key_update([(name, _inline(rule)) for name, rule in sets])


def _inline(rule: ColumnElement[Any]) -> ColumnElement[Any]:
    """``rule`` with its constants (the order keys, a status) written into the SQL."""

    def constant(element: Any, **_kw: Any) -> Any:
        if isinstance(element, BindParameter) and not element.callable:
            value = element.value
            if type(value) is int:
                return literal_column(str(value))
            if type(value) is str and value.isalnum():
                return literal_column(f"'{value}'")
            raise ValueError(f"a constant the upsert cannot hold as text: {value!r}")
        return None

    inlined: ColumnElement[Any] = replacement_traverse(rule, {}, constant)
    return inlined


@functools.cache
def jobs_and_events_sql(
    dialect: Dialect, with_jobs: bool, with_events: bool, partitioned: bool
) -> NativeStatement:
    """:func:`jobs_and_events`, compiled once for the raw cursor."""
    return NativeStatement.of(jobs_and_events(with_jobs, with_events, partitioned), dialect)


@functools.cache
def jobs_and_events(with_jobs: bool, with_events: bool, partitioned: bool) -> Any:
    """One PostgreSQL statement: the job rows upserted (parameter ``jobs``), the trace
    entries inserted (``job_events``), and the change notification (``ids``) sent at
    commit. A job created here is visible to its events' foreign key: constraints are
    checked at the end of the statement."""
    parts = []
    if with_jobs:
        upsert = write_statement("postgresql", "jobs", "json", partitioned)
        parts.append(upsert.returning(literal_column("1")).cte("written_jobs"))
    if with_events:
        insert = write_statement("postgresql", "job_events", "json", partitioned)
        parts.append(insert.returning(literal_column("1")).cte("written_events"))
    return select(func.pg_notify(CHANGES_CHANNEL, bindparam("ids", type_=Text))).add_cte(*parts)


def job_merge_rules(stmt: Any, table: Any = jobs) -> dict[str, ColumnElement[Any]]:
    """The merge rules of :mod:`jobtrack.models`, as the SET of the jobs upsert (its
    ``ON CONFLICT DO UPDATE``; on MySQL its ``ON DUPLICATE KEY UPDATE``). Every rule
    reads the stored row as it was; ``sent_at``'s reads only itself."""
    new = stmt.inserted if isinstance(stmt, mysql.Insert) else stmt.excluded
    cur = table.c
    # Between two runs of a job (both stamped: see RUN_COLUMN), the later one's rows take
    # it and the earlier one's take nothing; otherwise the order key decides.
    stamped = and_(new[RUN_COLUMN].is_not(None), cur[RUN_COLUMN].is_not(None))
    later = and_(stamped, new[RUN_COLUMN] > cur[RUN_COLUMN])
    earlier = and_(stamped, new[RUN_COLUMN] < cur[RUN_COLUMN])
    same_run = or_(
        new[RUN_COLUMN].is_(None),
        cur[RUN_COLUMN].is_(None),
        new[RUN_COLUMN] == cur[RUN_COLUMN],
    )
    takes = or_(
        later,
        and_(
            same_run,
            or_(
                new.state_seq > cur.state_seq,
                and_(new.state_seq == cur.state_seq, new.state_seq < TERMINAL_SEQ),
            ),
        ),
    )
    progress_ok = and_(same_run, cur.state_seq < TERMINAL_SEQ)
    sets: dict[str, ColumnElement[Any]] = {
        "status": case((takes, new.status), else_=cur.status),
    }
    replaces_cancel = cur.state_seq == CANCEL_REQUESTED_SEQ
    for name in ATTEMPT_COLUMNS:
        given = new[name].is_not(None)
        if name in ERROR_COLUMNS:
            given = or_(given, replaces_cancel)
        sets[name] = case((later, new[name]), (and_(takes, given), new[name]), else_=cur[name])
    for name in PROGRESS_COLUMNS:
        sets[name] = case(
            (later, new[name]),
            (and_(progress_ok, new[name].is_not(None)), new[name]),
            else_=cur[name],
        )
    for name in FILL_COLUMNS:
        sets[name] = func.coalesce(cur[name], new[name])
    # A later run: its own cancel request and input (none until its rows bring them, and
    # never an earlier run's), no pause asked of it, and no operator's retry of it yet.
    for name in RESET_FILL_COLUMNS:
        sets[name] = case((later, new[name]), (earlier, cur[name]), else_=sets[name])
    for name in ("pause_requested_at", "retried_by"):
        sets[name] = case((later, None), else_=cur[name])
    for name in MAX_COLUMNS:
        sets[name] = case(
            (
                and_(new[name].is_not(None), or_(cur[name].is_(None), new[name] > cur[name])),
                new[name],
            ),
            else_=cur[name],
        )
        if name in RESET_COLUMNS:  # the run's own count and beat, not the earlier run's
            reset = func.coalesce(new[name], 0) if name == "retries" else new[name]
            sets[name] = case((later, reset), (earlier, cur[name]), else_=sets[name])
    for name in MIN_COLUMNS:
        sets[name] = case(
            (
                and_(new[name].is_not(None), or_(cur[name].is_(None), new[name] < cur[name])),
                new[name],
            ),
            else_=cur[name],
        )
    # Read by every rule above as it was: assigned last (MySQL assigns left to right).
    sets["state_seq"] = case((takes, new.state_seq), else_=cur.state_seq)
    sets[RUN_COLUMN] = case(
        (
            and_(
                new[RUN_COLUMN].is_not(None),
                or_(cur[RUN_COLUMN].is_(None), new[RUN_COLUMN] > cur[RUN_COLUMN]),
            ),
            new[RUN_COLUMN],
        ),
        else_=cur[RUN_COLUMN],
    )
    return sets
