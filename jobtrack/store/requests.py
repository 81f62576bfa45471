"""Operators' requests of one job (``store.requests``): cancel it, pause it, resume it,
run its failed items again; and the open requests the workers read.

A part the :class:`~jobtrack.store.Store` holds; one transaction per public method.
:mod:`jobtrack.control` makes these for the CLI, the API and the dashboard; a worker
reads what was asked when it starts (:meth:`Requests.open`) and, for the jobs it runs,
with each heartbeat (:meth:`Requests.stops`). Each action leaves a note in the job's
trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, literal_column, or_, select, update

from ..errors import JobNotFound
from ..models import (
    CANCEL_REQUESTED_SEQ,
    FINISHED,
    PAUSABLE,
    TERMINAL_SEQ,
    Event,
    ItemStatus,
    JobStatus,
    Resumed,
    Stop,
    paused_in_queue,
    queued_pause_seq,
    resumed_seq,
    state_seq,
)
from ..schema import job_items, jobs
from .common import WritingPart, notify
from .dialects import updated

__all__ = ["Requests"]

#: No worker is running these: a cancel request ends them at once.
_UNRUN = frozenset({JobStatus.PENDING, JobStatus.RETRYING, JobStatus.LOST, JobStatus.PAUSED})


class Requests(WritingPart):
    """Cancel, pause, resume and item retries of one job (``store.requests``)."""

    def cancel(self, job_id: str, reason: str) -> JobStatus:
        """Record that an operator asked to cancel ``job_id`` (``cancel_requested_at``;
        workers read open requests when they start, so a restart does not forget it).
        A job no worker is running (pending, retrying, lost) is marked cancelled now, at
        an order key a worker's real outcome still outranks (if the task runs anyway,
        the row says so). Returns the job's status afterwards."""
        now = self._now()
        with self._begin("request cancel") as conn:
            changed = updated(
                conn,
                jobs,
                [jobs.c.id == job_id],
                {
                    "cancel_requested_at": func.coalesce(jobs.c.cancel_requested_at, now),
                    "updated_at": now,
                },
                [jobs.c.status, jobs.c.state_seq, jobs.c.retries],
            )
            row = changed[0] if changed else None
            if row is None:
                raise JobNotFound(job_id)
            status = JobStatus(row.status)
            if status in _UNRUN and row.state_seq < CANCEL_REQUESTED_SEQ:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.state_seq < CANCEL_REQUESTED_SEQ)
                    .values(
                        status=JobStatus.CANCELLED.value,
                        state_seq=CANCEL_REQUESTED_SEQ,
                        completed_at=now,
                        error_type="Revoked",
                        error_message=reason,
                    )
                )
                self._write_rows(
                    conn,
                    "job_events",
                    [
                        Event(
                            job_id=job_id,
                            at=now,
                            status=JobStatus.CANCELLED,
                            attempt=row.retries,
                            error_type="Revoked",
                            error_message=reason,
                        ).row()
                    ],
                )
                status = JobStatus.CANCELLED
            notify(conn, [job_id])
        return status

    def open(self, limit: int = 100_000) -> dict[str, Stop]:
        """Jobs an operator asked to cancel or pause that no worker has finished, with
        what was asked (a cancel outranks a pause). Each half reads its partial index."""
        unfinished = jobs.c.state_seq < literal_column(str(TERMINAL_SEQ))
        found: dict[str, Stop] = {}
        with self._begin("open requests") as conn:
            for column, stop in (
                (jobs.c.pause_requested_at, Stop.PAUSE),
                (jobs.c.cancel_requested_at, Stop.CANCEL),
            ):
                query = select(jobs.c.id).where(column.is_not(None), unfinished).limit(limit)
                found.update(dict.fromkeys(conn.execute(query).scalars(), stop))
        return found

    def stops(self, job_ids: Sequence[str]) -> dict[str, Stop]:
        """Of ``job_ids`` (jobs running in this process), those an operator asked to
        cancel or pause: the read a writer makes with each heartbeat, by primary key."""
        if not job_ids:
            return {}
        query = select(jobs.c.id, jobs.c.cancel_requested_at.is_not(None).label("cancel")).where(
            jobs.c.id.in_(list(job_ids)),
            or_(jobs.c.cancel_requested_at.is_not(None), jobs.c.pause_requested_at.is_not(None)),
        )
        with self._begin("stop requests") as conn:
            return {r.id: Stop.CANCEL if r.cancel else Stop.PAUSE for r in conn.execute(query)}

    def pause(self, job_id: str) -> JobStatus:
        """Record that an operator asked to pause ``job_id``; returns its status after.

        A job no worker runs now (pending, or retrying: waiting for its next attempt) is
        paused at once, in the queue (:func:`~jobtrack.models.queued_pause_seq`); a
        worker that receives it drops it. A running job keeps running until its task
        meets the request (read with its heartbeat) at its next check. Asking again, or
        of a paused job, changes nothing. A finished job is left as it is: the status
        returned says so.
        """
        now = self._now()
        pausable = [s.value for s in (*PAUSABLE, JobStatus.PAUSED)]
        with self._begin("request pause") as conn:
            changed = updated(
                conn,
                jobs,
                [
                    jobs.c.id == job_id,
                    jobs.c.status.in_(pausable),
                    jobs.c.state_seq < literal_column(str(CANCEL_REQUESTED_SEQ)),
                ],
                {
                    "pause_requested_at": func.coalesce(jobs.c.pause_requested_at, now),
                    "updated_at": now,
                },
                [jobs.c.status, jobs.c.state_seq, jobs.c.retries],
            )
            row = changed[0] if changed else None
            if row is None:
                return self._status_of(conn, job_id)
            status = JobStatus(row.status)
            if status is JobStatus.PAUSED:
                return status
            queued = status is not JobStatus.RUNNING
            if queued:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.state_seq == row.state_seq)
                    .values(
                        status=JobStatus.PAUSED.value, state_seq=queued_pause_seq(row.state_seq)
                    )
                )
            note = "paused in the queue" if queued else "pause requested"
            self._note(conn, job_id, now, JobStatus.PAUSED if queued else status, row, note)
        return JobStatus.PAUSED if queued else status

    def resume(self, job_id: str, *, can_publish: bool) -> Resumed:
        """Lift the pause of ``job_id``; what the caller must do next is returned.

        A job paused in the queue goes back to pending (its message is still there: a
        worker runs it). A job its worker paused goes back to pending in the attempt it
        stopped in, and must be published again under its id (``Resumed.publish``);
        without ``can_publish`` (its input was not stored whole) it stays paused. A
        running job whose pause was asked for and not met yet keeps running, the request
        withdrawn. Anything else is returned unchanged (``Resumed.action`` "none").
        """
        now = self._now()
        with self._begin("resume") as conn:
            row = conn.execute(
                select(
                    jobs.c.status, jobs.c.state_seq, jobs.c.retries, jobs.c.pause_requested_at
                ).where(jobs.c.id == job_id)
            ).first()
            if row is None:
                raise JobNotFound(job_id)
            status = JobStatus(row.status)
            if status is JobStatus.RUNNING and row.pause_requested_at is not None:
                conn.execute(
                    update(jobs).where(jobs.c.id == job_id).values(pause_requested_at=None)
                )
                self._note(conn, job_id, now, status, row, "pause request withdrawn")
                return Resumed("withdrawn", status, row.retries)
            if status is not JobStatus.PAUSED:
                return Resumed("none", status, row.retries)
            publish = not paused_in_queue(row.state_seq)
            if publish and not can_publish:
                return Resumed("refused", status, row.retries)
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state_seq == row.state_seq)
                .values(
                    status=JobStatus.PENDING.value,
                    state_seq=resumed_seq(row.state_seq),
                    pause_requested_at=None,
                    updated_at=now,
                )
            ).rowcount
            if not changed:  # moved meanwhile: report what it is now
                return Resumed("none", self._status_of(conn, job_id), row.retries)
            self._note(conn, job_id, now, JobStatus.PENDING, row, "resumed")
        return Resumed("publish" if publish else "lifted", JobStatus.PENDING, row.retries)

    def reopen_for_items(self, job_id: str) -> tuple[int, int]:
        """Open a finished job with failed items again, as its next attempt, so a run
        that retries only those items writes to the same row and items (a retried item
        that succeeds replaces its failed row). The last run's outcome columns are
        cleared; the trace keeps it. Returns (the attempt, how many items failed);
        raises :class:`~jobtrack.errors.JobNotFound`, or ``ValueError`` with the reason.
        """
        now = self._now()
        finished = [s.value for s in FINISHED]
        with self._begin("reopen for items") as conn:
            row = conn.execute(
                select(jobs.c.status, jobs.c.state_seq, jobs.c.retries, jobs.c.failed_items).where(
                    jobs.c.id == job_id
                )
            ).first()
            if row is None:
                raise JobNotFound(job_id)
            if row.status not in finished:
                raise ValueError(f"it is {row.status}; only a finished job can retry its items")
            if not row.failed_items:
                raise ValueError("it has no failed items")
            attempt = row.retries + 1
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state_seq == row.state_seq)
                .values(
                    status=JobStatus.PENDING.value,
                    state_seq=state_seq(JobStatus.PENDING, attempt),
                    retries=attempt,
                    updated_at=now,
                    completed_at=None,
                    duration_ms=None,
                    output_data=None,
                    error_type=None,
                    error_message=None,
                    traceback=None,
                    cancel_requested_at=None,
                    pause_requested_at=None,
                )
            ).rowcount
            if not changed:
                raise ValueError("it changed meanwhile; try again")
            note = f"retrying {row.failed_items} failed items"
            self._note(conn, job_id, now, JobStatus.PENDING, row, note, attempt=attempt)
        return attempt, row.failed_items

    def failed_item_keys(self, job_id: str) -> list[str]:
        """Keys of the job's items in error, in the order they were recorded."""
        query = (
            select(job_items.c.key)
            .where(job_items.c.job_id == job_id, job_items.c.status == ItemStatus.ERROR.value)
            .order_by(job_items.c.id)
        )
        with self._begin("failed items") as conn:
            return list(conn.execute(query).scalars())

    def _status_of(self, conn: Connection, job_id: str) -> JobStatus:
        status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        if status is None:
            raise JobNotFound(job_id)
        return JobStatus(status)

    def _note(
        self,
        conn: Connection,
        job_id: str,
        at: datetime,
        status: JobStatus,
        row: Any,
        note: str,
        *,
        attempt: int | None = None,
    ) -> None:
        """An operator's action in the job's trace (and a change notification)."""
        event = Event(job_id, at, status, row.retries if attempt is None else attempt, note=note)
        self._write_rows(conn, "job_events", [event.row()])
        notify(conn, [job_id])
