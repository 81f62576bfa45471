"""Alembic, configured for jobtrack's own migrations.

jobtrack keeps its revision in its own version table (``jobtrack_alembic_version``) so it
never collides with an application's Alembic history in the same database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

__all__ = [
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade_to_head",
]

VERSION_TABLE = "jobtrack_alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "jobtrack:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs its context at INFO each time one is made; every worker process
    checks the schema once, and those lines say nothing to the user."""
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def current_revision(connection: Connection) -> str | None:
    with _quiet_alembic():
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


#: Alembic runs a migration through module globals (``alembic.context``, ``op``), which
#: it sets up and tears down around each run: two runs at once in one process (two
#: stores' first writes, a writer's thread and a helper) tear down each other's.
_ALEMBIC = threading.Lock()


def upgrade_to_head(connection: Connection, *, sql: bool = False) -> None:
    """Upgrade inside the caller's transaction; nothing to do when already at head."""
    if current_revision(connection) == head_revision():
        return
    with _ALEMBIC:
        command.upgrade(alembic_config(connection), "head", sql=sql)
