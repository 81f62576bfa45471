"""The reaper's reads and writes (``store.upkeep``): running jobs whose worker went
silent, and pending jobs whose message the broker no longer has, marked lost.

A part the :class:`~jobtrack.store.Store` holds; one transaction per public method.
:mod:`jobtrack.maintenance` runs them, under a lease, in one worker at a time. Each
change is guarded by the row's order key (``state_seq``), re-checked on the row's newest
version, so a job that moved on while the round ran is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import and_, func, select

from ..models import Event, JobStatus, state_seq
from ..schema import jobs
from .common import WritingPart, notify
from .dialects import updated

__all__ = ["MESSAGE_LOST", "Upkeep"]

#: ``error_type`` of a pending job whose message the broker no longer has.
MESSAGE_LOST = "MessageLost"

_ATTEMPT_SPAN = state_seq(JobStatus.PENDING, 1)
_RUNNING_RANK = state_seq(JobStatus.RUNNING, 0)
_LOST_RANK = state_seq(JobStatus.LOST, 0)


class Upkeep(WritingPart):
    """Lost jobs found and marked (``store.upkeep``)."""

    def mark_lost(self, *, heartbeat_before: datetime, limit: int = 1000) -> list[str]:
        """Mark running jobs whose last heartbeat is older than ``heartbeat_before`` as
        lost, with an event each; returns their ids. The row's error fields say which
        worker went silent and since when.

        Only a row still at its running order key changes: a job that finished, or moved
        to a later attempt, while this ran is left alone (the WHERE is re-checked on the
        row's newest version). A lost job goes back to running if its task is redelivered.
        """
        now = self._now()
        running_seq = jobs.c.retries * _ATTEMPT_SPAN + _RUNNING_RANK
        last_beat = func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at, jobs.c.updated_at)
        still_running = and_(
            jobs.c.status == JobStatus.RUNNING.value, jobs.c.state_seq == running_seq
        )
        candidates = (
            select(
                jobs.c.id, jobs.c.worker, jobs.c.heartbeat_at, jobs.c.started_at, jobs.c.updated_at
            )
            .where(still_running, last_beat < heartbeat_before)
            .limit(limit)
        )
        marked: list[str] = []
        with self._begin("mark lost") as conn:
            events = []
            for row in conn.execute(candidates).all():
                since = row.heartbeat_at or row.started_at or row.updated_at
                reason = (
                    f"lost: no heartbeat from worker {row.worker or '(unknown)'} "
                    f"since {since.isoformat(timespec='seconds')}"
                )
                changed = updated(
                    conn,
                    jobs,
                    [jobs.c.id == row.id, still_running],
                    {
                        "status": JobStatus.LOST.value,
                        "state_seq": jobs.c.retries * _ATTEMPT_SPAN + _LOST_RANK,
                        "updated_at": now,
                        "error_type": "WorkerLost",
                        "error_message": reason,
                    },
                    [jobs.c.retries],
                )
                if not changed:
                    continue
                found = changed[0]
                marked.append(row.id)
                events.append(
                    Event(
                        job_id=row.id,
                        at=now,
                        status=JobStatus.LOST,
                        attempt=found.retries,
                        worker=row.worker,
                        error_type="WorkerLost",
                        error_message=reason,
                    ).row()
                )
            if events:
                self._write_rows(conn, "job_events", events)
                notify(conn, marked)
        return marked

    def stale_pending(self, *, updated_before: datetime, limit: int = 1000) -> dict[str, str]:
        """Pending jobs unchanged since before ``updated_before`` that name a queue, oldest
        first: their ids and queues (what the reaper asks the broker about)."""
        query = (
            select(jobs.c.id, jobs.c.queue)
            .where(
                jobs.c.status == JobStatus.PENDING.value,
                jobs.c.updated_at < updated_before,
                jobs.c.queue.is_not(None),
            )
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        with self._begin("stale pending") as conn:
            return {row.id: row.queue for row in conn.execute(query)}

    def mark_vanished(self, queued: Mapping[str, str], *, updated_before: datetime) -> list[str]:
        """Mark pending jobs whose message is gone from the broker (purged, expired) as
        lost, with an event each; ``queued`` maps their ids to the queue read. Returns
        the ids marked. Only a row still pending and unchanged since ``updated_before``
        changes, so a job a worker took meanwhile is left alone; and if its worker's
        "running" comes later, it outranks "lost"."""
        if not queued:
            return []
        now = self._now()
        lost_seq = jobs.c.retries * _ATTEMPT_SPAN + _LOST_RANK
        still = and_(
            jobs.c.status == JobStatus.PENDING.value,
            jobs.c.updated_at < updated_before,
            jobs.c.state_seq < lost_seq,
        )
        marked: list[str] = []
        with self._begin("mark vanished") as conn:
            events = []
            for job_id, queue in queued.items():
                reason = (
                    f"lost: its message is in no queue of the broker ({queue!r} read) and "
                    "held by no worker: purged, or dropped as expired"
                )
                changed = updated(
                    conn,
                    jobs,
                    [jobs.c.id == job_id, still],
                    {
                        "status": JobStatus.LOST.value,
                        "state_seq": lost_seq,
                        "updated_at": now,
                        "error_type": MESSAGE_LOST,
                        "error_message": reason,
                    },
                    [jobs.c.retries],
                )
                if not changed:
                    continue
                found = changed[0]
                marked.append(job_id)
                event = Event(
                    job_id=job_id,
                    at=now,
                    status=JobStatus.LOST,
                    attempt=found.retries,
                    error_type=MESSAGE_LOST,
                    error_message=reason,
                )
                events.append(event.row())
            if events:
                self._write_rows(conn, "job_events", events)
                notify(conn, marked)
        return marked
