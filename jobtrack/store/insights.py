"""The store's trend statements: per task name (or job type) and per time bucket, how
many jobs finished and failed, and their run time and queue wait percentiles.

A part the :class:`~jobtrack.store.Store` holds. The window is read by the ``(status,
completed_at)`` index: only jobs that finished in it are touched, however big the table.
PostgreSQL aggregates in one statement (``percentile_cont`` over ``GROUPING SETS``, so
the whole-window figures come from the same scan); SQLite has no percentile function,
so its rows are aggregated here, with the same interpolation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Float, cast, func, literal, select, tuple_

from ..models import JobStatus, Trend
from ..schema import job_events, jobs
from .common import ReadingPart

__all__ = ["TREND_KEYS", "InsightQueries", "percentile", "queued_at"]

#: What trends can be grouped by: the name in the API and CLI, and the column.
TREND_KEYS = {"task": "task_name", "type": "job_type"}
_FINISHED = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)
#: Shown for jobs without a task name (or type).
NO_KEY = "(none)"
#: Statuses of the events that queue a job: its publish (and a retry's), a resume, a
#: retry of its failed items.
_QUEUED = (JobStatus.PENDING.value, JobStatus.RETRYING.value)


def queued_at() -> Any:
    """When the attempt that ran last was queued: the latest event that queued the job
    at or before its last start (its publish, a retry's, a resume, a retry of its failed
    items), else its creation (a job made by the helpers has no such event). Queue wait
    is ``started_at`` minus this: time paused, or finished before a retry of its items,
    is not waiting. One index probe per job (``job_events (job_id, at)``)."""
    last_queued = (
        select(func.max(job_events.c.at))
        .where(
            job_events.c.job_id == jobs.c.id,
            job_events.c.status.in_(_QUEUED),
            job_events.c.at <= jobs.c.started_at,
        )
        .scalar_subquery()
    )
    return func.coalesce(last_queued, jobs.c.created_at, type_=jobs.c.created_at.type)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) of sorted values, interpolated between the two
    nearest ranks: what PostgreSQL's ``percentile_cont`` answers."""
    if not ordered:
        return None
    at = q * (len(ordered) - 1)
    low, high = math.floor(at), math.ceil(at)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (at - low))


class InsightQueries(ReadingPart):
    """Trends' reads (``store.insights``)."""

    def trends(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket_s: int,
        by: str = "task",
        owner_id: str | None = None,
        key: str | None = None,
    ) -> list[Trend]:
        """Per key (``by``: ``task`` or ``type``) of the jobs that finished (completed or
        failed) in ``[since, until)``: one :class:`Trend` per bucket of ``bucket_s``
        seconds that has any (``start`` its beginning) and one for the whole window
        (``start`` None). With ``owner_id``, that owner's jobs only; with ``key``, one
        task name (or type) only. Keys are in name order, buckets oldest first."""
        column = jobs.c[TREND_KEYS[by]]
        where = [
            jobs.c.status.in_(_FINISHED),
            jobs.c.completed_at >= since,
            jobs.c.completed_at < until,
        ]
        if owner_id is not None:
            where.append(jobs.c.owner_id == owner_id)
        if key is not None:
            where.append(column.is_(None) if key == NO_KEY else column == key)
        with self._read("trends") as conn:
            if conn.dialect.name == "postgresql":
                found = _trends_in_sql(conn, column, where, since, bucket_s)
            else:
                found = _trends_here(conn, column, where, since, bucket_s)
        return sorted(found, key=lambda t: (t.key, t.start is None, t.start or since))


def _trends_in_sql(
    conn: Connection, column: Any, where: list[Any], since: datetime, bucket_s: int
) -> list[Trend]:
    # date_part, not EXTRACT: double precision; EXTRACT answers numeric (PostgreSQL 14+),
    # slower to compute, sort and interpolate (see docs/performance.md, Insights).
    seconds = func.date_part(
        "epoch", jobs.c.completed_at - literal(since, type_=jobs.c.completed_at.type), type_=Float
    )
    bucket = func.floor(seconds / float(bucket_s)).label("bucket")
    # Clocks differ between publisher and worker: a wait below zero counts as none.
    wait_ms = func.greatest(
        func.date_part("epoch", jobs.c.started_at - queued_at(), type_=Float) * 1000, 0
    )
    name = func.coalesce(column, NO_KEY).label("key")
    run = cast(jobs.c.duration_ms, Float)
    query = (
        select(
            name,
            bucket,
            func.count().filter(jobs.c.status == JobStatus.COMPLETED.value),
            func.count().filter(jobs.c.status == JobStatus.FAILED.value),
            func.percentile_cont(0.5).within_group(run),
            func.percentile_cont(0.95).within_group(run),
            func.percentile_cont(0.5).within_group(wait_ms),
            func.percentile_cont(0.95).within_group(wait_ms),
        )
        .where(*where)
        .group_by(func.grouping_sets(tuple_(name, bucket), tuple_(name)))
    )
    return [
        Trend(
            key=key,
            start=None if b is None else since + timedelta(seconds=int(b) * bucket_s),
            completed=int(done),
            failed=int(failed),
            run_p50_ms=_ms(r50),
            run_p95_ms=_ms(r95),
            wait_p50_ms=_ms(w50),
            wait_p95_ms=_ms(w95),
        )
        for key, b, done, failed, r50, r95, w50, w95 in conn.execute(query)
    ]


def _trends_here(
    conn: Connection, column: Any, where: list[Any], since: datetime, bucket_s: int
) -> list[Trend]:
    query = select(
        column,
        jobs.c.status,
        jobs.c.completed_at,
        jobs.c.duration_ms,
        jobs.c.started_at,
        queued_at(),
    ).where(*where)
    groups: dict[tuple[str, int | None], list[tuple[bool, float | None, float | None]]] = (
        defaultdict(list)
    )
    for key, status, completed_at, duration_ms, started_at, queued in conn.execute(query):
        bucket = int((completed_at - since).total_seconds() // bucket_s)
        wait = (
            max((started_at - queued).total_seconds() * 1000, 0.0)
            if started_at is not None and queued is not None
            else None
        )
        run = float(duration_ms) if duration_ms is not None else None
        row = (status == JobStatus.COMPLETED.value, run, wait)
        groups[(key or NO_KEY, bucket)].append(row)
        groups[(key or NO_KEY, None)].append(row)
    out = []
    for (name, at), rows in groups.items():
        runs = sorted(r for _, r, _ in rows if r is not None)
        waits = sorted(w for _, _, w in rows if w is not None)
        done = sum(1 for ok, _, _ in rows if ok)
        out.append(
            Trend(
                key=name,
                start=None if at is None else since + timedelta(seconds=at * bucket_s),
                completed=done,
                failed=len(rows) - done,
                run_p50_ms=percentile(runs, 0.5),
                run_p95_ms=percentile(runs, 0.95),
                wait_p50_ms=percentile(waits, 0.5),
                wait_p95_ms=percentile(waits, 0.95),
            )
        )
    return out


def _ms(value: Any) -> float | None:
    return None if value is None else float(value)
