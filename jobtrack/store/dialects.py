"""The store's dialect seams: what one statement is on PostgreSQL, SQLite, MySQL and
MariaDB, where their SQL differs. Builders only, no I/O.

- An upsert: ``ON CONFLICT (…) DO UPDATE`` (PostgreSQL, SQLite) or ``ON DUPLICATE KEY
  UPDATE`` (MySQL, MariaDB: the conflict is any unique key, and the assignments run left
  to right, each seeing the ones before it).
- What a connection is set up with on MySQL and MariaDB (:data:`MYSQL_INIT`).
- ``UPDATE … RETURNING``, which MySQL and MariaDB lack (:func:`updated`: the rows are
  read and locked first, then changed), the one helper here that runs a statement, on
  its caller's connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Row,
    Table,
    case,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..schema import MYSQL

__all__ = [
    "MYSQL",
    "MYSQL_INIT",
    "MYSQL_SQL_MODE",
    "insert_for",
    "is_mysql",
    "mysql_session",
    "updated",
    "upsert",
]

#: The session's SQL mode on MySQL and MariaDB, whatever the server's default: strict,
#: so a value the column cannot hold is refused (and set aside by the writer) instead of
#: cut or changed with a warning.
MYSQL_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)


def is_mysql(dialect: str) -> bool:
    """Whether ``dialect`` (an engine's ``dialect.name``) is MySQL's or MariaDB's."""
    return dialect in MYSQL


def insert_for(dialect: str) -> Callable[[Table], Any]:
    """The dialect's ``insert`` (each has its own conflict clause)."""
    if dialect == "postgresql":
        return postgresql.insert
    if dialect in MYSQL:
        return mysql.insert
    return sqlite.insert


def upsert(
    dialect: str,
    table: Table,
    values: Any = None,
    *,
    keys: Sequence[str],
    update: Callable[[Any], dict[str, ColumnElement[Any]]],
    where: Callable[[Any], ColumnElement[bool]] | None = None,
) -> Any:
    """``INSERT`` of ``values`` (None: the executemany parameters) that, when a row with
    the same ``keys`` exists, sets what ``update(new)`` returns instead (``new``: the
    row that was to be inserted), only where ``where(new)`` holds if given.

    On MySQL and MariaDB the conflict is any unique key of the table (``keys`` must be
    its only one), ``where`` becomes a CASE on each assignment, and the assignments run
    in the order given, each seeing the ones before it: a rule (or ``where``) must not
    read a column assigned before it, so a column ``where`` reads comes last."""
    stmt = insert_for(dialect)(table)
    if values is not None:
        stmt = stmt.values(values)
    if dialect in MYSQL:
        new = stmt.inserted
        sets = list(update(new).items())
        if where is not None:
            condition = where(new)
            sets = [(name, case((condition, v), else_=table.c[name])) for name, v in sets]
        return stmt.on_duplicate_key_update(sets)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in keys],
        set_=update(stmt.excluded),
        where=where(stmt.excluded) if where is not None else None,
    )


#: What every MySQL or MariaDB connection of the store runs first: UTC (``NOW()`` and
#: the like agree with the stored times) and strict mode (:data:`MYSQL_SQL_MODE`).
MYSQL_INIT = f"SET time_zone = '+00:00', sql_mode = '{MYSQL_SQL_MODE}'"


def mysql_session(dbapi_conn: Any, _record: Any = None) -> None:
    """Set up a connection of an engine given to the store as the store's own are
    (:data:`MYSQL_INIT`; their READ COMMITTED is the engine's to choose)."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(MYSQL_INIT)
    finally:
        cursor.close()


def updated(
    conn: Connection,
    table: Table,
    where: Sequence[ColumnElement[bool]],
    values: dict[str, Any],
    returning: Sequence[Column[Any]],
) -> Sequence[Row[Any]]:
    """``UPDATE table SET values WHERE where``, giving back ``returning`` of each row it
    changed. Where the database has no ``UPDATE … RETURNING`` (MySQL, MariaDB), the
    rows are read with ``FOR UPDATE`` (locked until the transaction ends, so the
    condition still holds for the update) and the values read are the ones before the
    update: ask only for columns ``values`` leaves alone."""
    if conn.dialect.update_returning:
        return conn.execute(
            update(table).where(*where).values(**values).returning(*returning)
        ).all()
    key = list(table.primary_key.columns)
    labels = [c.label(f"key_{c.name}") for c in key]
    found = conn.execute(select(*returning, *labels).where(*where).with_for_update()).all()
    if found:
        keys = [tuple(row[len(returning) :]) for row in found]
        conn.execute(update(table).where(tuple_(*key).in_(keys), *where).values(**values))
    return found
