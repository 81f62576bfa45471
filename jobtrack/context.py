"""The job running in this thread (or asyncio task): one context variable.

Kept apart so the tracker's helpers and the task author's side (:mod:`jobtrack.job`)
both read it without importing each other.
"""

from __future__ import annotations

import contextvars
from datetime import datetime
from typing import Protocol

__all__ = ["CURRENT", "RunningJob", "get_current"]


class RunningJob(Protocol):
    """What the helpers need to know of the job whose task is running here."""

    job_id: str
    attempt: int
    #: The run's stamp (see ``jobtrack.control.SENT_HEADER``), None without one.
    sent_at: datetime | None
    #: Set by ``fail_job()`` called from inside the job's own task: (type, message,
    #: traceback). The task's real outcome still decides (a retry retries); a task that
    #: returns normally afterwards ends failed with this error.
    declared_error: tuple[str | None, str | None, str | None] | None

    @property
    def tracked(self) -> bool: ...


#: The variable itself: :mod:`jobtrack.job` sets it, and hands its methods to the Celery
#: wiring as they are (they run a few times per task).
CURRENT: contextvars.ContextVar[RunningJob | None] = contextvars.ContextVar(
    "jobtrack_current_job", default=None
)


def get_current() -> RunningJob | None:
    return CURRENT.get()
