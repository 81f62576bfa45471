"""Column types and table options the revisions share, settled per dialect once.

Frozen like the revisions themselves: what a type renders as on PostgreSQL and SQLite
never changes here (a revision already applied must mean the same on a re-run); MySQL
and MariaDB, which no revision supported before these variants, get theirs:
``DATETIME(6)`` (microseconds, UTC), ``LONGTEXT`` (``TEXT`` holds 64 KB), ``DOUBLE``
(``FLOAT`` is single precision), and utf8mb4 tables with a binary collation that does
not pad, so text compares as on PostgreSQL: case and trailing spaces count.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

__all__ = ["FLOAT", "JSON_DOC", "MYSQL", "ROW_ID", "TEXT", "TS", "is_mysql", "table_options"]

MYSQL = ("mysql", "mariadb")
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *MYSQL)
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), *MYSQL)
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL)
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def is_mysql() -> bool:
    """Whether the revision runs on MySQL or MariaDB."""
    return op.get_context().dialect.name in MYSQL


def table_options() -> dict[str, Any]:
    """What ``op.create_table`` adds on MySQL and MariaDB (nothing elsewhere): utf8mb4
    and the server's binary collation without padding (MariaDB ``utf8mb4_nopad_bin``,
    MySQL 8 ``utf8mb4_0900_bin``)."""
    dialect = op.get_context().dialect
    if dialect.name not in MYSQL:
        return {}
    mariadb = bool(getattr(dialect, "is_mariadb", False))
    collation = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
    return {
        f"{dialect.name}_charset": "utf8mb4",
        f"{dialect.name}_collate": collation,
    }
