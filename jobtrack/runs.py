"""The worker's per-task path: a task's run, from ``task_prerun`` to ``task_postrun``.

Runs in the pool child (or the caller, in eager mode), on the task's own thread, for
every task: each handler reads what it needs from Celery's request, makes one job row
(a plain dict) and hands it to the writer with the run's handle, and returns. No
cleaning, merging, trace entries or I/O here: the writer does those once per batch (see
:mod:`jobtrack.writer`). Every handler catches what it meets and logs it with the job
id: a task is never affected by its tracking.

Order within one child: prerun → (retry, failure or success) → postrun. ``postrun``
with ``state=None`` (hard time limit, terminate, eager propagation) is never taken for
success; the worker's main process reports those outcomes (:mod:`jobtrack.celery`).
"""

from __future__ import annotations

import functools
import logging
import os
from datetime import UTC, datetime
from typing import Any

from .control import INPUT_HEADER, RETRY_ITEMS_HEADER, SENT_HEADER, stamp_time
from .job import JobHandle, get_current, set_current
from .logs import LogCapture, install_capture
from .models import TERMINAL_SEQ, ItemStatus, JobStatus, JobUpdate, Row, Stop, state_seq
from .payload import pack
from .plans import Plans
from .tracker import Tracker, handler_failed

__all__ = ["Runs"]

log = logging.getLogger("jobtrack.celery")

# The statuses as the rows carry them (text).
_RUNNING, _RETRYING, _PAUSED = (
    JobStatus.RUNNING.value,
    JobStatus.RETRYING.value,
    JobStatus.PAUSED.value,
)
_COMPLETED, _FAILED, _CANCELLED = (
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    JobStatus.CANCELLED.value,
)


_now = functools.partial(datetime.now, UTC)
#: This process's id, read for every run's row: kept here, and set again in a forked
#: child (a prefork pool's), rather than asked of the system every task.
_process = [os.getpid()]


def _forked() -> None:
    _process[0] = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _signatures(value: Any) -> list[dict[str, Any]]:
    """A request's ``chain``: the signatures (dicts) of the tasks after this one."""
    if not isinstance(value, (list, tuple)):
        return []
    return [member for member in value if isinstance(member, dict)]


def _parent(parent_id: Any, job_id: str) -> Any:
    """Celery gives a retried or replaced task its own id as parent: that is no parent."""
    return None if parent_id == job_id else parent_id


