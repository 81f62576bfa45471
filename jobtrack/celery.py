"""``install(app)``: Celery signals in, writer calls out.

Which process sends which signal (see docs/design.md):

* ``before_task_publish`` / ``after_task_publish`` — the publisher: the pending row, with
  queue, eta, ids and input, written once the message is sent (:mod:`jobtrack.publish`).
* ``task_prerun`` / ``task_retry`` / ``task_success`` / ``task_failure`` /
  ``task_internal_error`` / ``task_postrun`` — the pool child running the task
  (:mod:`jobtrack.runs`).
* ``task_failure`` with ``WorkerLostError`` or a hard time limit, ``task_revoked``,
  ``task_rejected``, ``task_unknown``, ``task_received`` — the worker's main process
  (here).

Handlers hand job rows to the writer; they never touch the database themselves (but
for one read by primary key at receipt of a job asked to stop) and never raise: a
tracking failure is logged with the job id. ``task_postrun`` with ``state=None`` (hard
time limit, terminate, eager propagation) is never taken for success.
"""

from __future__ import annotations

import atexit
import logging
from datetime import UTC, datetime
from typing import Any

from celery import Celery, signals
from celery.worker import state as worker_state
from celery.worker.control import control_command, ok

from .control import HOLD_COMMAND
from .logs import remove_capture
from .maintenance import WorkerUpkeep, prune_by_retention, reap, reap_vanished, republish_lost
from .models import JobStatus, JobUpdate, Stop
from .plans import Plans
from .publish import Publishing
from .runs import Runs
from .settings import Settings
from .store import Store
from .tracker import Tracker, active_tracker_or_none, handler_failed, set_active_tracker

__all__ = ["ALERTS_TASK", "PRUNE_TASK", "REAP_TASK", "install", "uninstall"]

log = logging.getLogger("jobtrack.celery")

_DISPATCH = "jobtrack"


def _now() -> datetime:
    return datetime.now(UTC)


class _Wiring:
    """The signal handlers of one installed tracker: the per-task ones are
    :class:`~jobtrack.publish.Publishing`'s and :class:`~jobtrack.runs.Runs`'; the worker
    main process's are here."""

    def __init__(self, app: Celery, tracker: Tracker) -> None:
        self.app = app
        self.tracker = tracker
        self.settings = tracker.settings
        self.writer = tracker.writer
        self.upkeep = WorkerUpkeep(app, tracker)
        self.plans = Plans(app, tracker.settings)
        self.publishing = Publishing(tracker, self.plans)
        self.runs = Runs(tracker, self.plans)
        #: Jobs this worker revoked at receipt because they are paused.
        self._pausing: set[str] = set()

    def handlers(self) -> dict[str, Any]:
        """Celery signal name -> its handler."""
        return {
            "before_task_publish": self.publishing.before,
            "after_task_publish": self.publishing.after,
            "task_prerun": self.runs.prerun,
            "task_retry": self.runs.retry,
            "task_success": self.runs.success,
            "task_failure": self.runs.failure,
            # Errors outside the task body, and every error in eager mode with
            # propagation (which sends no task_failure), arrive here.
            "task_internal_error": self.runs.failure,
            "task_postrun": self.runs.postrun,
            "task_revoked": self.on_revoked,
            "task_rejected": self.on_rejected,
            "task_unknown": self.on_unknown,
            "task_received": self.on_received,
            "worker_init": self.on_worker_init,
            "worker_ready": self.on_worker_ready,
            "worker_process_shutdown": self.on_process_shutdown,
            "worker_shutdown": self.on_worker_shutdown,
        }

    def _guard(self, action: str, job_id: Any, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            handler_failed(action, job_id)

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
        name = getattr(task, "name", None)
        recorded_input = (
            self.plans.get(name, task).input(
                getattr(request, "args", None),
                getattr(request, "kwargs", None),
                getattr(request, "argsrepr", None),
                getattr(request, "kwargsrepr", None),
            )
            if name is not None
            else None
        )
        attempt = int(getattr(request, "retries", 0) or 0)
        worker = getattr(request, "hostname", None)
        if job_id in self._pausing:  # dropped at receipt because it is paused
            self._pausing.discard(job_id)
            worker_state.revoked.discard(job_id)  # a resume publishes the same id
            paused = JobUpdate.transition(
                job_id,
                JobStatus.PAUSED,
                attempt,
                at=_now(),
                retries=attempt,
                worker=worker,
                input_data=recorded_input,
            )
            note = "paused: dropped from the queue by its worker"
            self.writer.update(paused, trace=attempt, note=note)
            return
        if expired:
            error = ("Expired", "expired before it could run")
        elif terminated:
            error = ("Revoked", f"revoked and terminated (signal {signum})")
        else:
            error = ("Revoked", "revoked")
        now = _now()
        update = JobUpdate.transition(
            job_id,
            JobStatus.CANCELLED,
            attempt,
            at=now,
            completed_at=now,
            retries=attempt,
            error_type=error[0],
            error_message=error[1],
            task_name=name,
            worker=worker,
            input_data=None if terminated else recorded_input,
        )
        self.writer.update(update, trace=attempt)

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
        update = JobUpdate.transition(
            job_id,
            JobStatus.FAILED,
            0,
            at=now,
            completed_at=now,
            error_type=kind,
            error_message=self.tracker.text(message),
            task_name=str(task_name) if task_name else None,
        )
        self.writer.update(update, trace=0)

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
            stop = self.tracker.store.requests.stops([job_id]).get(job_id)
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
        for name, handler in self.handlers().items():
            getattr(signals, name).connect(handler, weak=False, dispatch_uid=_DISPATCH)


_active: list[_Wiring] = []  # the installed wiring, for the remote control command


#: Every signal a wiring connects to (the names of :meth:`_Wiring.handlers`).
_SIGNALS = (
    "before_task_publish",
    "after_task_publish",
    "task_prerun",
    "task_retry",
    "task_success",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_revoked",
    "task_rejected",
    "task_unknown",
    "task_received",
    "worker_init",
    "worker_ready",
    "worker_process_shutdown",
    "worker_shutdown",
)


def _disconnect() -> None:
    for name in _SIGNALS:
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
