"""A tracker: one process's settings, store and writer, and the helper operations.

``install(app)`` makes one and registers it as this process's tracker; the module-level
helpers (``upsert_job``, ``complete_job`` …) use that one. The helpers write
synchronously: when ``upsert_job`` returns, the row is committed, so a web request can
create the job, answer 202 with its id, and dispatch the task.
"""

from __future__ import annotations

import logging
import traceback as traceback_mod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .context import get_current
from .errors import NotInstalled
from .models import (
    OWNER_ID_MAX,
    Batch,
    Event,
    Job,
    JobFilter,
    JobStatus,
    JobUpdate,
    Stats,
    is_owner_id,
)
from .payload import clean_text, describe_error, to_json
from .settings import Settings
from .store import ReplicaPolicy, Store
from .writer import Writer, make_writer

__all__ = [
    "Tracker",
    "active_tracker",
    "active_tracker_or_none",
    "handler_failed",
    "open_store",
    "owner_or_none",
    "set_active_tracker",
]

log = logging.getLogger("jobtrack")


def owner_or_none(value: object, job_id: str | None = None) -> str | None:
    """The owner id ``value`` names (as text), or None: for no owner (None, empty), and,
    with a warning, for one that cannot be stored exactly (see
    :func:`~jobtrack.models.is_owner_id`): cut or mended it could be another owner's (a
    tenant's), so the job is recorded with none and the task or caller goes on."""
    if value is None:
        return None
    try:
        owner = str(value)
    except Exception:
        owner = "*"  # no text to name an owner by: refused below
    if not owner:  # an empty owner is none: never a scope (docs/schema.md)
        return None
    if is_owner_id(owner):
        return owner
    log.warning(
        "owner id not recorded: %s (%d characters)",
        f"longer than {OWNER_ID_MAX} characters"
        if len(owner) > OWNER_ID_MAX
        else "not one owner id (*, a NUL, a lone surrogate)",
        len(owner),
        extra={"job_id": job_id, "action": "owner"},
    )
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)


def handler_failed(action: str, job_id: Any) -> None:
    """Log a Celery signal handler's failure (from inside its ``except``): tracking
    never raises into a task, and says so with the job's id."""
    logging.getLogger("jobtrack.celery").exception(
        "jobtrack %s handler failed; the task is not affected",
        action,
        extra={"job_id": job_id, "action": action},
    )


def open_store(settings: Settings, *, create_tables: bool | None = None) -> Store:
    """The store ``settings`` describe: the tracking database, and its read replicas
    (``read_database_url``) for the reads made inside ``Store.reading()``."""
    replicas = (
        ReplicaPolicy(
            urls=settings.read_database_url,
            max_lag_s=settings.read_max_lag_s,
            fallback=settings.read_fallback,
            wait_s=settings.read_wait_s,
        )
        if settings.read_database_url
        else None
    )
    return Store(
        settings.database_url,
        connect_timeout_s=settings.connect_timeout_s,
        create_tables=settings.create_tables if create_tables is None else create_tables,
        replicas=replicas,
    )


