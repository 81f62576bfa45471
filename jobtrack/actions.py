"""Operator actions with an audit trail: one job, or every job a filter matches.

The CLI, the API and the dashboard all come here; this module calls
:mod:`jobtrack.control` for what one job's action does and the store for the rest.

* :func:`perform` runs one job's retry, cancel, pause, resume or delete and records it
  (who, what, when, the outcome) in ``jobtrack_actions``.
* :func:`start_bulk` records a bulk action; :class:`BulkRun` carries it out. It
  snapshots the matching ids first (jobs arriving later are not swept in), works in
  batches of ``action_batch_size``, acts on at most ``action_rate_per_s`` jobs a second,
  and is itself tracked as a jobtrack job (``jobtrack-action-<id>``), so its progress,
  errors and history show like any job's. A run that dies can be resumed (``jobtrack
  actions resume``): every target's state is committed per batch, a retry's new job id
  is derived from the action and the job, so a resumed run never makes a second job for
  one target; the one batch that was being published when it died is settled by
  evidence (see :meth:`BulkRun._sent_already` and docs/design.md).
* :func:`replay_job` starts a new job from a job's input, edited or not, linked to it
  (``replay_of``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import fleet, leases
from .brokers import find_messages
from .control import (
    ACTION_HEADER,
    INPUT_HEADER,
    CannotControl,
    NotReplayable,
    cancel_job,
    pause_job,
    replayable_input,
    resume_job,
    retry_job,
)
from .errors import JobNotFound, JobtrackError
from .models import (
    ACTION_JOB_TYPE,
    BULK_ACTIONS,
    PAUSABLE,
    RETRYABLE,
    TERMINAL,
    Action,
    ActionTarget,
    Batch,
    Event,
    Job,
    JobFilter,
    JobStatus,
    JobUpdate,
)
from .payload import REDACTED, TRUNCATED
from .store.actions import TargetState, WorkItem
from .tracker import Tracker

__all__ = [
    "ACTION_HEADER",
    "ACTION_JOB_TYPE",
    "CLI",
    "Actor",
    "BulkRun",
    "bulk_filter",
    "change_workers",
    "delete_job",
    "perform",
    "replay_job",
    "start_bulk",
]

log = logging.getLogger("jobtrack.actions")

#: Retries published by a bulk action get ids derived from the action and the job, in
#: this namespace: a resumed run that sends one again makes no second job.
_RETRY_IDS = uuid.UUID("6a6f6274-7261-636b-2d62-756c6b726574")
#: How long a run's lease on its action lasts unless renewed (each batch renews it).
LEASE_TTL_S = 30.0


@dataclass(frozen=True)
class Actor:
    """Who acts: a token's name and role (and the owner it is bound to), or ``cli``."""

    name: str
    role: str = "operator"
    owner_id: str | None = None


#: The command line acts as this.
CLI = Actor("cli")


# -- one job -----------------------------------------------------------------------------


def delete_job(tracker: Tracker, job_id: str) -> str:
    """Delete a finished (or paused) job with its items and events."""
    if tracker.store.actions.delete_jobs([job_id]):
        return "deleted"
    job = tracker.store.get_job(job_id)  # JobNotFound when it is not there
    raise CannotControl(
        "delete",
        job_id,
        f"it is {job.status.value}; a job a worker may still run is not deleted (cancel it first)",
    )


_SINGLE: dict[str, Callable[..., str]] = {
    "retry": lambda app, tracker, job_id, **o: retry_job(app, tracker, job_id, **o),
    "cancel": lambda app, tracker, job_id, **o: cancel_job(app, tracker, job_id, **o),
    "pause": lambda app, tracker, job_id, **o: pause_job(app, tracker, job_id),
    "resume": lambda app, tracker, job_id, **o: resume_job(app, tracker, job_id),
    "delete": lambda app, tracker, job_id, **o: delete_job(tracker, job_id),
}


