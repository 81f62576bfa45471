"""The values a filter field holds, for the dashboard's suggestions (``store.suggest``).

A part the :class:`~jobtrack.store.Store` holds. Every filter the dashboard offers has an
index led by its column, so its distinct values are read by skipping through that index
(a recursive query: the next value after the last one, one index step each): the cost is
the number of values, not of jobs. For an owner-bound reader the values come from that
owner's newest jobs instead (the owner's index does not order the others).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import Connection, func, select

from ..schema import jobs

__all__ = ["FIELDS", "OWNER_WINDOW", "SuggestQueries"]

#: The fields values are suggested for.
FIELDS = ("task_name", "job_type", "queue", "owner_id")
#: An owner's suggestions come from this many of its newest jobs.
OWNER_WINDOW = 10_000


class SuggestQueries:
    """Filter suggestions' reads (``store.suggest``)."""

    def __init__(self, begin: Callable[[str], AbstractContextManager[Connection]]) -> None:
        self._begin = begin

    def values(self, field: str, *, owner_id: str | None = None, limit: int = 200) -> list[str]:
        """The distinct values of ``field`` (one of :data:`FIELDS`), in order, at most
        ``limit``; with ``owner_id``, among that owner's newest :data:`OWNER_WINDOW`
        jobs."""
        if field not in FIELDS:
            raise ValueError(f"no suggestions for {field!r}: one of {', '.join(FIELDS)}")
        column = jobs.c[field]
        limit = max(min(limit, 1000), 1)
        if owner_id is not None:
            newest = (
                select(column.label("v"))
                .where(jobs.c.owner_id == owner_id)
                .order_by(jobs.c.created_at.desc())
                .limit(OWNER_WINDOW)
                .subquery()
            )
            query = (
                select(newest.c.v).where(newest.c.v.is_not(None)).distinct().order_by(newest.c.v)
            ).limit(limit)
        else:
            first = select(func.min(column).label("v")).cte("found", recursive=True)
            after = select(func.min(column)).where(column > first.c.v).scalar_subquery()
            found = first.union_all(select(after).where(first.c.v.is_not(None)))
            query = select(found.c.v).where(found.c.v.is_not(None)).limit(limit)
        with self._begin("suggest") as conn:
            return [str(v) for v in conn.execute(query).scalars()]
