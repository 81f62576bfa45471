"""Acting on jobs through the Celery app: retry and cancel.

Used by the CLI (``jobtrack -A app retry|cancel``). Reads and writes go through the
tracker's store; publishing and revoking go through the app, as Celery's own tools do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .errors import JobtrackError
from .models import RETRYABLE, JobStatus
from .payload import REDACTED, TRUNCATED
from .tracker import Tracker

__all__ = ["CannotRetry", "cancel_job", "controller", "replayable_input", "retry_job"]


class CannotRetry(JobtrackError, ValueError):
    """The job cannot be published again (its state, or its recorded input)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        super().__init__(f"cannot retry job {job_id}: {reason}")


def replayable_input(data: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """The recorded args and kwargs, if they were stored whole (nothing cut or hidden)."""
    if not isinstance(data, dict) or set(data) != {"args", "kwargs"}:
        return None
    if REDACTED in str(data) or TRUNCATED in str(data):
        return None
    args, kwargs = data["args"], data["kwargs"]
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    return args, kwargs


def retry_job(app: Any, tracker: Tracker, job_id: str) -> str:
    """Publish a failed, cancelled or lost job again with its original arguments, as a
    new job whose ``metadata`` names the old one (``retry_of``); returns the new id.
    The old job's row and trace stay as they are."""
    job = tracker.store.get_job(job_id)
    if job.status not in RETRYABLE:
        raise CannotRetry(
            job_id, f"it is {job.status.value}; only failed, cancelled and lost jobs can be retried"
        )
    replay = replayable_input(job.input_data)
    if job.task_name is None or replay is None:
        raise CannotRetry(
            job_id, "its arguments were not stored whole (redacted, cut, or hidden by argsrepr)"
        )
    new_id = str(uuid.uuid4())
    tracker.upsert_job(
        new_id,
        task_name=job.task_name,
        job_type=job.job_type,
        name=job.name,
        owner_id=job.owner_id,
        metadata={"retry_of": job_id},
    )
    app.send_task(job.task_name, args=replay[0], kwargs=replay[1], task_id=new_id, queue=job.queue)
    return new_id


def cancel_job(app: Any, tracker: Tracker, job_id: str, *, terminate: bool = False) -> str:
    """Revoke a job; returns what happened, in words.

    The request is kept in the row (``cancel_requested_at``) as well as broadcast to the
    workers online now, so a worker that starts later still skips the job. A job not
    started yet is marked cancelled now (a worker that meets it skips it and reports the
    same; if one runs it anyway, its real outcome replaces the cancel). A running job
    stops only with ``terminate`` (SIGTERM to its pool process); its worker then reports
    it cancelled.
    """
    job = tracker.store.get_job(job_id)
    if job.status.is_terminal:
        return f"already {job.status.value}"
    status = tracker.store.request_cancel(job_id, "revoked before it ran")
    app.control.revoke(job_id, terminate=terminate)
    if status is JobStatus.CANCELLED:
        return "cancelled"
    return (
        "terminating"
        if terminate
        else ("revoked; it is running and will finish (use --terminate to stop it)")
    )


def controller(app: Any, tracker: Tracker) -> Callable[[str, str, bool], str]:
    """``control(action, job_id, terminate)`` for the API: "retry" or "cancel"."""

    def control(action: str, job_id: str, terminate: bool) -> str:
        if action == "retry":
            return retry_job(app, tracker, job_id)
        return cancel_job(app, tracker, job_id, terminate=terminate)

    return control
