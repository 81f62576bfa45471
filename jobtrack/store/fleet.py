"""What jobtrack's own rows say of the workers and the queues (``store.fleet``).

A part the :class:`~jobtrack.store.Store` holds; one transaction per public method.
Each read is a range of the ``(status, …)`` indexes: running jobs, jobs finished in a
window, pending jobs. The Workers & Queues view (:mod:`jobtrack.fleet`) adds what the
workers and the broker say.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, or_, select

from ..models import ACTION_JOB_TYPE, JobStatus, QueueBacklog, WorkerActivity
from ..schema import jobs

__all__ = ["FleetQueries"]


class FleetQueries:
    """Workers' and queues' reads (``store.fleet``)."""

    def __init__(self, begin: Callable[[str], AbstractContextManager[Connection]]) -> None:
        self._begin = begin

    def workers(self, *, now: datetime, window_s: float = 300.0) -> list[WorkerActivity]:
        """Each worker that runs a job now or finished one in the ``window_s`` before
        ``now``, by name (bulk actions' runs, tracked as jobs, are not workers)."""
        since = now - timedelta(seconds=window_s)
        not_runs = or_(jobs.c.job_type.is_(None), jobs.c.job_type != ACTION_JOB_TYPE)
        running = (
            select(jobs.c.worker, func.count(), func.max(jobs.c.heartbeat_at))
            .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.worker.is_not(None), not_runs)
            .group_by(jobs.c.worker)
        )
        finished = (
            select(jobs.c.worker, func.count(), func.max(jobs.c.completed_at))
            .where(
                jobs.c.status.in_([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
                jobs.c.completed_at >= since,
                jobs.c.worker.is_not(None),
                not_runs,
            )
            .group_by(jobs.c.worker)
        )
        seen: dict[str, WorkerActivity] = {}
        with self._begin("workers") as conn:
            for name, n, beat in conn.execute(running):
                seen[name] = WorkerActivity(name, running=int(n), last_heartbeat=beat)
            for name, n, last in conn.execute(finished):
                seen[name] = replace(
                    seen.get(name) or WorkerActivity(name), finished=int(n), last_finished=last
                )
        return [seen[name] for name in sorted(seen)]

    def queues(self, *, now: datetime) -> list[QueueBacklog]:
        """Each queue with jobs published and not started, by name: how many, how many
        are due, and since when the oldest due one waits."""
        due = or_(jobs.c.eta.is_(None), jobs.c.eta <= now)
        query = (
            select(
                jobs.c.queue,
                func.count(),
                func.count(case((due, 1))),
                func.min(case((due, jobs.c.created_at))),
            )
            .where(jobs.c.status == JobStatus.PENDING.value)
            .group_by(jobs.c.queue)
        )
        with self._begin("queues") as conn:
            found = [
                QueueBacklog(queue, int(n), int(waiting), oldest)
                for queue, n, waiting, oldest in conn.execute(query)
            ]
        return sorted(found, key=lambda q: q.queue or "")
