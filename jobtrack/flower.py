"""Flower integration: show jobtrack's progress on Flower's task pages.

Flower has no plugin API. Running jobs send ``task-progress`` events (the
``progress_events`` setting), which Flower shows as the task's state, PROGRESS. Flower
passes each task it renders through an optional ``format_task`` function; this one
reads the job's row from jobtrack's table and, while the job runs, puts its percent,
stage and message into the task's result field. (The event's own fields cannot be used:
Flower hands ``format_task`` a copy holding only Celery's fixed task fields.)

In ``flowerconfig.py``::

    from jobtrack.flower import format_task

then ``celery -A yourapp flower --conf=flowerconfig.py`` (the app must call
``jobtrack.install``). Flower applies ``format_task`` to its pages, not to its REST API.
"""

from __future__ import annotations

from typing import Any

from .tracker import active_tracker_or_none

__all__ = ["format_task", "progress_text"]


def progress_text(percent: float | None, stage: str | None, message: str | None) -> str:
    parts = [f"{percent:.0f}%" if percent is not None else None, stage, message]
    return "jobtrack progress: " + " · ".join(p for p in parts if p)


def format_task(task: Any) -> Any:
    """Flower's ``format_task`` hook: a running job shows its progress as its result."""
    tracker = active_tracker_or_none()
    uuid = getattr(task, "uuid", None)
    if tracker is None or not isinstance(uuid, str):
        return task
    job = tracker.store.find_job(uuid)
    if job is not None and not job.status.is_terminal and job.progress_percent is not None:
        task.result = progress_text(job.progress_percent, job.progress_stage, job.progress_message)
    return task