def perform(
    app: Any, tracker: Tracker, actor: Actor, action: str, job_id: str, **options: Any
) -> str:
    """Do ``action`` to one job and add it to the audit trail; returns what happened
    (a retry: the new job's id). What cannot be done is recorded too, then raised."""
    try:
        result = _SINGLE[action](app, tracker, job_id, **options)
    except JobNotFound:
        raise
    except JobtrackError as exc:
        _record_single(tracker, actor, action, job_id, options, TargetState.FAILED, None, str(exc))
        raise
    result_id = result if action == "retry" else None
    outcome = f"new job {result}" if action == "retry" and result != job_id else result
    if action == "retry" and result != job_id:  # (a retry of failed items reruns the job)
        _mark_retried(tracker, job_id, result)
    _record_single(tracker, actor, action, job_id, options, TargetState.DONE, result_id, outcome)
    return result


def _mark_retried(tracker: Tracker, job_id: str, new_id: str) -> None:
    """The failure is handled: its ``retried_by`` names the new job."""
    try:
        tracker.store.actions.mark_retried([(job_id, new_id)])
    except JobtrackError:  # the retry happened; the link is what is missing
        log.exception(
            "could not link the job to its retry", extra={"job_id": job_id, "action": "retry"}
        )


def _record_single(
    tracker: Tracker,
    actor: Actor,
    action: str,
    job_id: str,
    options: dict[str, Any],
    state: str,
    result_id: str | None,
    outcome: str,
) -> None:
    try:
        tracker.store.actions.record_action(
            action,
            actor=actor.name,
            role=actor.role,
            owner_id=actor.owner_id,
            where=JobFilter(ids=(job_id,)),
            options={k: v for k, v in options.items() if v} or None,
            status="completed" if state == TargetState.DONE else "failed",
            targets=[ActionTarget(0, job_id, state, result_id=result_id, outcome=outcome)],
            outcome=outcome,
        )
    except JobtrackError:  # the action happened; a missing audit line must not hide it
        log.exception(
            "could not record the action in the audit trail",
            extra={"job_id": job_id, "action": action},
        )


def _new_job_like(job: Job, new_id: str, **fields: Any) -> JobUpdate:
    """A pending row for ``new_id`` running ``job``'s task, described as ``job`` is."""
    return JobUpdate.transition(
        new_id,
        JobStatus.PENDING,
        task_name=job.task_name,
        job_type=job.job_type,
        job_subtype=job.job_subtype,
        name=job.name,
        owner_id=job.owner_id,
        queue=job.queue,
        ref=job.ref,
        **fields,
    )


# -- workers and queues ------------------------------------------------------------------


def change_workers(app: Any, tracker: Tracker, actor: Actor, action: str, **given: Any) -> str:
    """Change what the live workers do, through Celery's remote control, and add it to
    the audit trail: ``queue-pause`` / ``queue-resume`` (``queue``; a pause records the
    workers it stopped, and the resume after it starts those again), ``worker-scale``
    (``worker``, ``concurrency``), ``rate-limit`` (``task``, ``rate``). Returns what the
    workers said; what they refused (or nobody answered) is recorded too, then raised
    (:class:`~jobtrack.errors.WorkersRefused`)."""
    given = dict(given)

    def pause() -> str:
        outcome, workers = fleet.pause_queue(app, given["queue"])
        given["workers"] = workers  # what a resume starts again
        return outcome

    def resume() -> str:
        outcome, workers = fleet.resume_queue(
            app, given["queue"], workers=_paused_on(tracker, given["queue"])
        )
        given["workers"] = workers
        return outcome

    calls: dict[str, Callable[[], str]] = {
        "queue-pause": pause,
        "queue-resume": resume,
        "worker-scale": lambda: fleet.scale_pool(app, given["worker"], given["concurrency"]),
        "rate-limit": lambda: fleet.rate_limit(app, given["task"], given["rate"]),
    }
    if action not in calls:
        raise ValueError(f"unknown control {action!r}: one of {', '.join(calls)}")
    try:
        outcome = calls[action]()
    except JobtrackError as exc:
        _record_control(tracker, actor, action, given, "failed", str(exc))
        raise
    _record_control(tracker, actor, action, given, "completed", outcome)
    return outcome


