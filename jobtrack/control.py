"""Acting on jobs through the Celery app: retry, cancel, pause and resume.

Used by the CLI (``jobtrack -A app retry|cancel|pause|resume``) and the web API. Reads and
writes go through the tracker's store; publishing, revoking and broadcasting go through
the app, as Celery's own tools do. What cannot be done raises :class:`CannotControl`
(the API answers 409) or :class:`~jobtrack.errors.JobNotFound` (404).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import JobtrackError
from .job import job_spec
from .models import PAUSABLE, RETRYABLE, Job, JobStatus, JobUpdate, Stop
from .payload import REDACTED, TRUNCATED
from .tracker import Tracker

__all__ = [
    "ACTIONS",
    "ACTION_HEADER",
    "HOLD_COMMAND",
    "INPUT_HEADER",
    "RETRY_ITEMS_HEADER",
    "SENT_HEADER",
    "CannotControl",
    "CannotRetry",
    "JobControl",
    "NotPublishable",
    "NotReplayable",
    "UnknownTask",
    "cancel_job",
    "controller",
    "pause_job",
    "publish_again",
    "replayable_input",
    "resume_job",
    "retry_job",
    "stamp",
    "stamp_time",
    "start_job",
]

log = logging.getLogger("jobtrack.control")

#: What :class:`JobControl` does, by name (the API's and the CLI's words).
ACTIONS = ("retry", "cancel", "pause", "resume")
#: Message header of an operator's retry of a job's failed items: the worker reads the
#: failed keys (``job.retry_items``) before the task body runs.
RETRY_ITEMS_HEADER = "jobtrack_retry_items"
#: Message header a tracking publisher stamps each message with: when it was published
#: (microseconds since the epoch: :func:`stamp`, :func:`stamp_time`). Every row of the
#: run the message starts carries it (``sent_at``), so a job's id published again after
#: its job ended is told, as a new run, from a late write of the earlier one. A retry
#: keeps its run's stamp (Celery copies the headers), and so does jobtrack's own
#: publishing of a job again under its id.
SENT_HEADER = "jobtrack_sent"
#: Message header a tracking publisher sets once it has recorded the input (a custom
#: header: Celery hands it to the worker as an attribute of ``task.request``).
INPUT_HEADER = "jobtrack_input"
#: Message header of a retry a bulk action publishes (its value: the action's id). The
#: action wrote the new job's row (with its input) itself, so the publish hook skips it,
#: and takes the header off (Celery copies a message's headers into ``self.retry()``).
ACTION_HEADER = "jobtrack_action"
#: The remote control command a pause broadcasts: workers learn of it at once (the
#: Celery wiring registers it in every worker).
HOLD_COMMAND = "jobtrack_hold"
_NOT_STORED_WHOLE = "its arguments were not stored whole (redacted, cut, or hidden by argsrepr)"


class CannotControl(JobtrackError, ValueError):
    """The job cannot take this action now (its state, or its recorded input)."""

    def __init__(self, action: str, job_id: str, reason: str) -> None:
        self.action = action
        self.job_id = job_id
        super().__init__(f"cannot {action} job {job_id}: {reason}")


class CannotRetry(CannotControl):
    """The job cannot be published again (its state, or its recorded input)."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__("retry", job_id, reason)


class UnknownTask(JobtrackError, LookupError):
    """No task of this name is registered in the app."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no task named {name!r} is registered in the app")


class NotReplayable(JobtrackError, PermissionError):
    """Replaying with edited arguments starts a task the settings do not let this
    caller start (``web_publishable_tasks``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"replaying with edited arguments starts task {name!r}, which is not in "
            "web_publishable_tasks (replay it as recorded, or list the task)"
        )


class NotPublishable(JobtrackError, PermissionError):
    """The task is not one the settings let a caller start (``web_publishable_tasks``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"task {name!r} is not in web_publishable_tasks")


#: Ids of jobs started with an idempotency key are derived from it, in this namespace.
_IDEMPOTENT = uuid.UUID("6a6f6274-7261-636b-2d69-64656d706f74")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def stamp(moment: datetime) -> int:
    """A run's stamp as :data:`SENT_HEADER` carries it: microseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND


