"""jobtrack: a durable, queryable job record for every Celery task.

import jobtrack
jobtrack.install(app)

@app.task(bind=True)
@jobtrack.track(job_type="import", name="Import {filename}", owner="user_id")
def import_csv(self, filename, user_id):
    job = jobtrack.current_job()
    job.progress(current=40, total=100, stage="parsing")
    job.item("sku-17", status="success")
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    JobNotFound,
    JobtrackError,
    NoCurrentJob,
    NotInstalled,
    NotSupported,
    QueryTimeout,
    ReplicaUnavailable,
    StoreError,
)
from .models import Event, Item, ItemStatus, Job, JobFilter, JobStatus, Stats
from .settings import Settings

if TYPE_CHECKING:
    from .celery import install, uninstall
    from .job import (
        CancelRequested,
        JobHandle,
        PauseRequested,
        StopRequested,
        current_job,
        track,
    )
    from .schema import metadata
    from .store import owner_scope
    from .tracker import Tracker

#: Public names whose modules import Celery or SQLAlchemy, imported on first use: a
#: command such as ``jobtrack --help`` then starts without them (the names and the
#: vocabulary above cost nothing to import).
_LAZY = {
    "install": "celery",
    "uninstall": "celery",
    "CancelRequested": "job",
    "JobHandle": "job",
    "PauseRequested": "job",
    "StopRequested": "job",
    "current_job": "job",
    "track": "job",
    "metadata": "schema",
    "owner_scope": "store",
    "Tracker": "tracker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobtrack' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def active_tracker() -> Tracker:
    """This process's tracker (the one ``install()`` made); :class:`NotInstalled` if none."""
    from .tracker import active_tracker as active

    return active()


__all__ = [
    "CancelRequested",
    "ConfigurationError",
    "Event",
    "Item",
    "ItemStatus",
    "Job",
    "JobFilter",
    "JobHandle",
    "JobNotFound",
    "JobStatus",
    "JobtrackError",
    "NoCurrentJob",
    "NotInstalled",
    "NotSupported",
    "PauseRequested",
    "QueryTimeout",
    "ReplicaUnavailable",
    "Settings",
    "Stats",
    "StopRequested",
    "StoreError",
    "Tracker",
    "complete_job",
    "current_job",
    "fail_job",
    "flush",
    "get_job",
    "install",
    "job_stats",
    "jobs_for_ref",
    "list_jobs",
    "metadata",
    "owner_scope",
    "track",
    "uninstall",
    "upsert_job",
]

__version__ = "0.1.0"


def upsert_job(job_id: str, **fields: Any) -> None:
    """Create the job row now (pending), or update its descriptive fields.

    Keywords: job_type, job_subtype, name, owner_id, task_name, queue, input_data,
    metadata, total_items, ref. Committed when this returns.
    """
    active_tracker().upsert_job(job_id, **fields)


def complete_job(job_id: str, output: Any = None, **counts: Any) -> None:
    """Mark a job completed now; ``processed``/``failed``/``skipped``/``total`` set counters."""
    active_tracker().complete_job(job_id, output, **counts)


def fail_job(job_id: str, error: BaseException | str, *, traceback: str | None = None) -> None:
    """Mark a job failed now with an error message or exception."""
    active_tracker().fail_job(job_id, error, traceback=traceback)


def get_job(job_id: str) -> Job:
    """The job's row; raises :class:`JobNotFound`."""
    return active_tracker().get_job(job_id)


def list_jobs(where: JobFilter | None = None, **filters: Any) -> list[Job]:
    """Jobs newest first: a :class:`JobFilter`, or its fields as keywords (status,
    job_type, owner_id, task_name, queue, since, until, search, ids, stage, ref); limit,
    offset."""
    return active_tracker().list_jobs(where, **filters)


def jobs_for_ref(ref: str, *, limit: int = 50) -> list[Job]:
    """Jobs working on ``ref`` (``@track(ref=...)``, ``upsert_job(ref=...)``), newest
    first: exact, or every ref starting with what precedes a final ``*``
    (``"repo:42@*"``). The newest is ``jobs_for_ref(ref, limit=1)``: one index lookup."""
    return active_tracker().list_jobs(JobFilter(ref=ref), limit=limit)


def job_stats(*, since: datetime | None = None) -> Stats:
    """Counts by status and type, failure rate and durations."""
    return active_tracker().job_stats(since=since)


def flush() -> bool:
    """Write what this process has buffered now (tests, scripts before they read back)."""
    return active_tracker().flush()
