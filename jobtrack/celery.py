"""``install(app)``: Celery signals in, writer calls out.

Which process sends which signal (see docs/design.md):

* ``before_task_publish`` — the publisher: the pending row, with queue, eta and ids.
* ``task_prerun`` / ``task_retry`` / ``task_success`` / ``task_failure`` /
  ``task_internal_error`` / ``task_postrun`` — the pool child running the task.
* ``task_failure`` with ``WorkerLostError`` or a hard time limit, ``task_revoked``,
  ``task_rejected``, ``task_unknown`` — the worker's main process.

Handlers build :class:`~jobtrack.models.JobUpdate` values and give them to the writer;
they never touch the database themselves and never raise: a tracking failure is logged
with the job id. ``task_postrun`` with ``state=None`` (hard time limit, terminate,
eager propagation) is never taken for success.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import itertools
import logging
import os
from datetime import UTC, datetime
from typing import Any

from celery import Celery, signals
from celery.utils.saferepr import saferepr
from celery.worker import state as worker_state
from celery.worker.control import control_command, ok

from .control import ACTION_HEADER, HOLD_COMMAND, INPUT_HEADER, RETRY_ITEMS_HEADER
from .job import JobHandle, JobSpec, get_current, job_spec, set_current
from .logs import LogCapture, install_capture, remove_capture
from .maintenance import WorkerUpkeep, prune_by_retention, reap, reap_vanished, republish_lost
from .models import Event, ItemStatus, JobStatus, JobUpdate, Stop
from .payload import REDACTED, is_secret, secret_values
from .settings import Settings
from .store import Store
from .tracker import Tracker, active_tracker_or_none, set_active_tracker

__all__ = ["ALERTS_TASK", "PRUNE_TASK", "REAP_TASK", "install", "uninstall"]

log = logging.getLogger("jobtrack.celery")

_DISPATCH = "jobtrack"
#: Celery signal -> handler method of _Wiring.
_HANDLERS = {
    "before_task_publish": "on_publish",
    "task_prerun": "on_prerun",
    "task_retry": "on_retry",
    "task_success": "on_success",
    "task_failure": "on_failure",
    # Errors outside the task body, and every error in eager mode with propagation
    # (which sends no task_failure), arrive here.
    "task_internal_error": "on_failure",
    "task_postrun": "on_postrun",
    "task_revoked": "on_revoked",
    "task_rejected": "on_rejected",
    "task_unknown": "on_unknown",
    "task_received": "on_received",
    "worker_init": "on_worker_init",
    "worker_ready": "on_worker_ready",
    "worker_process_shutdown": "on_process_shutdown",
    "worker_shutdown": "on_worker_shutdown",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_eta(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parent(parent_id: Any, job_id: str) -> Any:
    """Celery gives a retried or replaced task its own id as parent: that is no parent."""
    return None if parent_id == job_id else parent_id


def _progress_event_sender(task: Any) -> Any:
    """Send a ``task-progress`` event (Flower shows the task as PROGRESS; the fields
    reach ``jobtrack.flower.format_task``). Runs in the task's thread, throttled."""

    def send(percent: float | None, stage: str | None, message: str | None) -> None:
        task.send_event(
            "task-progress",
            percent=percent,
            stage=stage,
            message=message[:200] if message else message,
        )

    return send


