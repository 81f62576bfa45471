"""The task author's side: ``@track``, ``current_job()``, progress and items.

``progress()`` and ``item()`` only touch memory. Progress is coalesced per job: the
writer's thread (in both write modes) picks up the latest value at each flush, with a
heartbeat every ``heartbeat_interval_s``, and the last value is always written when the
task ends, so calling ``progress()`` in a tight loop costs almost nothing.

Pause and cooperative cancel ride on the same heartbeat: the writer's thread reads
whether an operator asked to stop any job running in the process, and the job's next
``progress()``, ``item()``, ``stage()``, ``checkpoint()`` or ``check()`` raises
:class:`PauseRequested` or :class:`CancelRequested` (both Celery ``Ignore``: not a
failure, the worker slot is freed). Checking is one attribute read per call.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from celery.exceptions import Ignore

from . import context as _context
from .errors import JobtrackError, NoCurrentJob, is_time_limit
from .models import (
    Batch,
    Event,
    Item,
    ItemStatus,
    JobStatus,
    JobUpdate,
    Stop,
    recorded_item,
)
from .payload import TRUNCATED, clean_text
from .tracker import Tracker, owner_or_none

__all__ = [
    "FAIL_WHEN",
    "CancelRequested",
    "JobHandle",
    "JobSpec",
    "PauseRequested",
    "StopRequested",
    "current_job",
    "job_spec",
    "track",
]

log = logging.getLogger("jobtrack")

F = TypeVar("F", bound=Callable[..., Any])
_SPEC_ATTR = "__jobtrack_spec__"
_STAGE_CHARS = 255
_KEY_CHARS = 500
#: ``job.item()``'s status, given as a member or as its value: one lookup.
_ITEM_STATUSES: dict[str, ItemStatus] = {status.value: status for status in ItemStatus}
#: What ``progress()`` keeps before its first call: nothing known.
_NO_PROGRESS: tuple[float | None, int | None, str | None, str | None] = (None, None, None, None)
#: The time-left estimate: the pace over the last this many progress samples (one per
#: flush that found new progress), and no estimate from fewer than the minimum.
PACE_SAMPLES = 10
PACE_MIN_SAMPLES = 3
#: The outcome policies ``@track(fail_when=...)`` accepts.
FAIL_WHEN = ("all_items_failed", "any_item_failed")
FailWhen = Literal["all_items_failed", "any_item_failed"]


class StopRequested(JobtrackError, Ignore):  # type: ignore[misc]
    """Raised into a task by its handle when an operator asked the job to stop.

    A Celery ``Ignore``: the worker acknowledges the message, records no failure and
    takes its next task. Let it propagate (a bare ``except Exception`` that swallows it
    only delays the stop to the next handle call).
    """

    stop: Stop

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: {self.stop.value} requested by an operator")


class PauseRequested(StopRequested):
    """The job was paused: it ends ``paused``; ``jobtrack resume`` runs it again."""

    stop = Stop.PAUSE


class CancelRequested(StopRequested):
    """The job was cancelled: it ends ``cancelled``."""

    stop = Stop.CANCEL


_STOPS: dict[Stop, type[StopRequested]] = {Stop.PAUSE: PauseRequested, Stop.CANCEL: CancelRequested}


@dataclass(frozen=True)
class JobSpec:
    """What ``@track`` declares about a task."""

    job_type: str | None = None
    job_subtype: str | None = None
    name: str | None = None
    owner: str | None = None
    #: The declared plan: ``job.stage(name)`` moves through it ("stage 2 of 3").
    stages: tuple[str, ...] = ()
    #: A task that returns normally ends failed by its items under this policy.
    fail_when: FailWhen | None = None
    #: What the job works on: a ``str.format`` template like ``name``.
    ref: str | None = None

    def failed_by_items(self, processed: int, failed: int) -> str | None:
        """Why a run that returned normally counts as failed, or None."""
        if self.fail_when is None or not failed:
            return None
        if self.fail_when == "any_item_failed" or failed >= processed:
            return f"{failed} of {processed} items failed (fail_when={self.fail_when!r})"
        return None

    def describe(self, fn: Callable[..., Any] | None, args: Any, kwargs: Any) -> dict[str, Any]:
        """``job_type``, ``job_subtype``, ``name``, ``ref`` and ``owner_id`` for one call."""
        out: dict[str, Any] = {"job_type": self.job_type, "job_subtype": self.job_subtype}
        if self.stages:
            out["stage_count"] = len(self.stages)
        if self.name is None and self.owner is None and self.ref is None:
            return out
        out.update(self.fill(_bind(fn, args, kwargs)))
        return out

    def fill(self, bound: dict[str, Any]) -> dict[str, Any]:
        """``name``, ``ref`` and ``owner_id`` from a call's arguments by name."""
        out: dict[str, Any] = {}
        for field, template in (("name", self.name), ("ref", self.ref)):
            if template is not None:
                try:
                    out[field] = template.format_map(bound)
                except (KeyError, IndexError, ValueError, AttributeError, TypeError):
                    out[field] = None if field == "ref" else template  # no half-made ref
        owner = owner_or_none(bound.get(self.owner)) if self.owner is not None else None
        if owner is not None:
            out["owner_id"] = owner
        return out


