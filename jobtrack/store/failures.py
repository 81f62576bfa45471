"""The failure groups: failed (and lost) jobs no operator handled yet, grouped by task,
error type and the error message with its numbers, ids and quoted values masked.

A part the :class:`~jobtrack.store.Store` holds (``store.failures``), one transaction
per public method like the rest of the store. On PostgreSQL a trigger keeps each row's
``error_group`` and every read here is a range of one partial index
(``schema.FAILURE_GROUPS_INDEX``: group, finish time), so it costs the unhandled
failures, not the table; SQLite has no regular expressions in SQL and reads the failed
rows, grouped in Python with the same masks (``models.error_group_of``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, column, extract, func, select, text, true, values

from ..models import FailureGroup, JobFilter, error_group_of, masked_error
from ..schema import FAILURES, jobs
from .common import filtered

__all__ = ["HOURS", "FailureQueries"]

#: The groups' counts per hour cover this many hours back from now.
HOURS = 24
#: When a failure was seen: when its job finished (a lost job: when it was found lost).
_SEEN = func.coalesce(jobs.c.completed_at, jobs.c.updated_at)


_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass
class _Tally:
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    example: tuple[str, str | None, str | None, str | None, datetime | None] | None = None


class FailureQueries:
    """The failure groups' reads (``store.failures``)."""

    def __init__(self, begin: Callable[[str], AbstractContextManager[Connection]]) -> None:
        self._begin = begin

    def groups(
        self, where: JobFilter | None = None, *, now: datetime, limit: int = 50
    ) -> list[FailureGroup]:
        """The groups of the unhandled failures ``where`` matches (its status and
        handled fields are the groups' own), the most recently seen first, at most
        ``limit``; each with its counts per hour over the :data:`HOURS` before ``now``."""
        scope = (where or JobFilter()).where(status=None, handled=None)
        limit = max(min(limit, 1000), 1)
        with self._begin("failure groups") as conn:
            if conn.dialect.name != "postgresql":
                return _in_python(conn, scope, now, limit)
            return _in_sql(conn, scope, now, limit)


def _failures(*columns: Any, scope: JobFilter) -> Any:
    """The unhandled failures ``scope`` narrows, spelled as the partial index's
    predicate (literals: the planner proves the index covers them)."""
    return filtered(select(*columns).where(text(FAILURES)), scope)


def _buckets(seen: datetime | None, now: datetime) -> int | None:
    """Which of the last :data:`HOURS` hours ``seen`` falls in (0: the oldest)."""
    if seen is None:
        return None
    back = (now - seen).total_seconds() / 3600
    return HOURS - 1 - int(back) if 0 <= back < HOURS else None


def _in_sql(conn: Connection, scope: JobFilter, now: datetime, limit: int) -> list[FailureGroup]:
    key = jobs.c.error_group
    found = conn.execute(
        _failures(key, func.count(), func.min(_SEEN), func.max(_SEEN), scope=scope)
        .group_by(key)
        .order_by(func.max(_SEEN).desc(), key)
        .limit(limit)
    ).all()
    if not found:
        return []
    keys = [row[0] for row in found]
    since = now - timedelta(hours=HOURS)
    hour = func.floor(extract("epoch", _SEEN - since) / 3600).label("hour")
    hourly: dict[str | None, list[int]] = {k: [0] * HOURS for k in keys}
    for group, at, n in conn.execute(
        _failures(key, hour, func.count(), scope=scope)
        .where(_SEEN >= since, _SEEN < now, func.coalesce(key, "").in_([k or "" for k in keys]))
        .group_by(key, hour)
    ):
        if group in hourly and at is not None and 0 <= int(at) < HOURS:
            hourly[group][int(at)] += int(n)
    # The newest failure of each group: one step back in the index per group.
    listed = values(column("k", String), name="listed").data([(k,) for k in keys if k])
    newest = (
        _failures(jobs.c.id, jobs.c.task_name, jobs.c.error_type, jobs.c.error_message, scope=scope)
        .where(key == listed.c.k)
        .order_by(jobs.c.completed_at.desc())
        .limit(1)
        .lateral("newest")
    )
    examples = {
        row[0]: row[1:] for row in conn.execute(select(listed.c.k, newest).join(newest, true()))
    }
    groups = []
    for group, count, first, last in found:
        job_id, task_name, error_type, message = examples.get(group, (None, None, None, None))
        groups.append(
            FailureGroup(
                key=group,
                task_name=task_name,
                error_type=error_type,
                message=masked_error(message) if group else "",
                count=int(count),
                first_seen=first,
                last_seen=last,
                hourly=tuple(hourly[group]),
                example_id=job_id,
                example_message=message,
            )
        )
    return groups


def _in_python(conn: Connection, scope: JobFilter, now: datetime, limit: int) -> list[FailureGroup]:
    rows = conn.execute(
        _failures(
            jobs.c.id,
            jobs.c.task_name,
            jobs.c.error_type,
            jobs.c.error_message,
            jobs.c.completed_at,
            jobs.c.updated_at,
            scope=scope,
        )
    )
    tallies: dict[str | None, _Tally] = {}
    hourly: dict[str | None, list[int]] = {}
    for job_id, task_name, error_type, message, completed_at, updated_at in rows:
        key = error_group_of(task_name, error_type, message)
        seen = completed_at or updated_at
        tally = tallies.setdefault(key, _Tally())
        tally.count += 1
        if seen is not None:
            tally.first = seen if tally.first is None else min(tally.first, seen)
            tally.last = seen if tally.last is None else max(tally.last, seen)
        if tally.example is None or (completed_at or seen) > (tally.example[4] or seen):
            tally.example = (job_id, task_name, error_type, message, completed_at or seen)
        bucket = _buckets(seen, now)
        if bucket is not None:
            hourly.setdefault(key, [0] * HOURS)[bucket] += 1
    by_key = sorted(tallies.items(), key=lambda kv: kv[0] or "")
    ordered = sorted(by_key, key=lambda kv: kv[1].last or _NEVER, reverse=True)
    return list(_made(ordered[:limit], hourly))


def _made(
    ordered: list[tuple[str | None, _Tally]], hourly: dict[str | None, list[int]]
) -> Iterator[FailureGroup]:
    for key, tally in ordered:
        job_id, task_name, error_type, message, _ = tally.example or (None, None, None, None, None)
        yield FailureGroup(
            key=key,
            task_name=task_name,
            error_type=error_type,
            message=masked_error(message) if key else "",
            count=tally.count,
            first_seen=tally.first,
            last_seen=tally.last,
            hourly=tuple(hourly.get(key, [0] * HOURS)),
            example_id=job_id,
            example_message=message,
        )