def stamp_time(value: Any) -> datetime | None:
    """The time of a :data:`SENT_HEADER` stamp, or None for none or one that is not a
    stamp. Exactly the time it was made from: a float holds today's microseconds since
    the epoch to a quarter of one, and the conversion rounds to the nearest."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1e6, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def start_job(
    app: Any,
    tracker: Tracker,
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    allowed: Sequence[str] = (),
    queue: str | None = None,
    countdown: float | None = None,
    owner_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Start ``task_name`` as a job; returns (its row, whether this call started it).

    The row is committed ``pending`` before the task is published, so whoever gets the
    id can read it at once. ``owner_id`` (an owner-bound caller's) wins over the task's
    ``@track(owner=...)``. With ``idempotency_key`` the job id derives from the key and
    the caller, so repeating the call finds the first job instead of starting another.
    If publishing fails the job is marked failed and the error raised.

    A name not in ``allowed`` raises :class:`NotPublishable` whether or not a task of
    that name exists, so a caller cannot learn the app's task names by trying them;
    :class:`UnknownTask` is only for an allowed name the app does not register.
    """
    if task_name not in allowed:  # before the registry: the same answer for any name
        raise NotPublishable(task_name)
    task = app.tasks.get(task_name)
    if task is None:
        raise UnknownTask(task_name)
    kwargs = dict(kwargs or {})
    job_id = (
        str(uuid.uuid5(_IDEMPOTENT, f"{owner_id or ''}\x00{idempotency_key}"))
        if idempotency_key
        else str(uuid.uuid4())
    )
    spec = job_spec(task)
    described = spec.describe(getattr(task, "run", None), args, kwargs) if spec else {}
    if owner_id is not None:
        described["owner_id"] = owner_id
    now = datetime.now(UTC)
    update = JobUpdate.transition(
        job_id,
        JobStatus.PENDING,
        at=now,
        task_name=task_name,
        queue=queue,
        eta=now + timedelta(seconds=countdown) if countdown else None,
        **described,  # the input is recorded by the publish (redacted as always)
    )
    if not tracker.store.create_job(tracker.writer.clean(update)):
        return tracker.store.get_job(job_id), False
    try:
        app.send_task(
            task_name,
            args=list(args),
            kwargs=kwargs,
            task_id=job_id,
            queue=queue,
            countdown=countdown,
        )
    except Exception as exc:
        tracker.fail_job(job_id, f"could not be published: {exc}")
        raise
    return tracker.store.get_job(job_id), True


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


def _replay(job: Job) -> tuple[list[Any], dict[str, Any]] | None:
    replay = replayable_input(job.input_data)
    return replay if job.task_name is not None else None


def retry_job(app: Any, tracker: Tracker, job_id: str, *, failed_items: bool = False) -> str:
    """Publish a job again; returns the id it runs under.

    By default a failed, cancelled or lost job is published with its original
    arguments as a new job whose ``metadata`` names the old one (``retry_of``); the old
    row and trace stay as they are. With ``failed_items``, a finished job with failed
    items runs again under its own id, as its next attempt, with ``job.retry_items``
    set to exactly the failed keys: items that succeed replace their failed rows.
    """
    job = tracker.store.get_job(job_id)
    if failed_items:
        return _retry_items(app, tracker, job)
    if job.status not in RETRYABLE:
        raise CannotRetry(
            job_id, f"it is {job.status.value}; only failed, cancelled and lost jobs can be retried"
        )
    replay = _replay(job)
    if replay is None:
        raise CannotRetry(job_id, _NOT_STORED_WHOLE)
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