def _bind(fn: Callable[..., Any] | None, args: Any, kwargs: Any) -> dict[str, Any]:
    positional = tuple(args or ())
    named: dict[str, Any] = dict(kwargs or {})
    if fn is None:
        return named
    try:
        bound = inspect.signature(fn).bind_partial(*positional, **named)
    except (TypeError, ValueError):
        return named
    return dict(bound.arguments)


def track(
    job_type: str | None = None,
    *,
    job_subtype: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    stages: Sequence[str] = (),
    fail_when: FailWhen | None = None,
    ref: str | None = None,
) -> Callable[[F], F]:
    """Describe a task's jobs. Put it under ``@app.task``.

    ``name`` is a ``str.format`` template filled from the task's arguments
    (``"Import {filename}"``); ``owner`` names the argument holding the owner id;
    ``stages`` declares the plan ``job.stage(name)`` moves through; ``fail_when``
    ("all_items_failed" or "any_item_failed") marks a run that returned normally as
    failed by its items; ``ref`` names what the job works on, a template like ``name``
    (``"repo:{repo_id}@{commit_sha}"``), indexed for :func:`jobtrack.jobs_for_ref`.
    """
    if fail_when is not None and fail_when not in FAIL_WHEN:
        raise ValueError(f"fail_when={fail_when!r}: expected one of {', '.join(FAIL_WHEN)}")
    spec = JobSpec(
        job_type=job_type,
        job_subtype=job_subtype,
        name=name,
        owner=owner,
        stages=tuple(stages),
        fail_when=fail_when,
        ref=ref,
    )

    def decorate(fn: F) -> F:
        setattr(fn, _SPEC_ATTR, spec)
        return fn

    return decorate


def job_spec(task: Any) -> JobSpec | None:
    """The ``@track`` spec of a Celery task object, if it has one."""
    run = getattr(task, "run", None)
    spec = getattr(run, _SPEC_ATTR, None) or getattr(
        getattr(run, "__func__", None), _SPEC_ATTR, None
    )
    return spec if isinstance(spec, JobSpec) else None