def _paused_on(tracker: Tracker, queue: str) -> list[str] | None:
    """The workers the queue's last pause stopped (if its last control was a pause)."""
    for action in tracker.store.actions.list_actions(limit=100, kinds=fleet.QUEUE_ACTIONS):
        if (action.options or {}).get("queue") != queue or action.status != "completed":
            continue
        workers = (action.options or {}).get("workers")
        if action.action == "queue-pause" and isinstance(workers, list):
            return [str(w) for w in workers]
        return None
    return None


def _record_control(
    tracker: Tracker, actor: Actor, action: str, given: dict[str, Any], status: str, outcome: str
) -> None:
    try:
        tracker.store.actions.record_action(
            action,
            actor=actor.name,
            role=actor.role,
            owner_id=actor.owner_id,
            options=given,
            status=status,
            outcome=outcome,
        )
    except JobtrackError:  # it happened; a missing audit line must not hide it
        log.exception(
            "could not record the control in the audit trail",
            extra={"job_id": None, "action": action},
        )


# -- replay ------------------------------------------------------------------------------


def replay_job(
    app: Any,
    tracker: Tracker,
    actor: Actor,
    job_id: str,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    allowed: Sequence[str] | None = None,
) -> str:
    """Start a new job (new id) running ``job_id``'s task with its recorded arguments,
    or with ``args``/``kwargs`` given instead (an operator's edit); the new job's
    ``replay_of`` names the original. Refused for input that was not stored whole
    (redacted or cut) unless complete arguments are given; refused for given arguments
    that still hold a redaction or cut marker. Returns the new job's id.

    With ``allowed`` (the web's ``web_publishable_tasks``), arguments that differ from
    the recorded ones start a task with input of the caller's choosing, as
    ``POST /api/jobs`` does, and obey the same list: :class:`NotReplayable` for a task
    not in it. A replay as recorded is a retry and needs no listing."""
    job = tracker.store.get_job(job_id)
    if job.task_name is None:
        raise CannotControl("replay", job_id, "its task name is not recorded")
    recorded = replayable_input(job.input_data)
    if allowed is not None and job.task_name not in allowed:
        given = (list(args or ()), dict(kwargs or {}))
        if (args is not None or kwargs is not None) and given != recorded:
            raise NotReplayable(job.task_name)
    if args is None and kwargs is None:
        if recorded is None:
            raise CannotControl(
                "replay",
                job_id,
                "its arguments were not stored whole (redacted or cut): give the complete "
                "arguments",
            )
        args, kwargs = recorded
    args, kwargs = list(args or ()), dict(kwargs or {})
    if REDACTED in str([args, kwargs]) or TRUNCATED in str([args, kwargs]):
        raise CannotControl(
            "replay",
            job_id,
            f"the arguments still hold {REDACTED!r} or {TRUNCATED!r}: give the complete values",
        )
    new_id = str(uuid.uuid4())
    update = _new_job_like(job, new_id, replay_of=job_id, metadata={"replay_of": job_id})
    tracker.store.create_job(tracker.writer.clean(update))
    try:
        app.send_task(job.task_name, args=args, kwargs=kwargs, task_id=new_id, queue=job.queue)
    except Exception as exc:
        tracker.fail_job(new_id, f"could not be published: {exc}")
        raise
    _mark_retried(tracker, job_id, new_id)
    _record_single(
        tracker, actor, "replay", job_id, {}, TargetState.DONE, new_id, f"new job {new_id}"
    )
    return new_id


# -- every job a filter matches ----------------------------------------------------------


def bulk_filter(action: str, where: JobFilter, *, include_retried: bool = False) -> JobFilter:
    """What a bulk action covers of what ``where`` matches: a retry leaves out the jobs
    an operator retried (or replayed) already, unless ``include_retried``."""
    if action == "retry" and not include_retried and where.handled is None:
        return where.where(handled=False)
    return where