def publish_again(
    app: Any,
    job: Job,
    replay: tuple[list[Any], dict[str, Any]],
    attempt: int,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish ``job`` again under its own id, as ``attempt`` (Celery's
    ``request.retries``), with the recorded arguments, to the queue it ran from."""
    assert job.task_name is not None
    if job.sent_at is not None:  # the same run again, not a new one (see SENT_HEADER)
        headers = {**(headers or {}), SENT_HEADER: stamp(job.sent_at)}
    app.send_task(
        job.task_name,
        args=replay[0],
        kwargs=replay[1],
        task_id=job.id,
        queue=job.queue,
        retries=attempt,
        headers=headers,
    )


def _retry_items(app: Any, tracker: Tracker, job: Job) -> str:
    replay = _replay(job)
    if replay is None:
        raise CannotRetry(job.id, _NOT_STORED_WHOLE)
    try:
        attempt, _failed = tracker.store.requests.reopen_for_items(job.id)
    except ValueError as exc:
        raise CannotRetry(job.id, str(exc)) from exc
    publish_again(app, job, replay, attempt, {RETRY_ITEMS_HEADER: 1})
    return job.id


def cancel_job(app: Any, tracker: Tracker, job_id: str, *, terminate: bool = False) -> str:
    """Cancel a job; returns what happened, in words.

    The request is kept in the row (``cancel_requested_at``) as well as broadcast to the
    workers online now, so a worker that starts later still skips the job. A job not
    running (pending, retrying, paused, lost) is marked cancelled now (a worker that meets it
    skips it and reports the same; if one runs it anyway, its real outcome replaces the
    cancel). A running job stops at its next handle call (``progress()``, ``item()``,
    ``check()`` ...: read with its heartbeat, in every pool) and ends cancelled; with
    ``terminate`` its pool process is also sent SIGTERM at once (prefork).
    """
    job = tracker.store.get_job(job_id)
    if job.status.is_terminal:
        return f"already {job.status.value}"
    status = tracker.store.requests.cancel(job_id, "revoked before it ran")
    app.control.revoke(job_id, terminate=terminate)
    if status is JobStatus.CANCELLED:
        return "cancelled"
    if terminate:
        return "terminating"
    return "cancel requested; it stops at its next progress, item or check call"


def pause_job(app: Any, tracker: Tracker, job_id: str) -> str:
    """Pause a job; returns what happened, in words.

    A queued job (pending, or retrying: waiting for its next attempt) is paused at once:
    workers are told (a broadcast, and the row they read when they start) and drop it
    when it reaches them. A running job stops at its next handle call after the request
    reaches it with its heartbeat (within ``heartbeat_interval_s``) and reads ``paused``;
    until then the row shows the request (``pause_requested_at``).
    """
    job = tracker.store.get_job(job_id)
    if job.status is JobStatus.PAUSED:
        return "already paused"
    if job.status not in PAUSABLE:
        raise CannotControl(
            "pause",
            job_id,
            f"it is {job.status.value}; only pending, running and retrying jobs can be paused",
        )
    status = tracker.store.requests.pause(job_id)
    if status not in (*PAUSABLE, JobStatus.PAUSED):
        raise CannotControl("pause", job_id, f"it is {status.value} now")
    try:  # a hint, for speed: workers also read the request from the row
        app.control.broadcast(HOLD_COMMAND, arguments={"job_id": job_id, "stop": Stop.PAUSE.value})
    except Exception as exc:
        log.warning(
            "pause recorded; telling the workers at once failed (%s): they read it from "
            "the database within a heartbeat interval",
            exc,
            extra={"job_id": job_id, "action": "pause"},
        )
    if status is JobStatus.PAUSED:
        return "paused"
    return "pause requested; it stops at its next progress, item or check call"


def resume_job(app: Any, tracker: Tracker, job_id: str) -> str:
    """Resume a paused job; returns what happened, in words.

    A job its worker paused is published again under its own id, in the attempt it
    stopped in; the task reads ``job.last_checkpoint`` to go on from where it stopped.
    A job paused in the queue just goes on (its message is still there). Refused for a
    job whose input was not stored whole (it could not be published as it was).
    """
    job = tracker.store.get_job(job_id)
    replay = _replay(job)
    done = tracker.store.requests.resume(job_id, can_publish=replay is not None)
    if done.action == "publish":
        assert replay is not None
        publish_again(app, job, replay, done.attempt)
        return "resumed"
    if done.action == "lifted":
        return "resumed (it was still queued)"
    if done.action == "withdrawn":
        return "pause request withdrawn; it keeps running"
    if done.action == "refused":
        raise CannotControl("resume", job_id, _NOT_STORED_WHOLE)
    raise CannotControl(
        "resume", job_id, f"it is {done.status.value}; only paused jobs can be resumed"
    )


class JobControl:
    """The actions of this module bound to one app and tracker (the web API's)."""

    def __init__(self, app: Any, tracker: Tracker) -> None:
        self.app = app
        self.tracker = tracker

    def retry(self, job_id: str, *, failed_items: bool = False) -> str:
        return retry_job(self.app, self.tracker, job_id, failed_items=failed_items)

    def cancel(self, job_id: str, *, terminate: bool = False) -> str:
        return cancel_job(self.app, self.tracker, job_id, terminate=terminate)

    def pause(self, job_id: str) -> str:
        return pause_job(self.app, self.tracker, job_id)

    def resume(self, job_id: str) -> str:
        return resume_job(self.app, self.tracker, job_id)

    def start(self, task_name: str, **options: Any) -> tuple[Job, bool]:
        return start_job(self.app, self.tracker, task_name, **options)


def controller(app: Any, tracker: Tracker) -> JobControl:
    """The :class:`JobControl` of ``app`` and ``tracker`` (what ``create_app(control=...)``
    takes)."""
    return JobControl(app, tracker)