class JobHandle:
    """The running job, as seen from inside its task (see :func:`current_job`).

    Every method is safe: a tracking problem is logged, never raised into the task. The
    one exception is deliberate: after an operator asked to pause or cancel the job,
    the next call raises :class:`StopRequested` (see the module docstring). With
    tracking switched off the handle still works and records nothing.
    """

    # What most runs never change, as class defaults: a handle is made for every task,
    # so it sets only what every run has.
    _stage_index: int | None = None
    _checkpoint: tuple[Any] | None = None  # (latest,) once read or written
    #: Set by the writer's thread when an operator asked this job to stop.
    _stop: Stop | None = None
    _retry_items: tuple[list[str] | None] | None = None  # (keys,) once read
    #: This run is an operator's retry of the job's failed items.
    retrying_items = False
    _planned = 0
    #: See :class:`jobtrack.context.RunningJob`.
    declared_error: tuple[str | None, str | None, str | None] | None = None
    #: The task replaced itself (``task.replace()``): the name of the task whose
    #: outcome the job now waits for.
    replaced_by: str | None = None
    # The latest unwritten progress, one tuple: assigning it is atomic, so neither
    # progress() nor the writer thread that collects it needs a lock.
    _latest: tuple[float | None, int | None, str | None, str | None] | None = None
    _stage_raw: str | None = None
    _stage: str | None = None
    #: Called with (percent, stage, message) at most every progress_interval_s;
    #: the Celery wiring uses it to send Flower a task-progress event.
    on_progress: Callable[[float | None, str | None, str | None], None] | None = None
    #: The monotonic time from which the next progress announcement may be sent.
    _announce_at = 0.0
    #: (monotonic time, percent) of recent progress, for the time-left estimate.
    _pace: deque[tuple[float, float]] | None = None
    #: The run's outcome was handed to the writer (set by the Celery wiring).
    ended = False
    #: The worker running it, and its task type's plan (set by the Celery wiring).
    worker: str | None = None
    plan: Any = None
    #: When the message this run came from was published (its stamp; None without one).
    sent_at: datetime | None = None
    #: The job whose task ran this one in-process (``other.apply()`` inside a task), if
    #: any: the current job again once this one ends.
    outer: JobHandle | None = None

    def __init__(
        self,
        job_id: str,
        attempt: int,
        tracker: Tracker | None,
        started_at: datetime | None = None,
        stages: Sequence[str] = (),
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.started_at = started_at
        self.stages = stages if type(stages) is tuple else tuple(stages)
        self._tracker = tracker
        #: Items recorded by this run, by status (``fail_when``'s fallback count).
        self.item_counts: dict[ItemStatus, int] = {}

    @property
    def id(self) -> str:
        return self.job_id

    @property
    def tracked(self) -> bool:
        return self._tracker is not None

    # -- stopping on request ------------------------------------------------------------

    def request_stop(self, stop: Stop) -> None:
        """Called by the writer's thread: the next handle call raises."""
        if self._stop is not Stop.CANCEL:  # a cancel outranks a pause
            self._stop = stop

    @property
    def stop_requested(self) -> Stop | None:
        """What an operator asked of this job, as last read with the heartbeat."""
        return self._stop

    def check(self) -> None:
        """Stop here if an operator asked to pause or cancel the job: raises
        :class:`PauseRequested` or :class:`CancelRequested`. ``progress()``, ``item()``,
        ``stage()`` and ``checkpoint()`` check too; call this in loops that call none."""
        if self._stop is not None:
            raise _STOPS[self._stop](self.job_id)

    def progress(
        self,
        percent: float | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress: ``percent`` directly, or ``current`` of ``total``.

        Only memory is touched; see the module docstring for when it is written.
        """
        if self._tracker is None:
            return
        try:
            if percent is None and current is not None and total:
                percent = 100.0 * current / total
            if percent is not None:
                # Clamped to 0-100 by comparisons (cheaper than min/max; NaN stays NaN).
                percent = float(percent)
                if percent > 100.0:
                    percent = 100.0
                elif percent < 0.0:
                    percent = 0.0
            if stage is not None and stage is not self._stage_raw:
                cleaned = clean_text(stage, _STAGE_CHARS)
                entered = cleaned != self._stage
                self._stage_raw, self._stage = stage, cleaned
                if entered:
                    self._enter_stage(cleaned)
            latest = self._latest or _NO_PROGRESS
            latest = self._latest = (
                latest[0] if percent is None else percent,
                latest[1] if total is None else int(total),
                latest[2] if stage is None else self._stage,
                latest[3] if message is None else message,
            )
            if self.on_progress is not None:
                clock = time.monotonic()
                if clock >= self._announce_at:
                    self._announce(latest, clock)
        except Exception as exc:
            self._failed(exc, "recording progress failed", "progress")
        if self._stop is not None:
            self.check()

    def stage(self, name: str, message: str | None = None) -> None:
        """Enter stage ``name`` (of ``@track(stages=...)``, or any name): the row shows
        "stage 2 of 3: parse", and the trace gets an event with the time, from which each
        stage's duration is read. Only memory is touched."""
        self.progress(stage=name, message=message)

    def _enter_stage(self, name: str) -> None:
        assert self._tracker is not None
        self._stage_index = self.stages.index(name) + 1 if name in self.stages else None
        now = datetime.now(UTC)
        self._tracker.writer.event(
            Event(self.job_id, now, JobStatus.RUNNING, self.attempt, stage=name)
        )

    def checkpoint(self, data: Any) -> None:
        """Store ``data`` (JSON, bounded and cleaned like other payloads) as the job's
        latest checkpoint, committed before this returns, in either write mode. The next
        run of the same job (a retry, a redelivery, an operator's retry, a resume) reads it
        as :attr:`last_checkpoint`. Never raises: if the database cannot take it now, it
        is kept and written with the rest, and logged (Celery's soft time limit, raised
        meanwhile, is the task's: it goes on, the checkpoint kept)."""
        tracker = self._tracker
        if tracker is None:
            return
        try:
            stored = tracker.json(data)
            if TRUNCATED in str(stored) or (stored is not data and stored != data):
                log.warning(
                    "checkpoint stored in its bounded, cleaned form",
                    extra={"job_id": self.job_id, "action": "checkpoint"},
                )
            now = datetime.now(UTC)
            update = self._running(now, checkpoint=stored, checkpoint_at=now)
            self._checkpoint = (stored,)
            try:
                tracker.store.write_batch(Batch([tracker.writer.clean(update)]))
            except Exception as exc:
                tracker.writer.update(update)
                if is_time_limit(exc):
                    raise
                log.warning(
                    "checkpoint not committed now (kept, written with the rest)",
                    exc_info=True,
                    extra={"job_id": self.job_id, "action": "checkpoint"},
                )
        except Exception as exc:
            self._failed(exc, "recording a checkpoint failed", "checkpoint")
        if self._stop is not None:
            self.check()  # after it is stored: the resumed run starts from it

    @property
    def last_checkpoint(self) -> Any:
        """The latest checkpoint of this job (None on a first run): the one written by an
        earlier run, or by this one. For a job an operator retried (a new job whose
        ``metadata.retry_of`` names the old one), the old job's."""
        if self._checkpoint is None:
            self._checkpoint = (self._read_checkpoint(),)
        return self._checkpoint[0]

    def _read_checkpoint(self) -> Any:
        tracker = self._tracker
        if tracker is None:
            return None
        try:
            job = tracker.store.find_job(self.job_id)
            if job is None:
                return None
            if self.sent_at is not None and job.sent_at is not None and job.sent_at < self.sent_at:
                return None  # an earlier run's (this new run's rows are not written yet)
            if job.checkpoint is None and isinstance(job.metadata, dict):
                earlier = job.metadata.get("retry_of")
                if isinstance(earlier, str):
                    found = tracker.store.find_job(earlier)
                    return found.checkpoint if found is not None else None
            return job.checkpoint
        except Exception as exc:
            self._failed(exc, "reading the last checkpoint failed", "checkpoint")
            return None

    def _announce(
        self, latest: tuple[float | None, int | None, str | None, str | None], clock: float
    ) -> None:
        """Send a progress announcement (Flower); the next is due ``progress_interval_s``
        after this one."""
        assert self._tracker is not None and self.on_progress is not None
        self._announce_at = clock + self._tracker.settings.progress_interval_s
        self.on_progress(latest[0], latest[2], latest[3])

    def take_progress(self) -> JobUpdate | None:
        """Hand the latest unwritten progress to the writer (and forget it)."""
        latest, self._latest = self._latest, None
        if latest is None:
            return None
        percent, total, stage, message = latest
        now = datetime.now(UTC)
        return self._running(
            now,
            eta_at=self._estimate(percent, now),
            progress_percent=percent,
            total_items=total,
            progress_stage=stage,
            stage_index=self._stage_index if stage is not None else None,
            progress_message=None
            if message is None
            else clean_text(
                message, self._tracker.settings.max_message_chars if self._tracker else 0
            ),
        )

    def _estimate(self, percent: float | None, now: datetime) -> datetime | None:
        """When the job should finish at its recent pace: the rate between the oldest
        and newest of the last :data:`PACE_SAMPLES` progress samples (a moving
        estimate, so a job that speeds up or slows down is followed), None without a
        known end (a percent, or current of total) or before enough samples."""
        if percent is None:
            return None
        clock = time.monotonic()
        pace = self._pace
        if pace is None:
            pace = self._pace = deque(maxlen=PACE_SAMPLES)
        if pace and percent < pace[-1][1]:
            pace.clear()  # went backwards (a new pass over the work): start again
        if not pace or percent > pace[-1][1]:
            pace.append((clock, percent))
        if len(pace) < PACE_MIN_SAMPLES or percent >= 100.0:
            return None
        (t0, p0), (t1, p1) = pace[0], pace[-1]
        if t1 <= t0 or p1 <= p0:
            return None
        left_s = (100.0 - percent) * (t1 - t0) / (p1 - p0) - (clock - t1)
        return now + timedelta(seconds=max(left_s, 0.0))

    def _running(self, at: datetime, **fields: Any) -> JobUpdate:
        """This attempt, still running, with ``fields`` to write."""
        return JobUpdate.transition(
            self.job_id,
            JobStatus.RUNNING,
            self.attempt,
            at=at,
            retries=self.attempt,
            sent_at=self.sent_at,
            **fields,
        )

    def item(
        self,
        key: object,
        status: str | ItemStatus = ItemStatus.SUCCESS,
        *,
        message: str | None = None,
        error_code: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Record one item's outcome; the job's counters follow."""
        tracker = self._tracker
        if tracker is None:
            return
        try:
            item_status = _ITEM_STATUSES[status]  # a member or its value (a StrEnum)
        except (KeyError, TypeError):
            log.error(
                "item status %r is not one of success, error, skipped, pending: recorded as error",
                status,
                extra={"job_id": self.job_id, "action": "item"},
            )
            item_status = ItemStatus.ERROR
        self.item_counts[item_status] = self.item_counts.get(item_status, 0) + 1
        try:
            tracker.writer.item(
                recorded_item(
                    self.job_id,
                    clean_text(key if isinstance(key, str) else str(key), _KEY_CHARS),
                    item_status,
                    datetime.now(UTC),
                    tracker.text(message),
                    clean_text(error_code, 100) if error_code is not None else None,
                    tracker.json(before) if before is not None else None,
                    tracker.json(after) if after is not None else None,
                )
            )
        except Exception as exc:
            self._failed(exc, "recording an item failed", "item")
        if self._stop is not None:
            self.check()

    def plan_items(self, keys: Sequence[object]) -> None:
        """Declare items up front as ``pending`` (a recorded outcome is never replaced
        by one), so the job reads "0 of N" before work starts; the total grows with
        each call."""
        tracker = self._tracker
        if tracker is None:
            return
        try:
            now = datetime.now(UTC)
            unique = dict.fromkeys(
                clean_text(k if isinstance(k, str) else str(k), _KEY_CHARS) for k in keys
            )
            for key in unique:
                tracker.writer.item(Item(self.job_id, key, ItemStatus.PENDING, processed_at=now))
            self._planned += len(unique)
        except Exception as exc:
            self._failed(exc, "planning items failed", "plan_items")
        self.progress(total=self._planned)

    @property
    def retry_items(self) -> list[str] | None:
        """The keys to redo when an operator retried only this job's failed items
        (``jobtrack retry ID --failed-items``): exactly the items in error when this run
        began. None on any other run. The task decides how to use them."""
        if not self.retrying_items:
            return None
        if self._retry_items is None:
            self.load_retry_items()
        return self._retry_items[0] if self._retry_items else None

    def load_retry_items(self) -> None:
        """Read :attr:`retry_items` now (the wiring calls it before the task body runs,
        so the items this run records do not change them)."""
        tracker = self._tracker
        if tracker is None or not self.retrying_items:
            return
        try:
            self._retry_items = (tracker.store.requests.failed_item_keys(self.job_id),)
        except Exception as exc:
            self._failed(
                exc, "reading the items to retry failed (read again on first use)", "retry_items"
            )

    def _failed(self, error: Exception, message: str, action: str) -> None:
        """In the ``except`` of a handle call: tracking's own failure is logged and kept
        from the task; Celery's soft time limit, raised into the task's thread while it
        was in here, is the task's and goes on to it (see ``is_time_limit``)."""
        if is_time_limit(error):
            raise error
        log.exception(message, extra={"job_id": self.job_id, "action": action})

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} attempt={self.attempt} tracked={self.tracked}>"


# Only JobHandles are ever set (here), so the variable's own methods serve as they are:
# a task's wiring reads or sets it five times (a Python wrapper cost 0.1 us a call).
_handles = cast("contextvars.ContextVar[JobHandle | None]", _context.CURRENT)
#: Make ``handle`` the job running in this thread (or asyncio task).
set_current: Callable[[JobHandle | None], object] = _handles.set
#: The job running in this thread (or asyncio task), or None.
get_current: Callable[[], JobHandle | None] = _handles.get


def current_job() -> JobHandle:
    """The job of the task running in this thread.

    Inside a task that is not tracked (tracking off, or not decorated while only
    decorated tasks are tracked) this returns a handle that records nothing, so task
    code never has to check. Outside any task it raises :class:`NoCurrentJob`.
    """
    handle = get_current()
    if handle is not None:
        return handle
    from celery import current_task  # imported late: keeps models/store free of Celery

    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    if task_id is None:
        raise NoCurrentJob()
    return JobHandle(task_id, getattr(request, "retries", 0) or 0, None)