class Runs:
    """The pool child's signal handlers of one installed tracker."""

    def __init__(self, tracker: Tracker, plans: Plans) -> None:
        self.tracker = tracker
        self.settings = tracker.settings
        self.writer = tracker.writer
        self.plans = plans
        #: This process's log capture (installed at its first tracked task), and for
        #: which process: a forked pool child installs its own.
        self._capture: LogCapture | None = None
        self._capture_pid = 0
        self._announce = tracker.settings.progress_events

    # -- task_prerun ------------------------------------------------------------------

    def prerun(
        self,
        sender: Any = None,
        task_id: Any = None,
        task: Any = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        try:
            self._prerun(task_id, task or sender, args, kwargs)
        except Exception:
            handler_failed("prerun", task_id)

    def _prerun(self, task_id: str, task: Any, args: Any, kwargs: Any) -> None:
        request = task.request
        attempt = int(request.retries or 0)
        plan = self.plans.get(task.name, task)
        # A replacement runs under the job's id: it is that job's outcome, tracked or not
        # (and its parent is the replaced task's chain, not the job's parent).
        replacement = bool(getattr(request, "replaced_task_nesting", 0))
        tracked = plan.tracked or replacement
        now = _now()
        handle = JobHandle(task_id, attempt, self.tracker if tracked else None, now, plan.stages)
        # A task run inside another's (``other.apply()``, an eager canvas): the outer
        # job's handle comes back when this one ends.
        handle.outer = get_current()
        set_current(handle)
        if not tracked:
            return
        handle.plan = plan
        handle.worker = worker = request.hostname
        delivery = request.delivery_info or {}
        pid = _process[0]
        row: Row = {
            "id": task_id,
            "status": _RUNNING,
            "state_seq": state_seq(JobStatus.RUNNING, attempt),
            "created_at": now,
            "updated_at": now,
            "retries": attempt,
            "worker": worker,
            "pid": pid,
            "started_at": now,
            "heartbeat_at": now,
            "task_name": plan.name,
            "queue": delivery.get("routing_key"),
            "priority": delivery.get("priority"),
            "parent_id": None if attempt or replacement else _parent(request.parent_id, task_id),
            "root_id": request.root_id,
            "group_id": request.group,
            "max_retries": task.max_retries,
        }
        # The run's stamp (see SENT_HEADER), which the writer puts on the rows it is given
        # with this handle; a replacement goes on with the replaced run.
        sent = None if replacement else getattr(request, SENT_HEADER, None)
        if sent is not None:
            handle.sent_at = stamp_time(sent)
        # The publisher recorded the input and said so in a header: skip that work here.
        if not getattr(request, INPUT_HEADER, None):
            shown = getattr(request, "argsrepr", None), getattr(request, "kwargsrepr", None)
            row["input_data"] = plan.input(args, kwargs, *shown)
        if plan.spec is not None:
            row.update(plan.describe(args, kwargs))
        self.writer.started(handle, row)
        if getattr(request, RETRY_ITEMS_HEADER, None):
            handle.retrying_items = True
            handle.load_retry_items()
        if self._announce:
            handle.on_progress = plan.announcer(task)
        if self._capture_pid != pid:
            self._capture_pid = pid
            self._capture = install_capture(
                self.writer.log, self.settings.job_log_level, self.settings.job_log_lines
            )
        if self._capture is not None:  # keep what the run logs (see jobtrack.logs)
            self._capture.start(
                task_id,
                # Both only when the run logs its first line: most tasks never do.
                lambda: plan.secrets(args, kwargs),
                # An earlier run of this job kept lines already: count from them.
                (lambda: self._stored_lines(task_id))
                if attempt or delivery.get("redelivered")
                else None,
            )

    def _stored_lines(self, job_id: str) -> int:
        """How many lines the job kept so far: this process's buffer written first (an
        earlier attempt may have run here); another process's unwritten lines are not
        seen, so the bound holds per job within one process, and within a few lines
        of it across processes."""
        self.writer.flush()
        return self.tracker.store.logs.count(job_id)

    # -- task_success -----------------------------------------------------------------

    def success(
        self, sender: Any = None, result: Any = None, runtime: Any = None, **_: Any
    ) -> None:
        handle = get_current()
        if handle is None or not handle.tracked:
            return
        try:
            self._success(handle, result, runtime)
        except Exception:
            handler_failed("success", handle.job_id)

    def _success(self, handle: JobHandle, result: Any, runtime: Any) -> None:
        now = _now()
        attempt = handle.attempt
        row: Row = {
            "id": handle.job_id,
            "status": _COMPLETED,
            "state_seq": TERMINAL_SEQ,
            "created_at": now,
            "updated_at": now,
            "retries": attempt,
            "completed_at": now,
            "duration_ms": int(runtime * 1000) if isinstance(runtime, (int, float)) else None,
            "output_data": pack(self.tracker.json(result)) if result is not None else None,
            "progress_percent": 100.0,
            "worker": handle.worker,
        }
        declared = handle.declared_error
        if declared is None and handle.plan is not None and handle.plan.fails_by_items:
            declared = self._failed_by_items(handle)
        if declared is not None:  # fail_job() inside, or fail_when, then it returned
            row["status"] = _FAILED
            row["progress_percent"] = None
            row["error_type"], row["error_message"], row["traceback"] = declared
        handle.ended = True
        self.writer.ended(handle, row)

    def _failed_by_items(self, handle: JobHandle) -> tuple[str, str, None] | None:
        """The error of a run that returned normally but fails by its items under
        ``@track(fail_when=...)`` (counted over every run of the job, so a resumed or
        item-retried job counts all its items), or None."""
        spec = handle.plan.spec if handle.plan is not None else None
        if spec is None:
            return None
        counts = handle.item_counts
        processed = sum(n for s, n in counts.items() if s is not ItemStatus.PENDING)
        failed = counts.get(ItemStatus.ERROR, 0)
        try:
            # This run's items written, then counted with the earlier runs' items.
            job = self.tracker.store.find_job(handle.job_id) if self.writer.flush() else None
            if job is not None:
                processed, failed = job.processed_items, job.failed_items
        except Exception:
            log.warning(
                "could not count the job's items in the database; judged by this run's",
                exc_info=True,
                extra={"job_id": handle.job_id, "action": "fail_when"},
            )
        reason = spec.failed_by_items(processed, failed)
        return ("ItemsFailed", reason, None) if reason else None

    # -- task_retry -------------------------------------------------------------------

    def retry(
        self,
        sender: Any = None,
        request: Any = None,
        reason: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        job_id = getattr(request, "id", None)
        try:
            self._retry(request, job_id, reason, einfo)
        except Exception:
            handler_failed("retry", job_id)

    def _retry(self, request: Any, job_id: str | None, reason: Any, einfo: Any) -> None:
        handle = get_current()
        if job_id is None or (handle is not None and not handle.tracked):
            return
        attempt = int(request.retries or 0)
        exc = getattr(reason, "exc", None) or reason
        error = self.tracker.error_fields(exc if isinstance(exc, BaseException) else str(exc))
        when = getattr(reason, "when", None)
        now = _now()
        row: Row = {
            "id": job_id,
            "status": _RETRYING,
            "state_seq": state_seq(JobStatus.RETRYING, attempt),
            "created_at": now,
            "updated_at": now,
            "retries": attempt + 1,
            "error_type": error[0],
            "error_message": error[1],
            "traceback": self.tracker.traceback_text(getattr(einfo, "traceback", None)),
            "eta": when if isinstance(when, datetime) else None,
            "worker": getattr(request, "hostname", None),
        }
        self._end(handle, job_id, row, attempt)

    def _end(self, handle: JobHandle | None, job_id: str, row: Row, attempt: int) -> None:
        """The attempt's outcome: folded with its start by the writer when the run was
        this handle's (a trace entry of its own otherwise)."""
        if handle is not None and handle.job_id == job_id and handle.attempt == attempt:
            handle.ended = True
            self.writer.ended(handle, row)
        else:
            self.writer.update(row, trace=attempt)

    # -- task_failure (and task_internal_error) ---------------------------------------

    def failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        try:
            self._failure(sender, task_id, exception, einfo)
        except Exception:
            handler_failed("failure", task_id)

    def _failure(self, task: Any, task_id: str | None, exception: Any, einfo: Any) -> None:
        """In a pool child, the run's error; in the worker's main process (a
        ``WorkerLostError``, a hard time limit) the request may be another task's, so
        it is only trusted when the ids match."""
        if task_id is None:
            return
        name = getattr(task, "name", None)
        if name is None:
            if not self.settings.track_all:
                return
        elif not self.plans.get(name, task).tracked:
            return
        request = getattr(task, "request", None)
        own = getattr(request, "id", None) == task_id
        attempt = int(getattr(request, "retries", 0) or 0) if own else 0
        handle = get_current()
        duration_ms = None
        if handle is not None and handle.job_id == task_id and handle.started_at is not None:
            duration_ms = int((_now() - handle.started_at).total_seconds() * 1000)
        error = self.tracker.error_fields(exception)
        now = _now()
        if own:
            self._never_ran(request, task_id, error, now)
        row: Row = {
            "id": task_id,
            "status": _FAILED,
            "state_seq": TERMINAL_SEQ,
            "created_at": now,
            "updated_at": now,
            "retries": attempt,
            "completed_at": now,
            "error_type": error[0],
            "error_message": error[1],
            "duration_ms": duration_ms,
            "traceback": self.tracker.traceback_text(getattr(einfo, "traceback", None)),
            "worker": getattr(request, "hostname", None) if own else None,
            "task_name": name,
        }
        self._end(handle, task_id, row, attempt)

    def _never_ran(
        self, request: Any, upstream: str, error: tuple[str | None, str | None], now: datetime
    ) -> None:
        """The work that will never run because ``upstream`` failed, each with a row of
        its own (Celery stores FAILURE for each, so nobody waits forever): the members
        of a chain after it, and the body of a chord whose header it belongs to."""
        kind, message = error
        cause = f"{kind}: {message}" if message else str(kind)
        for member in _signatures(getattr(request, "chain", None)):
            self._unrun(
                member, request, upstream, now, kind, f"never ran: {upstream} failed ({cause})"
            )
        body = getattr(request, "chord", None)
        if isinstance(body, dict):
            self._unrun(
                body,
                request,
                upstream,
                now,
                "celery.exceptions.ChordError",
                f"never ran: {upstream} of its chord's header failed ({cause})",
            )

    def _unrun(
        self,
        signature: dict[str, Any],
        request: Any,
        upstream: str,
        now: datetime,
        kind: str | None,
        message: str,
    ) -> None:
        options = signature.get("options") or {}
        job_id, name = options.get("task_id"), signature.get("task")
        if not isinstance(job_id, str) or not isinstance(name, str):
            return  # a complex signature with no id of its own: nothing to key a row on
        if not self.plans.get(name).tracked:
            return
        update = JobUpdate.transition(
            job_id,
            JobStatus.FAILED,
            0,
            at=now,
            completed_at=now,
            task_name=name,
            parent_id=upstream,
            root_id=getattr(request, "root_id", None),
            group_id=options.get("group_id"),
            error_type=kind,
            error_message=self.tracker.text(message),
        )
        self.writer.update(update, trace=0, note=f"never ran: {upstream} failed")

    # -- task_postrun -----------------------------------------------------------------

    def postrun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, state: Any = None, **_: Any
    ) -> None:
        handle = get_current()
        set_current(handle.outer if handle is not None else None)
        if handle is None or not handle.tracked:
            return
        try:
            self._postrun(task_id, task or sender, handle, state)
        except Exception:
            handler_failed("postrun", task_id)

    def _postrun(self, task_id: str, task: Any, handle: JobHandle, state: Any) -> None:
        if self._capture is not None:
            self._capture.finish(task_id)
        if state != "IGNORED":
            if not handle.ended:
                # state None (hard time limit, terminate, eager propagation) is never
                # success: the main process reports the outcome (task_failure,
                # task_revoked). This process only stops watching the run.
                self.writer.released(handle)
            return
        now = _now()
        attempt = handle.attempt
        row: Row = {"id": task_id, "created_at": now, "updated_at": now, "retries": attempt}
        note = None
        if handle.replaced_by is not None:
            # Replaced: the replacement's outcome, under this id, decides the job.
            row["status"], row["state_seq"] = _RUNNING, state_seq(JobStatus.RUNNING, attempt)
            if handle.sent_at is not None:  # the replaced run's row (not given as ended)
                row["sent_at"] = handle.sent_at
            row["progress_message"] = f"replaced by {handle.replaced_by}; waiting for its outcome"
            self.writer.update(row)
            self.writer.released(handle)
            return
        stop = handle.stop_requested
        if stop is Stop.PAUSE:
            # Stopped at a handle call because an operator asked: not finished (a
            # resume publishes it again).
            row["status"], row["state_seq"] = _PAUSED, state_seq(JobStatus.PAUSED, attempt)
            note = "paused: stopped at its next check"
        elif stop is Stop.CANCEL:
            duration = now - handle.started_at if handle.started_at else None
            row.update(
                status=_CANCELLED,
                state_seq=TERMINAL_SEQ,
                completed_at=now,
                duration_ms=int(duration.total_seconds() * 1000) if duration else None,
                error_type="Revoked",
                error_message="cancelled: stopped at its next check",
            )
            note = "cancelled: stopped at its next check"
        else:  # Ignore raised: it ended here
            row.update(
                status=_COMPLETED,
                state_seq=TERMINAL_SEQ,
                completed_at=now,
                progress_message="ignored (the task raised Ignore)",
            )
        if note is not None:
            row["worker"] = getattr(getattr(task, "request", None), "hostname", None)
        handle.ended = True
        self.writer.ended(handle, row, note)