class Tracker:
    """What jobtrack needs in one process. Usually made by ``install(app)``."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self.writer: Writer = make_writer(self.store, settings)

    # -- bounded, safe values -----------------------------------------------------

    def json(self, value: Any) -> Any:
        return to_json(value, self.settings.max_payload_bytes, self.settings.redact_keys)

    def text(self, value: Any) -> str | None:
        return None if value is None else clean_text(value, self.settings.max_message_chars)

    def traceback_text(self, value: Any) -> str | None:
        if value is None:
            return None
        return clean_text(value, self.settings.max_traceback_chars, keep="end")

    def error_fields(self, error: BaseException | str | None) -> tuple[str | None, str | None]:
        if isinstance(error, str):
            return "Error", self.text(error)
        kind, message = describe_error(error)
        return (clean_text(kind, 255) if kind else None), self.text(message)

    # -- helpers: synchronous, for code outside (or inside) tasks ------------------

    def upsert_job(
        self,
        job_id: str,
        *,
        job_type: str | None = None,
        job_subtype: str | None = None,
        name: str | None = None,
        owner_id: str | None = None,
        task_name: str | None = None,
        queue: str | None = None,
        input_data: Any = None,
        metadata: Mapping[str, Any] | None = None,
        total_items: int | None = None,
        ref: str | None = None,
    ) -> None:
        """Create the job row (pending) or update its descriptive fields."""
        if not self.settings.enabled:
            return
        given: dict[str, Any] = {
            "job_type": job_type,
            "job_subtype": job_subtype,
            "name": self.text(name),
            "owner_id": owner_or_none(owner_id, job_id),
            "task_name": task_name,
            "queue": queue,
            "input_data": self.json(input_data) if input_data is not None else None,
            "metadata": self.json(dict(metadata)) if metadata is not None else None,
            "total_items": total_items,
            "ref": ref,
        }
        update = self.writer.clean(JobUpdate.transition(job_id, JobStatus.PENDING, **given))
        # What the cleaned row still holds: a value cleaning dropped never clears a column.
        overwrite = [name for name in given if getattr(update, name) is not None]
        self.store.upsert_job(update, overwrite=overwrite)

    def complete_job(
        self,
        job_id: str,
        output: Any = None,
        *,
        processed: int | None = None,
        failed: int | None = None,
        skipped: int | None = None,
        total: int | None = None,
    ) -> None:
        """Mark the job completed now (a finished job keeps its first final state)."""
        if not self.settings.enabled:
            return
        now = utcnow()
        running = get_current()
        update = self.writer.clean(
            JobUpdate.transition(
                job_id,
                JobStatus.COMPLETED,
                0,
                at=now,
                # Inside the job's own task: the run's row (see jobtrack.models.RUN_COLUMN).
                sent_at=running.sent_at
                if running is not None and running.job_id == job_id
                else None,
                completed_at=now,
                output_data=self.json(output) if output is not None else None,
                progress_percent=100.0,
            )
        )
        self.store.write_batch(Batch([update.row()], [Event.of(update).row()]))
        self.store.set_counts(
            job_id, processed=processed, failed=failed, skipped=skipped, total=total
        )

    def fail_job(
        self, job_id: str, error: BaseException | str, *, traceback: str | None = None
    ) -> None:
        """Mark the job failed now with the error's type and message.

        Called from inside the job's own running task, it records the attempt's error
        and lets the task's real outcome decide: ``raise self.retry(exc=exc)`` afterwards
        retries (and a later success completes the job); a task that returns normally
        afterwards ends failed with this error; one that raises ends failed with what it
        raised. Anywhere else it is final at once.
        """
        if not self.settings.enabled:
            return
        now = utcnow()
        error_type, message = self.error_fields(error)
        if traceback is None and isinstance(error, BaseException) and error.__traceback__:
            traceback = "".join(traceback_mod.format_exception(error))
        traceback = self.traceback_text(traceback)
        running = get_current()
        if running is not None and running.job_id == job_id and running.tracked:
            running.declared_error = (error_type, message, traceback)
            self.writer.update(
                JobUpdate.transition(
                    job_id,
                    JobStatus.RUNNING,
                    running.attempt,
                    at=now,
                    retries=running.attempt,
                    sent_at=running.sent_at,  # the run's own row (see merge_row)
                    error_type=error_type,
                    error_message=message,
                    traceback=traceback,
                )
            )
            return
        update = self.writer.clean(
            JobUpdate.transition(
                job_id,
                JobStatus.FAILED,
                0,
                at=now,
                completed_at=now,
                error_type=error_type,
                error_message=message,
                traceback=traceback,
            )
        )
        self.store.write_batch(Batch([update.row()], [Event.of(update).row()]))

    def get_job(self, job_id: str) -> Job:
        return self.store.get_job(job_id)

    def list_jobs(
        self, where: JobFilter | None = None, *, limit: int = 50, offset: int = 0, **filters: Any
    ) -> list[Job]:
        """Jobs newest first: ``where``, or the keywords of :meth:`JobFilter.of`."""
        if filters:
            if where is not None:
                raise TypeError("give a JobFilter or its fields as keywords, not both")
            where = JobFilter.of(**filters)
        return self.store.list_jobs(where, limit=limit, offset=offset)

    def job_stats(self, *, since: datetime | None = None) -> Stats:
        return self.store.stats(since=since)

    def flush(self) -> bool:
        """Write what this process has buffered now; False if the database refused."""
        return self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_active: Tracker | None = None


def set_active_tracker(tracker: Tracker | None) -> None:
    global _active
    previous, _active = _active, tracker
    if previous is not None and previous is not tracker:
        try:
            previous.close()
        except Exception:
            log.exception(
                "closing the previous tracker failed", extra={"job_id": None, "action": "close"}
            )


def active_tracker() -> Tracker:
    if _active is None:
        raise NotInstalled()
    return _active


def active_tracker_or_none() -> Tracker | None:
    return _active