def start_bulk(
    tracker: Tracker,
    actor: Actor,
    action: str,
    where: JobFilter,
    *,
    every: bool = False,
    options: dict[str, Any] | None = None,
) -> int:
    """Record a bulk action on every job ``where`` matches (run it with
    :class:`BulkRun`); returns its id. An empty filter is refused (``ValueError``)
    unless ``every`` says "every job" explicitly. A retry covers only the jobs not
    retried already (see :func:`bulk_filter`) unless ``options`` says
    ``include_retried``."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(BULK_ACTIONS)}")
    if where.is_empty() and not every:
        raise ValueError("an empty filter: name what to act on, or say all explicitly")
    where = bulk_filter(action, where, include_retried=bool((options or {}).get("include_retried")))
    return tracker.store.actions.record_action(
        action,
        actor=actor.name,
        role=actor.role,
        owner_id=actor.owner_id,
        where=where,  # the store adds the owner scope of an owner-bound actor
        options=options,
        bulk=True,
        status="pending",
    )


class _LeaseLost(CannotControl):
    """Another process took the action's lease (this run stalled past it)."""


def _batched(producer: Any, size: int) -> AbstractContextManager[Any]:
    """The producer's publishes sent together (one round trip on Redis), where Kombu
    can (5.7 and newer); else one by one. A publish that fails stops the run with its
    batch still marked as being sent: the resumed run settles it by evidence."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=max(size, 1)) if batch is not None else contextlib.nullcontext()


def _retry_id(action_id: int, job_id: str, sends: int) -> str:
    """The id of the retry of ``job_id`` in an action, derived (a resumed run derives the
    same); its ``sends``-th send after a run that died gets an id of its own."""
    name = f"{action_id}:{job_id}" + (f":{sends + 1}" if sends else "")
    return str(uuid.uuid5(_RETRY_IDS, name))


def _outcome(item: WorkItem, state: str, text: str | None = None) -> tuple[str, str, str | None]:
    return (item.job_id, state, text)


class BulkRun:
    """Carries out one recorded bulk action (see the module docstring). ``app`` is the
    Celery app (not needed to delete)."""

    def __init__(
        self,
        app: Any,
        tracker: Tracker,
        action_id: int,
        *,
        rate_per_s: float | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[Action], None] | None = None,
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.store = tracker.store
        self.action_id = action_id
        self.rate_per_s = rate_per_s or tracker.settings.action_rate_per_s
        self.batch_size = batch_size or tracker.settings.action_batch_size
        self.on_batch = on_batch
        self.holder = leases.holder_id()
        self._started = 0.0
        self._acted = 0
        self._attempt = 0

    def run(self) -> Action:
        """Run (or resume) the action to its end; returns it as it ended. Raises
        :class:`CannotControl` while another process runs it."""
        lease = f"action:{self.action_id}"
        if not leases.take(self.store, lease, self.holder, LEASE_TTL_S):
            raise CannotControl("run", f"action {self.action_id}", "another process is running it")
        action = self.store.actions.get_action(self.action_id)
        if action.status == "completed" or not action.bulk:
            return action
        if action.status == "failed":  # stopped on an error: resumed
            self.store.actions.reopen_action(self.action_id)
        if action.action != "delete" and self.app is None:
            raise CannotControl(
                action.action, f"action {self.action_id}", "it needs the Celery app"
            )
        job_id = action.job_id or f"jobtrack-action-{self.action_id}"
        try:
            matched = self.store.actions.snapshot_targets(
                self.action_id, JobFilter.from_json(action.filter)
            )
            self._track_start(action, job_id, matched)
            handle = getattr(self, f"_{action.action}")
            self._started = time.monotonic()
            for batch in self._batches():
                action = self.store.actions.settle_targets(self.action_id, handle(batch, action))
                self._track_progress(job_id, action)
                if not self.store.leases.take(lease, self.holder, LEASE_TTL_S):
                    raise _LeaseLost("run", f"action {self.action_id}", "its lease was taken")
                if self.on_batch is not None:
                    self.on_batch(action)
        except _LeaseLost:
            raise  # another process runs it now: its record is that process's to keep
        except BaseException as exc:
            self._track_failure(job_id, exc)
            raise
        summary = f"{action.done} done, {action.skipped} skipped, {action.failed} failed"
        self.store.actions.finish_action(self.action_id, "completed", summary)
        self._finish(job_id, action)
        return self.store.actions.get_action(self.action_id)

    def _batches(self) -> Iterator[list[WorkItem]]:
        """The open targets, a batch at a time, by key: every target behind the last
        batch is settled when the next is asked for, so nothing is read twice."""
        batch = self.store.actions.open_targets(self.action_id, limit=self.batch_size)
        while batch:
            yield batch
            batch = self.store.actions.open_targets(
                self.action_id, limit=self.batch_size, after=batch[-1].job_id
            )

    # -- tracking the run as a job ---------------------------------------------------------

    def _track_start(self, action: Action, job_id: str, matched: int) -> None:
        """The run's job: running, in the attempt after the run that stopped on an
        error (a run killed outright resumes in its attempt, even once reaped lost)."""
        if action.job_id is None:
            self.store.actions.set_action_job(self.action_id, job_id)
        self.tracker.upsert_job(
            job_id,
            job_type=ACTION_JOB_TYPE,
            job_subtype=action.action,
            name=f"{action.action.capitalize()} {matched:,} matching jobs (action #{action.id})",
            owner_id=action.owner_id,
            metadata={"action_id": action.id, "actor": action.actor, "filter": action.filter},
            total_items=matched,
        )
        before = self.store.get_job(job_id)
        self._attempt = before.retries + (1 if before.status is JobStatus.RETRYING else 0)
        self._beat(job_id, started=True)

    def _write_run(
        self,
        job_id: str,
        status: JobStatus,
        *,
        event: bool,
        action: Action | None = None,
        **fields: Any,
    ) -> None:
        """The run's job entering (or beating in) ``status`` in this run's attempt, with
        its trace entry when ``event``, and its counts from ``action``."""
        update = JobUpdate.transition(
            job_id, status, self._attempt, retries=self._attempt, **fields
        )
        events = [Event.of(update, self._attempt).row()] if event else []
        self.store.write_batch(Batch([update.row()], events))
        if action is not None:
            self.store.set_counts(
                job_id,
                processed=action.done + action.skipped + action.failed,
                failed=action.failed,
                skipped=action.skipped,
            )

    def _beat(self, job_id: str, *, started: bool = False, action: Action | None = None) -> None:
        now = datetime.now(UTC)
        settled = 0 if action is None else action.done + action.skipped + action.failed
        self._write_run(
            job_id,
            JobStatus.RUNNING,
            event=started,
            action=action,
            at=now,
            started_at=now if started else None,
            worker=self.holder,
            pid=os.getpid(),
            heartbeat_at=now,
            progress_percent=100.0 * settled / action.matched
            if action and action.matched
            else None,
        )

    def _track_progress(self, job_id: str, action: Action) -> None:
        self._beat(job_id, action=action)

    def _finish(self, job_id: str, action: Action) -> None:
        now = datetime.now(UTC)
        self._write_run(
            job_id,
            JobStatus.COMPLETED,
            event=True,
            action=action,
            at=now,
            completed_at=now,
            duration_ms=int((time.monotonic() - self._started) * 1000),
            progress_percent=100.0,
            output_data={"done": action.done, "skipped": action.skipped, "failed": action.failed},
        )

    def _track_failure(self, job_id: str, exc: BaseException) -> None:
        """The run stopped on an error: the action is failed (resumable) and its job
        retrying, with the error."""
        try:
            self.store.actions.finish_action(
                self.action_id, "failed", f"{type(exc).__name__}: {exc}"
            )
            self._write_run(
                job_id,
                JobStatus.RETRYING,
                event=True,
                error_type=type(exc).__name__,
                error_message=self.tracker.text(
                    f"{exc} (resume with: jobtrack actions resume {self.action_id})"
                ),
            )
        except JobtrackError:
            log.exception(
                "could not record the failure of a bulk action",
                extra={"job_id": job_id, "action": "bulk"},
            )

    # -- pacing ----------------------------------------------------------------------------

    def _pace(self) -> None:
        """Hold the run to ``rate_per_s`` jobs a second."""
        self._acted += 1
        ahead = self._acted / self.rate_per_s - (time.monotonic() - self._started)
        if ahead > 0:
            time.sleep(ahead)

    # -- what each action does to a batch ----------------------------------------------------

    def _retry(self, batch: list[WorkItem], action: Action) -> list[tuple[str, str, str | None]]:
        outcomes, ready, superseded = [], [], []
        sent = self._sent_already([item for item in batch if item.state == TargetState.SENDING])
        again = bool((action.options or {}).get("include_retried"))
        for item in batch:
            job = item.job
            if item.result_id in sent:  # published before the run that sent it died
                outcomes.append(_outcome(item, TargetState.DONE))
            elif job is None:
                outcomes.append(_outcome(item, TargetState.SKIPPED, "gone: deleted meanwhile"))
            elif job.retried_by and job.retried_by != item.result_id and not again:
                outcomes.append(  # retried meanwhile, by another action
                    _outcome(item, TargetState.SKIPPED, f"retried already, as {job.retried_by}")
                )
            elif job.status not in RETRYABLE:
                outcomes.append(
                    _outcome(
                        item,
                        TargetState.SKIPPED,
                        f"it is {job.status.value}; only failed, cancelled and lost jobs are "
                        "retried",
                    )
                )
            elif job.task_name is None or (replay := replayable_input(job.input_data)) is None:
                outcomes.append(
                    _outcome(item, TargetState.SKIPPED, "its input was not stored whole")
                )
            else:
                new_id = _retry_id(action.id, job.id, item.sends)
                if item.state == TargetState.SENDING and item.result_id:
                    superseded.append((item.result_id, new_id))
                ready.append((item, job, replay, new_id))
        self._supersede(superseded)
        self.store.actions.mark_sending(
            self.action_id,
            [(item.job_id, new_id) for item, _, _, new_id in ready],
            [self._retry_row(job, new_id, action) for item, job, _, new_id in ready],
        )
        if not ready:
            return outcomes
        with self.app.producer_or_acquire() as producer, _batched(producer, len(ready)):
            for item, job, replay, new_id in ready:
                self._pace()
                self.app.send_task(
                    job.task_name,
                    args=replay[0],
                    kwargs=replay[1],
                    task_id=new_id,
                    queue=job.queue,
                    headers={ACTION_HEADER: action.id, INPUT_HEADER: 1},
                    producer=producer,
                )
                outcomes.append(_outcome(item, TargetState.DONE))  # its id: result_id
        return outcomes

    def _sent_already(self, uncertain: list[WorkItem]) -> set[str]:
        """Of the retries a run that died was sending, those known to have gone out: a
        worker has their row, or the broker holds their message (Redis)."""
        ids = {item.result_id for item in uncertain if item.result_id}
        if not ids:
            return set()
        rows = self.store.list_jobs(JobFilter(ids=tuple(ids)), limit=len(ids))
        known = {
            row.id
            for row in rows
            if row.status is not JobStatus.PENDING or row.worker or row.started_at
        }
        if ids - known:
            default = self.app.conf.task_default_queue
            queues = {(item.job.queue if item.job else None) or default for item in uncertain}
            known |= find_messages(self.app, queues, ids - known) or set()
        return known

    def _supersede(self, superseded: list[tuple[str, str]]) -> None:
        """Retries a dead run may or may not have sent (no sign of them anywhere) are
        cancelled for good (a worker that meets one skips it: the durable cancel) and
        sent again under a new id: one target never runs twice."""
        for old, new in superseded:
            self.store.requests.cancel(old, f"superseded by {new}: its bulk action was resumed")
        if superseded:
            self.app.control.revoke([old for old, _ in superseded])

    @staticmethod
    def _retry_row(job: Job, new_id: str, action: Action) -> JobUpdate:
        """The new job's row, with the old one's input (values read from the jobs table,
        cleaned when they were stored)."""
        return _new_job_like(
            job,
            new_id,
            input_data=job.input_data,
            max_retries=job.max_retries,
            metadata={"retry_of": job.id, "action_id": action.id},
        )

    def _each(
        self, batch: list[WorkItem], act: Callable[[Job], str], skip: Callable[[Job], str | None]
    ) -> list[tuple[str, str, str | None]]:
        outcomes = []
        for item in batch:
            job = item.job
            reason = "gone: deleted meanwhile" if job is None else skip(job)
            if reason is not None or job is None:
                outcomes.append(_outcome(item, TargetState.SKIPPED, reason))
                continue
            self._pace()
            try:
                outcomes.append(_outcome(item, TargetState.DONE, act(job)))
            except CannotControl as exc:
                outcomes.append(_outcome(item, TargetState.SKIPPED, str(exc)))
            except JobtrackError as exc:
                outcomes.append(_outcome(item, TargetState.FAILED, str(exc)))
        return outcomes

    def _cancel(self, batch: list[WorkItem], action: Action) -> list[tuple[str, str, str | None]]:
        terminate = bool((action.options or {}).get("terminate"))
        return self._each(
            batch,
            lambda job: cancel_job(self.app, self.tracker, job.id, terminate=terminate),
            lambda job: f"already {job.status.value}" if job.status in TERMINAL else None,
        )

    def _pause(self, batch: list[WorkItem], action: Action) -> list[tuple[str, str, str | None]]:
        return self._each(
            batch,
            lambda job: pause_job(self.app, self.tracker, job.id),
            lambda job: None if job.status in PAUSABLE else f"it is {job.status.value}",
        )

    def _resume(self, batch: list[WorkItem], action: Action) -> list[tuple[str, str, str | None]]:
        return self._each(
            batch,
            lambda job: resume_job(self.app, self.tracker, job.id),
            lambda job: (
                None
                if job.status is JobStatus.PAUSED or job.pause_requested_at
                else f"it is {job.status.value}"
            ),
        )

    def _delete(self, batch: list[WorkItem], action: Action) -> list[tuple[str, str, str | None]]:
        present = [item for item in batch if item.job is not None]
        deleted = set(self.store.actions.delete_jobs([item.job_id for item in present]))
        outcomes = []
        for item in batch:
            if item.job_id in deleted:
                outcomes.append(_outcome(item, TargetState.DONE, "deleted"))
            elif item.job is None:
                outcomes.append(_outcome(item, TargetState.SKIPPED, "gone: deleted meanwhile"))
            else:
                outcomes.append(
                    _outcome(
                        item,
                        TargetState.SKIPPED,
                        f"it is {item.job.status.value}; cancel it before deleting it",
                    )
                )
        return outcomes


def run_in_background(
    app: Any, tracker: Tracker, action_id: int, **options: Any
) -> threading.Thread:
    """Run a bulk action in a thread of this process (the web app's way: the request
    answers at once with the action's id); ``options`` go to :class:`BulkRun`."""

    def target() -> None:
        try:
            BulkRun(app, tracker, action_id, **options).run()
        except Exception:
            log.exception(
                "bulk action failed",
                extra={"job_id": f"jobtrack-action-{action_id}", "action": "bulk"},
            )

    thread = threading.Thread(target=target, name=f"jobtrack-action-{action_id}", daemon=True)
    thread.start()
    return thread