class _Wiring:
    """The signal handlers of one installed tracker."""

    def __init__(self, app: Celery, tracker: Tracker) -> None:
        self.app = app
        self.tracker = tracker
        self.settings = tracker.settings
        self.writer = tracker.writer
        self.upkeep = WorkerUpkeep(app, tracker)
        self._specs: dict[str, JobSpec | None] = {}
        self._names: dict[Any, tuple[str, ...] | None] = {}
        self._argsrepr_max = int(getattr(app.amqp, "argsrepr_maxsize", 1024))
        #: Jobs this worker revoked at receipt because they are paused.
        self._pausing: set[str] = set()
        #: This process's log capture (installed at its first tracked task), and for
        #: which process: a forked pool child installs its own.
        self._capture: LogCapture | None = None
        self._capture_pid = 0

    # -- shared bits --------------------------------------------------------------

    def _spec(self, task_name: str | None, task: Any = None) -> tuple[bool, JobSpec | None]:
        """Whether a task is tracked, and its ``@track`` spec."""
        if task_name is None:
            return self.settings.track_all, None
        if task_name not in self._specs:
            if task is None:
                task = self.app.tasks.get(task_name)
            self._specs[task_name] = job_spec(task) if task is not None else None
        spec = self._specs[task_name]
        return (spec is not None or self.settings.track_all), spec

    def _input(self, args: Any, kwargs: Any, argsrepr: Any, kwargsrepr: Any, fn: Any) -> Any:
        """Arguments as JSON; the caller's own argsrepr/kwargsrepr when they hid them.

        Positional arguments are matched to the parameter names of ``fn`` (the task's
        ``run``) so a secret passed by position is redacted like one passed by name.
        Without ``fn`` (a publisher that does not have the task) positional arguments
        cannot be matched: None, and the worker records the input instead.
        """
        if self._hidden(argsrepr, args) or self._hidden(kwargsrepr, kwargs):
            return self.tracker.json({"argsrepr": argsrepr, "kwargsrepr": kwargsrepr})
        positional = list(args or ())
        if positional:
            names = self._positional_names(fn)
            if names is None:
                return None
            keys = self.settings.redact_keys
            positional = [
                REDACTED if n < len(names) and is_secret(names[n], keys) else value
                for n, value in enumerate(positional)
            ]
        return self.tracker.json({"args": positional, "kwargs": dict(kwargs or {})})

    def _positional_names(self, fn: Any) -> tuple[str, ...] | None:
        """The names positional arguments bind to, in order (cached per function)."""
        if fn is None:
            return None
        key = getattr(fn, "__func__", fn)
        if key not in self._names:
            try:
                parameters = inspect.signature(fn).parameters.values()
            except (TypeError, ValueError):
                self._names[key] = None
            else:
                self._names[key] = tuple(
                    p.name for p in itertools.takewhile(lambda p: p.kind in _POSITIONAL, parameters)
                )
        return self._names[key]

    def _hidden(self, shown: Any, value: Any) -> bool:
        """Whether the caller gave Celery its own argsrepr/kwargsrepr (to hide the
        arguments) rather than the one Celery makes, ``saferepr(value)``.

        Celery's repr of short plain arguments equals ``repr()``, which is far cheaper
        than ``saferepr``: that is tried first (publishing pays for this on every task).
        """
        if shown is None:
            return False
        limit = self._argsrepr_max
        if len(shown) < limit // 2:
            try:
                if repr(value) == shown:
                    return False
            except Exception:  # a user's __repr__ may raise anything
                pass
        return bool(shown != saferepr(value, limit))

    def _emit(self, update: JobUpdate, *, attempt: int = 0, note: str | None = None) -> None:
        """Write a transition with its trace entry (``note``: how it came about)."""
        if note is None:
            self.writer.update(update, trace=attempt)
        else:
            self.writer.update(update, dataclasses.replace(Event.of(update, attempt), note=note))

    def _guard(self, action: str, job_id: Any, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception(
                "jobtrack %s handler failed; the task is not affected",
                action,
                extra={"job_id": job_id, "action": action},
            )

    # -- publisher ----------------------------------------------------------------

    def on_publish(
        self,
        sender: Any = None,
        body: Any = None,
        exchange: Any = None,
        routing_key: Any = None,
        headers: Any = None,
        properties: Any = None,
        declare: Any = None,
        **_: Any,
    ) -> None:
        job_id = (headers or {}).get("id")
        self._guard(
            "publish",
            job_id,
            self._publish,
            sender,
            body,
            routing_key,
            headers,
            properties,
            declare,
        )

    def _publish(
        self, name: Any, body: Any, routing_key: Any, headers: Any, properties: Any, declare: Any
    ) -> None:
        if not headers or "id" not in headers:
            return  # task protocol 1 or a foreign message: nothing to key a row on
        if headers.pop(ACTION_HEADER, None):
            # A bulk action's retry: the action wrote its row, input included. Taken off
            # the message, or Celery would copy it into the task's own self.retry().
            return
        task_name = headers.get("task") or name
        if headers.get("replaced_task_nesting"):
            # task.replace() publishes from inside the task it replaces: that job now
            # follows its replacement (whose last task runs under the job's own id).
            running = get_current()
            if running is not None and running.replaced_by is None:
                running.replaced_by = str(task_name)
        tracked, spec = self._spec(task_name)
        if not tracked:
            return
        args, kwargs = (
            (body[0], body[1]) if isinstance(body, (tuple, list)) and len(body) >= 2 else ((), {})
        )
        retries = int(headers.get("retries") or 0)
        queue = routing_key or (declare[0].name if declare else None)
        if retries:  # a retry republished: the old attempt is retrying until it starts
            status, attempt = JobStatus.RETRYING, retries - 1
        else:
            status, attempt = JobStatus.PENDING, 0
        now = _now()
        task = self.app.tasks.get(task_name)
        described = spec.describe(getattr(task, "run", None), args, kwargs) if spec else {}
        update = JobUpdate.transition(
            headers["id"],
            status,
            attempt,
            at=now,
            retries=retries,
            task_name=task_name,
            queue=queue or None,
            priority=(properties or {}).get("priority"),
            eta=_parse_eta(headers.get("eta")),
            parent_id=None
            if headers.get("replaced_task_nesting")
            else _parent(headers.get("parent_id"), headers["id"]),
            root_id=headers.get("root_id"),
            group_id=headers.get("group"),
            input_data=self._input(
                args,
                kwargs,
                headers.get("argsrepr"),
                headers.get("kwargsrepr"),
                getattr(task, "run", None),
            ),
            max_retries=getattr(task, "max_retries", None),
            **described,
        )
        # Tell the worker the input is recorded, so its prerun skips that work.
        if update.input_data is not None:
            headers[INPUT_HEADER] = 1
        if status is JobStatus.PENDING:
            self._emit(update, attempt=attempt)
        else:
            self.writer.update(update)  # the retry event is written by task_retry

    # -- pool child -----------------------------------------------------------------

    def on_prerun(
        self,
        sender: Any = None,
        task_id: Any = None,
        task: Any = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        self._guard("prerun", task_id, self._prerun, task_id, task or sender, args, kwargs)

    def _prerun(self, task_id: str, task: Any, args: Any, kwargs: Any) -> None:
        request = task.request
        attempt = int(request.retries or 0)
        tracked, spec = self._spec(task.name, task)
        # A replacement runs under the job's id: it is that job's outcome, tracked or not
        # (and its parent is the replaced task's chain, not the job's parent).
        replacement = bool(getattr(request, "replaced_task_nesting", 0))
        tracked = tracked or replacement
        now = _now()
        handle = JobHandle(
            task_id,
            attempt,
            self.tracker if tracked else None,
            started_at=now,
            stages=spec.stages if spec else (),
        )
        set_current(handle)
        if not tracked:
            return
        delivery = request.delivery_info or {}
        described = spec.describe(task.run, args, kwargs) if spec else {}
        # The publisher recorded the input and said so in a header: skip that work here.
        recorded_input = (
            None
            if getattr(request, INPUT_HEADER, None)
            else self._input(
                args,
                kwargs,
                getattr(request, "argsrepr", None),
                getattr(request, "kwargsrepr", None),
                task.run,
            )
        )
        update = JobUpdate.transition(
            task_id,
            JobStatus.RUNNING,
            attempt,
            at=now,
            started_at=now,
            heartbeat_at=now,
            retries=attempt,
            worker=request.hostname,
            pid=os.getpid(),
            task_name=task.name,
            queue=delivery.get("routing_key"),
            priority=delivery.get("priority"),
            parent_id=_parent(request.parent_id, task_id)
            if attempt == 0 and not replacement
            else None,
            root_id=request.root_id,
            group_id=request.group,
            input_data=recorded_input,
            max_retries=task.max_retries,
            **described,
        )
        self._emit(update, attempt=attempt)
        if getattr(request, RETRY_ITEMS_HEADER, None):
            handle.retrying_items = True
            handle.load_retry_items()
        self.writer.watch(handle)
        if self.settings.progress_events:
            handle.on_progress = _progress_event_sender(task)
        self._capture_logs(task_id, attempt, task, args, kwargs, bool(delivery.get("redelivered")))

    def _capture_logs(
        self, job_id: str, attempt: int, task: Any, args: Any, kwargs: Any, redelivered: bool
    ) -> None:
        """Keep what the run logs with the job (see :mod:`jobtrack.logs`)."""
        if self._capture_pid != os.getpid():
            self._capture_pid = os.getpid()
            self._capture = install_capture(
                self.writer.log, self.settings.job_log_level, self.settings.job_log_lines
            )
        if self._capture is None:
            return
        self._capture.start(
            job_id,
            # Both only when the run logs its first line: most tasks never do.
            lambda: self._secrets(task, args, kwargs),
            # An earlier run of this job kept lines already: count from them.
            (lambda: self._stored_lines(job_id)) if attempt or redelivered else None,
        )

    def _secrets(self, task: Any, args: Any, kwargs: Any) -> tuple[str, ...]:
        """The values passed under redacted argument names (by name or by position)."""
        named: dict[str, Any] = dict(kwargs) if isinstance(kwargs, dict) else {}
        names = self._positional_names(task.run) or ()
        named.update(zip(names, args or (), strict=False))
        return secret_values(named, self.settings.redact_keys)

    def _stored_lines(self, job_id: str) -> int:
        """How many lines the job kept so far: this process's buffer written first (an
        earlier attempt may have run here); another process's unwritten lines are not
        seen, so the bound holds per job within one process, and within a few lines
        of it across processes."""
        self.writer.flush()
        return self.tracker.store.count_logs(job_id)

    def on_success(
        self, sender: Any = None, result: Any = None, runtime: Any = None, **_: Any
    ) -> None:
        request = getattr(sender, "request", None)
        job_id = getattr(request, "id", None)
        self._guard("success", job_id, self._success, sender, job_id, result, runtime)

    def _success(self, task: Any, job_id: str | None, result: Any, runtime: Any) -> None:
        handle = get_current()
        if job_id is None or handle is None or not handle.tracked:
            return
        self.writer.unwatch(handle)
        now = _now()
        attempt = int(task.request.retries or 0)
        duration_ms = int(runtime * 1000) if isinstance(runtime, (int, float)) else None
        declared = handle.declared_error or self._failed_by_items(task, job_id)
        if declared is not None:  # fail_job() inside, or fail_when, then it returned
            error_type, message, traceback = declared
            update = JobUpdate.transition(
                job_id,
                JobStatus.FAILED,
                attempt,
                at=now,
                completed_at=now,
                retries=attempt,
                duration_ms=duration_ms,
                output_data=self.tracker.json(result),
                error_type=error_type,
                error_message=message,
                traceback=traceback,
                worker=task.request.hostname,
            )
        else:
            update = JobUpdate.transition(
                job_id,
                JobStatus.COMPLETED,
                attempt,
                at=now,
                completed_at=now,
                retries=attempt,
                duration_ms=duration_ms,
                output_data=self.tracker.json(result),
                progress_percent=100.0,
                worker=task.request.hostname,
            )
        self._emit(update, attempt=attempt)

    def _failed_by_items(self, task: Any, job_id: str) -> tuple[str, str, None] | None:
        """The error of a run that returned normally but fails by its items under
        ``@track(fail_when=...)`` (counted over every run of the job, so a resumed or
        item-retried job counts all its items), or None."""
        _tracked, spec = self._spec(getattr(task, "name", None), task)
        handle = get_current()
        if spec is None or spec.fail_when is None or handle is None:
            return None
        counts = handle.item_counts
        processed = sum(n for s, n in counts.items() if s is not ItemStatus.PENDING)
        failed = counts.get(ItemStatus.ERROR, 0)
        try:
            # This run's items written, then counted with the earlier runs' items.
            job = self.tracker.store.find_job(job_id) if self.writer.flush() else None
            if job is not None:
                processed, failed = job.processed_items, job.failed_items
        except Exception:
            log.warning(
                "could not count the job's items in the database; judged by this run's",
                exc_info=True,
                extra={"job_id": job_id, "action": "fail_when"},
            )
        reason = spec.failed_by_items(processed, failed)
        return ("ItemsFailed", reason, None) if reason else None

    def on_retry(
        self,
        sender: Any = None,
        request: Any = None,
        reason: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        job_id = getattr(request, "id", None)
        self._guard("retry", job_id, self._retry, request, reason, einfo)

    def _retry(self, request: Any, reason: Any, einfo: Any) -> None:
        handle = get_current()
        if request is None or request.id is None or (handle is not None and not handle.tracked):
            return
        if handle is not None:
            self.writer.unwatch(handle)
        attempt = int(request.retries or 0)
        exc = getattr(reason, "exc", None) or reason
        error = self.tracker.error_fields(exc if isinstance(exc, BaseException) else str(exc))
        when = getattr(reason, "when", None)
        now = _now()
        update = JobUpdate.transition(
            request.id,
            JobStatus.RETRYING,
            attempt,
            at=now,
            retries=attempt + 1,
            error_type=error[0],
            error_message=error[1],
            traceback=self.tracker.traceback_text(getattr(einfo, "traceback", None)),
            eta=when if isinstance(when, datetime) else None,
            worker=getattr(request, "hostname", None),
        )
        self._emit(update, attempt=attempt)

    def on_failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        self._guard("failure", task_id, self._failure, sender, task_id, exception, einfo)

    def _failure(self, task: Any, task_id: str | None, exception: Any, einfo: Any) -> None:
        if task_id is None:
            return
        tracked, _spec = self._spec(getattr(task, "name", None), task)
        if not tracked:
            return
        # In the worker's main process (WorkerLostError, hard time limit) the request
        # may not be this task's; only trust it when the ids match.
        request = getattr(task, "request", None)
        own = getattr(request, "id", None) == task_id
        attempt = int(getattr(request, "retries", 0) or 0) if own else 0
        handle = get_current()
        duration_ms = None
        if handle is not None and handle.job_id == task_id:
            self.writer.unwatch(handle)
            if handle.started_at is not None:
                duration_ms = int((_now() - handle.started_at).total_seconds() * 1000)
        error = self.tracker.error_fields(exception)
        now = _now()
        update = JobUpdate.transition(
            task_id,
            JobStatus.FAILED,
            attempt,
            at=now,
            completed_at=now,
            retries=attempt,
            error_type=error[0],
            error_message=error[1],
            duration_ms=duration_ms,
            traceback=self.tracker.traceback_text(getattr(einfo, "traceback", None)),
            worker=getattr(request, "hostname", None) if own else None,
            task_name=getattr(task, "name", None),
        )
        self._emit(update, attempt=attempt)

    def on_postrun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, state: Any = None, **_: Any
    ) -> None:
        self._guard("postrun", task_id, self._postrun, task_id, task or sender, state)

    def _postrun(self, task_id: str, task: Any, state: Any) -> None:
        handle = get_current()
        set_current(None)
        if handle is None or not handle.tracked:
            return
        if self._capture is not None:
            self._capture.finish(task_id)
        self.writer.unwatch(handle)
        if state == "IGNORED" and handle.replaced_by is not None:
            # Replaced: the replacement's outcome, under this id, decides the job.
            self.writer.update(
                JobUpdate.transition(
                    task_id,
                    JobStatus.RUNNING,
                    handle.attempt,
                    at=_now(),
                    retries=handle.attempt,
                    progress_message=f"replaced by {handle.replaced_by}; waiting for its outcome",
                )
            )
        elif state == "IGNORED" and handle.stop_requested is not None:
            self._stopped(task_id, task, handle, handle.stop_requested)
        elif state == "IGNORED":  # Ignore raised: it ended here
            now = _now()
            update = JobUpdate.transition(
                task_id,
                JobStatus.COMPLETED,
                handle.attempt,
                at=now,
                completed_at=now,
                progress_message="ignored (the task raised Ignore)",
            )
            self._emit(update, attempt=handle.attempt)
        # state None (hard time limit, terminate, eager propagation) is never success:
        # the main process reports the outcome (task_failure / task_revoked).

    def _stopped(self, task_id: str, task: Any, handle: JobHandle, stop: Stop) -> None:
        """The task stopped at a handle call because an operator asked: ``paused`` (not
        finished: ``resume`` publishes it again) or ``cancelled``."""
        now = _now()
        worker = getattr(getattr(task, "request", None), "hostname", None)
        if stop is Stop.PAUSE:
            update = JobUpdate.transition(
                task_id, JobStatus.PAUSED, handle.attempt, at=now, retries=handle.attempt
            )
            note = "paused: stopped at its next check"
        else:
            duration = (now - handle.started_at) if handle.started_at else None
            update = JobUpdate.transition(
                task_id,
                JobStatus.CANCELLED,
                handle.attempt,
                at=now,
                completed_at=now,
                retries=handle.attempt,
                duration_ms=int(duration.total_seconds() * 1000) if duration else None,
                error_type="Revoked",
                error_message="cancelled: stopped at its next check",
            )
            note = "cancelled: stopped at its next check"
        update.worker = worker
        self._emit(update, attempt=handle.attempt, note=note)

    # -- worker main process ----------------------------------------------------------

    def on_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: Any = None,
        signum: Any = None,
        expired: Any = None,
        **_: Any,
    ) -> None:
        job_id = getattr(request, "id", None)
        self._guard(
            "revoked", job_id, self._revoked, sender, job_id, request, terminated, signum, expired
        )

    def _revoked(
        self,
        task: Any,
        job_id: str | None,
        request: Any,
        terminated: Any,
        signum: Any,
        expired: Any,
    ) -> None:
        if job_id is None:
            return
        # Never run: the input is recorded here if the publisher could not (it had no
        # task to match positional arguments to), so a resume or retry can publish it.
        recorded_input = self._input(
            getattr(request, "args", None),
            getattr(request, "kwargs", None),
            getattr(request, "argsrepr", None),
            getattr(request, "kwargsrepr", None),
            getattr(task, "run", None),
        )
        if job_id in self._pausing:  # dropped at receipt because it is paused
            self._pausing.discard(job_id)
            worker_state.revoked.discard(job_id)  # a resume publishes the same id
            attempt = int(getattr(request, "retries", 0) or 0)
            paused = JobUpdate.transition(
                job_id,
                JobStatus.PAUSED,
                attempt,
                at=_now(),
                retries=attempt,
                worker=getattr(request, "hostname", None),
                input_data=recorded_input,
            )
            note = "paused: dropped from the queue by its worker"
            self._emit(paused, attempt=attempt, note=note)
            return
        if expired:
            error = ("Expired", "expired before it could run")
        elif terminated:
            error = ("Revoked", f"revoked and terminated (signal {signum})")
        else:
            error = ("Revoked", "revoked")
        now = _now()
        attempt = int(getattr(request, "retries", 0) or 0)
        update = JobUpdate.transition(
            job_id,
            JobStatus.CANCELLED,
            attempt,
            at=now,
            completed_at=now,
            retries=attempt,
            error_type=error[0],
            error_message=error[1],
            task_name=getattr(task, "name", None),
            worker=getattr(request, "hostname", None),
            input_data=None if terminated else recorded_input,
        )
        self._emit(update, attempt=attempt)

    def on_rejected(
        self, sender: Any = None, message: Any = None, exc: Any = None, **_: Any
    ) -> None:
        headers = getattr(message, "headers", None) or {}
        job_id = headers.get("id")
        self._guard(
            "rejected",
            job_id,
            self._ended_unrun,
            job_id,
            headers.get("task"),
            "Rejected",
            f"message rejected by the worker: {exc!r}",
        )

    def on_unknown(
        self,
        sender: Any = None,
        name: Any = None,
        id: Any = None,
        message: Any = None,
        exc: Any = None,
        **_: Any,
    ) -> None:
        self._guard(
            "unknown",
            id,
            self._ended_unrun,
            id,
            name,
            "NotRegistered",
            f"no task named {name!r} is registered on the worker",
        )

    def _ended_unrun(self, job_id: str | None, task_name: Any, kind: str, message: str) -> None:
        if not job_id:
            return
        now = _now()
        text = self.tracker.text(message)
        update = JobUpdate.transition(
            job_id,
            JobStatus.FAILED,
            0,
            at=now,
            completed_at=now,
            error_type=kind,
            error_message=text,
            task_name=str(task_name) if task_name else None,
        )
        self._emit(update)

    def on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        job_id = getattr(request, "id", None)
        if job_id is not None and self.upkeep.requested(job_id) is not None:
            self._guard("received", job_id, self._received_held, job_id)

    def _received_held(self, job_id: str) -> None:
        """A job this worker knows was asked to stop: confirm with the database (the
        request may have been lifted since: a resume, a retry of failed items), then
        revoke it here so Celery skips it. Revocations live in worker memory, so a
        cancel made while this worker was away arrives this way; a pause always does
        (nothing broadcasts a revoke for it), and is reported ``paused``."""
        try:
            stop = self.tracker.store.stop_requests([job_id]).get(job_id)
        except Exception:  # unreachable: act on what this worker last read
            stop = self.upkeep.requested(job_id)
        if stop is None:
            return
        if stop is Stop.PAUSE:
            self._pausing.add(job_id)
        worker_state.revoked.add(job_id)
        log.info(
            "skipping a job whose %s was requested",
            stop.value,
            extra={"job_id": job_id, "action": "received"},
        )

    # -- process lifecycle ------------------------------------------------------------

    def on_worker_init(self, **_: Any) -> None:
        # Before the pool forks and before any task is received.
        self._guard("worker_init", None, self.upkeep.load_requests)

    def on_worker_ready(self, **_: Any) -> None:
        self._guard("worker_ready", None, self.upkeep.start)

    def on_process_shutdown(self, **_: Any) -> None:
        self._guard("process_shutdown", None, self.tracker.writer.close)

    def on_worker_shutdown(self, **_: Any) -> None:
        self.upkeep.stop()
        self._guard("worker_shutdown", None, self.tracker.writer.close)

    def connect(self) -> None:
        for name, method in _HANDLERS.items():
            getattr(signals, name).connect(
                getattr(self, method), weak=False, dispatch_uid=_DISPATCH
            )


_active: list[_Wiring] = []  # the installed wiring, for the remote control command


def _disconnect() -> None:
    for name in _HANDLERS:
        getattr(signals, name).disconnect(dispatch_uid=_DISPATCH)
    _active.clear()
    remove_capture()


@control_command(  # type: ignore[untyped-decorator]
    name=HOLD_COMMAND,
    args=[("job_id", str), ("stop", str)],
    signature="<job_id> <pause|cancel>",
)
def _hold(state: Any, job_id: str, stop: str = "pause", **_: Any) -> dict[str, Any]:
    """jobtrack: a job was asked to stop; skip it if it arrives here."""
    for wiring in _active:
        wiring.upkeep.hold(str(job_id), Stop(stop))
    return dict(ok(f"holding {job_id}"))


def install(
    app: Celery,
    database_url: str | None = None,
    *,
    store: Store | None = None,
    **settings: Any,
) -> Tracker:
    """Track every task of ``app`` (or only ``@track``-decorated ones, see settings).

    ``database_url``: this argument, else ``app.conf.jobtrack_database_url``, else
    ``JOBTRACK_DATABASE_URL``, else ``sqlite:///jobtrack.db``. Other keywords are
    :class:`~jobtrack.settings.Settings` fields. One tracker per process: installing
    again replaces the previous one. No database I/O happens here; tables are created
    (or upgraded) on first use unless ``create_tables=False``.
    """
    resolved = Settings.resolve(app.conf, database_url=database_url, **settings)
    tracker = Tracker(resolved, store)
    _disconnect()
    set_active_tracker(tracker)
    if not resolved.enabled:
        log.info(
            "jobtrack is switched off (JOBTRACK_ENABLED=0 or enabled=False)",
            extra={"job_id": None, "action": "install"},
        )
        return tracker
    wiring = _Wiring(app, tracker)
    wiring.connect()
    _active.append(wiring)
    _register_reaper(app)
    return tracker


REAP_TASK = "jobtrack.reap"
PRUNE_TASK = "jobtrack.prune"
ALERTS_TASK = "jobtrack.alerts"


def _reap_task(self: Any, lost_after_s: float | None = None) -> int:
    tracker = active_tracker_or_none()
    if tracker is None:
        return 0
    lost = reap(
        tracker.store, tracker.settings.lost_after_s if lost_after_s is None else lost_after_s
    )
    if tracker.settings.reap_republish:
        republish_lost(self.app, tracker, lost)
    vanished = reap_vanished(self.app, tracker.store, tracker.settings.pending_lost_after_s)
    return len(lost) + len(vanished)


def _prune_task(self: Any) -> int:
    tracker = active_tracker_or_none()
    if tracker is None:
        return 0
    return sum(prune_by_retention(tracker.store, tracker.settings).values())


def _alerts_task(self: Any) -> int:
    """One pass of the alert rules the settings name (none named: nothing)."""
    from .alerts import AlertRunner, config_from

    tracker = active_tracker_or_none()
    config = config_from(tracker.settings) if tracker is not None else None
    if tracker is None or config is None:
        return 0
    return len(AlertRunner(tracker.store, config, tracker.settings).run_once().alerts)


def _register_reaper(app: Celery) -> None:
    """Tasks to add to ``beat_schedule``: ``jobtrack.reap`` marks lost jobs,
    ``jobtrack.prune`` applies the retention settings, ``jobtrack.alerts`` runs one pass
    of the alert rules.

    Module-level functions, bound to the running task: Celery resolves a task name to
    the first callable registered under it in the process, so a closure over one app
    would serve every app.
    """
    for name, fn in (
        (REAP_TASK, _reap_task),
        (PRUNE_TASK, _prune_task),
        (ALERTS_TASK, _alerts_task),
    ):
        if name not in app.tasks:
            app.task(name=name, bind=True, ignore_result=True)(fn)


def uninstall() -> None:
    """Disconnect the handlers and flush and close the active tracker."""
    _disconnect()
    set_active_tracker(None)


@atexit.register
def _flush_at_exit() -> None:
    tracker = active_tracker_or_none()
    if tracker is not None:
        try:
            tracker.writer.close()
        except Exception:
            log.exception("final tracking flush failed", extra={"job_id": None, "action": "exit"})
