"""Named leases, one row each (``store.leases``): whoever holds one does its chore.

A part the :class:`~jobtrack.store.Store` holds; one transaction per public method. The
reaper's round, an alert pass and a bulk action's run each take a lease; the others
skip the chore until it expires. :mod:`jobtrack.leases` builds on these (holder names,
taking a lease over from a process that is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import leases
from .dialects import is_mysql, upsert

__all__ = ["Leases"]


class Leases:
    """Take, read, release and take over leases (``store.leases``)."""

    def __init__(
        self,
        begin: Callable[[str], AbstractContextManager[Connection]],
        dialect: Callable[[], str],
        now: Callable[[], datetime],
    ) -> None:
        self._begin = begin
        self._dialect = dialect
        self._now = now

    def take(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take (or keep) the lease ``name`` for ``ttl_s`` seconds; False while another
        holder's lease runs. One row per lease, on every backend."""
        now = self._now()
        expires_at = now + timedelta(seconds=ttl_s)
        dialect = self._dialect()
        if is_mysql(dialect):
            return self._take_mysql(dialect, name, holder, now, expires_at)
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(leases).values(name=name, holder=holder, expires_at=expires_at)
        take = stmt.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
            where=or_(leases.c.expires_at < now, leases.c.holder == holder),
        ).returning(leases.c.name)
        with self._begin("take lease") as conn:
            return conn.execute(take).first() is not None

    def _take_mysql(
        self, dialect: str, name: str, holder: str, now: datetime, expires_at: datetime
    ) -> bool:
        """:meth:`take` on MySQL and MariaDB, whose upsert has no condition and no
        RETURNING: ``holder`` is assigned first, by the condition; ``expires_at`` then
        follows it (it has become ours exactly when the condition held, or it was ours
        already), and the row read back says who holds it."""

        def take(new: Any) -> dict[str, Any]:
            free = or_(leases.c.expires_at < now, leases.c.holder == new.holder)
            return {
                "holder": case((free, new.holder), else_=leases.c.holder),
                "expires_at": case(
                    (leases.c.holder == new.holder, new.expires_at), else_=leases.c.expires_at
                ),
            }

        values = {"name": name, "holder": holder, "expires_at": expires_at}
        with self._begin("take lease") as conn:
            conn.execute(upsert(dialect, leases, values, keys=["name"], update=take))
            held = conn.execute(select(leases.c.holder).where(leases.c.name == name)).scalar()
        return held == holder

    def holder(self, name: str) -> tuple[str, datetime] | None:
        """Who holds the lease ``name`` and until when (None: nobody ever took it)."""
        with self._begin("read lease") as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        return None if row is None else (row.holder, row.expires_at)

    def release(self, name: str, holder: str) -> None:
        """End the lease ``name`` if ``holder`` holds it."""
        with self._begin("release lease") as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def take_over(self, name: str, holder: str, new_holder: str, ttl_s: float) -> bool:
        """Take the lease ``name`` from ``holder`` (known to be gone), if it still holds it."""
        with self._begin("take over lease") as conn:
            return bool(
                conn.execute(
                    update(leases)
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(holder=new_holder, expires_at=self._now() + timedelta(seconds=ttl_s))
                ).rowcount
            )
