"""Job states, the rules for moving between them, and the records read back.

No I/O here. The ordering rules below are also what the store's SQL enforces, so a
late or duplicated event can never move a job backwards, whichever process sends it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

__all__ = [
    "ACTION_JOB_TYPE",
    "ACTIVE",
    "BULK_ACTIONS",
    "CANCEL_REQUESTED_SEQ",
    "DELETABLE",
    "ERRORED",
    "ERROR_MASKS",
    "EVENT_COLUMNS",
    "FILTER_FIELDS",
    "FINISHED",
    "OWNER_ID_MAX",
    "PAUSABLE",
    "RETRYABLE",
    "STARTED",
    "TERMINAL",
    "TERMINAL_SEQ",
    "Action",
    "ActionTarget",
    "Batch",
    "Count",
    "Event",
    "EventRow",
    "FailureGroup",
    "Item",
    "ItemStatus",
    "Job",
    "JobFilter",
    "JobStatus",
    "JobUpdate",
    "LogLine",
    "QueueBacklog",
    "Resumed",
    "Row",
    "Scope",
    "StageSpan",
    "Stats",
    "Stop",
    "Trend",
    "WorkerActivity",
    "as_utc",
    "error_group_of",
    "is_owner_id",
    "masked_error",
    "merge_row",
    "paused_in_queue",
    "progress_applies",
    "queued_pause_seq",
    "recorded_item",
    "resumed_seq",
    "rows_in_order",
    "stage_spans",
    "state_seq",
    "takes",
    "time_left",
    "unfold_events",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    #: Stopped on an operator's request, not finished: ``resume`` publishes it again.
    PAUSED = "paused"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
#: Not finished yet: can still be cancelled (and has progress to draw).
ACTIVE = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.PAUSED})
#: An operator may pause these.
PAUSABLE = frozenset({JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RETRYING})
#: An attempt has started.
STARTED = frozenset({JobStatus.RUNNING, JobStatus.RETRYING})
#: The row's error fields describe its current state.
ERRORED = frozenset({JobStatus.FAILED, JobStatus.LOST, JobStatus.RETRYING})
#: An operator may publish these again.
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.LOST})
#: No worker will touch these again on its own: what pruning removes by default.
FINISHED = TERMINAL | {JobStatus.LOST}
#: An operator may delete these (a job a worker may still write to would come back).
DELETABLE = FINISHED | {JobStatus.PAUSED}

# Rank of a status inside one attempt. ``lost`` sits below ``running`` so that a
# redelivered attempt (same attempt number) takes the job back to running. ``paused``
# (an attempt that stopped on request) ends its attempt like ``retrying``; a job paused
# while it waited in a queue sits at rank 1 of the attempt it waits for (see
# :func:`queued_pause_seq`), so that attempt's "running" still outranks it.
_RANK = {
    JobStatus.PENDING: 0,
    JobStatus.LOST: 1,
    JobStatus.RUNNING: 2,
    JobStatus.RETRYING: 3,
    JobStatus.PAUSED: 3,
}
_ATTEMPT_SPAN = 4
#: Every status's rank, None for a terminal one: :func:`state_seq`'s one lookup (it runs
#: for every transition a worker makes).
_STATE_RANK: dict[JobStatus, int | None] = {status: _RANK.get(status) for status in JobStatus}
#: Every terminal state carries this sequence number: nothing outranks it, so the first
#: terminal state a job reaches is the one it keeps.
TERMINAL_SEQ = 1 << 40
#: A job cancelled on request before any worker ran it: shown as ``cancelled``, and above
#: every attempt (a late "pending" or "running" cannot undo it), but below a worker's real
#: outcome: if the task runs anyway, its completion or failure replaces the cancel, and
#: ``cancel_requested_at`` stays to say a cancel was asked for.
CANCEL_REQUESTED_SEQ = TERMINAL_SEQ - 1


def state_seq(status: JobStatus, attempt: int) -> int:
    """Order key of a state: a transition is applied only if its key is greater.

    Attempts are ordered by Celery's ``request.retries``, not by arrival: a retry is
    republished before the old attempt's "retrying" event is written, so the next
    attempt's "running" may arrive first and must not be undone by it.
    """
    rank = _STATE_RANK[status]
    if rank is None:
        return TERMINAL_SEQ
    return attempt * _ATTEMPT_SPAN + rank if attempt > 0 else rank


def queued_pause_seq(seq: int) -> int:
    """The order key of a job paused while no worker runs it (pending, or retrying:
    waiting for its next attempt), from its current key: rank 1 of the attempt it waits
    for. Above a late "pending", below that attempt's "running": if a worker runs it
    anyway, the row says so until the task stops at its next check."""
    attempt, rank = divmod(seq, _ATTEMPT_SPAN)
    return (attempt + (1 if rank == _RANK[JobStatus.RETRYING] else 0)) * _ATTEMPT_SPAN + 1


def paused_in_queue(seq: int) -> bool:
    """Whether a ``paused`` row at order key ``seq`` was paused in the queue (its message
    may still be there, so resuming only lifts the pause) rather than by the worker that
    ran it (its message is gone, so resuming publishes it again)."""
    return seq % _ATTEMPT_SPAN == 1


def resumed_seq(seq: int) -> int:
    """The order key of a resumed job: pending in the attempt it was paused in. Lower
    than ``paused`` on purpose (an operator's explicit move back), so that attempt's
    "running" takes the row again."""
    return seq - seq % _ATTEMPT_SPAN


#: A ``jobs`` row on its way to the table: the columns an update sets, by name, with
#: ``status`` as its text. A missing key or a None value sets nothing. What the writer
#: buffers and merges (:func:`merge_row`), the spool keeps and the store writes.
Row = dict[str, Any]
#: The columns of a ``job_events`` row on its way to the table, in the order an
#: :data:`EventRow` holds them.
EVENT_COLUMNS = (
    "job_id",
    "at",
    "status",
    "attempt",
    "worker",
    "error_type",
    "error_message",
    "stage",
    "note",
    "started_at",
)
#: A ``job_events`` row as the writer holds it (values in :data:`EVENT_COLUMNS` order,
#: ``status`` as its text): a plain tuple, the cheapest thing to make per task.
EventRow = tuple[Any, ...]


class Stop(enum.StrEnum):
    """What an operator asked a running job to do at its next check."""

    CANCEL = "cancel"
    PAUSE = "pause"


@dataclass(frozen=True)
class Resumed:
    """What :meth:`store.requests.resume <jobtrack.store.requests.Requests.resume>` did.

    ``action``: "publish" (the job's message is gone: publish it again under its id, in
    ``attempt``), "lifted" (paused in the queue: its message runs), "withdrawn" (it was
    running: the request is dropped), "refused" (it must be published and cannot be),
    "none" (not paused: ``status`` says what it is).
    """

    action: str
    status: JobStatus
    attempt: int


class ItemStatus(enum.StrEnum):
    """Outcome of one item of a job (a row of an import, a file of a batch)."""

    SUCCESS = "success"
    ERROR = "error"
    SKIPPED = "skipped"
    #: Declared up front (``job.plan_items``), not processed yet.
    PENDING = "pending"


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table."""

    id: str
    status: JobStatus
    task_name: str | None = None
    job_type: str | None = None
    job_subtype: str | None = None
    name: str | None = None
    owner_id: str | None = None
    queue: str | None = None
    priority: int | None = None
    eta: datetime | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    input_data: Any = None
    output_data: Any = None
    metadata: Any = None
    total_items: int | None = None
    processed_items: int = 0
    failed_items: int = 0
    skipped_items: int = 0
    progress_percent: float | None = None
    progress_stage: str | None = None
    progress_message: str | None = None
    retries: int = 0
    max_retries: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    worker: str | None = None
    pid: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    updated_at: datetime | None = None
    heartbeat_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    stage_index: int | None = None
    stage_count: int | None = None
    checkpoint: Any = None
    checkpoint_at: datetime | None = None
    #: When an operator asked to pause; cleared when the job is resumed.
    pause_requested_at: datetime | None = None
    #: What the job works on, in your domain's words ("repo:42@9fceb02").
    ref: str | None = None
    #: The job an operator replayed, with edited arguments, as this one.
    replay_of: str | None = None
    #: When the job should finish at its recent pace (running jobs with a known end).
    eta_at: datetime | None = None
    #: The job an operator retried or replayed this one as (the newest): a failure
    #: with one is handled.
    retried_by: str | None = None
    #: The failure group of its error (see :func:`error_group_of`).
    error_group: str | None = None
    #: When the message of the run the row follows was published (a publisher with
    #: jobtrack installed stamps it): a later publish of the same id is a new run.
    sent_at: datetime | None = None


@dataclass(frozen=True)
class Item:
    """One row of ``job_items``."""

    job_id: str
    key: str
    status: ItemStatus
    message: str | None = None
    error_code: str | None = None
    before_state: Any = None
    after_state: Any = None
    processed_at: datetime | None = None
    #: Set by the database: the order items were recorded in (``after=ID`` pages).
    id: int = 0


_new_object = object.__new__


def recorded_item(
    job_id: str,
    key: str,
    status: ItemStatus,
    processed_at: datetime,
    message: str | None,
    error_code: str | None,
    before_state: Any,
    after_state: Any,
) -> Item:
    """The :class:`Item` ``job.item()`` records, built for a task recording thousands:
    its fields set at once, where the frozen class's own ``__init__`` sets them one
    checked ``object.__setattr__`` at a time (0.4 against 1.2 µs). Equal to
    ``Item(...)`` with the same values (tests/unit/test_hot_path.py holds them to it);
    its fields live in a dict of their own rather than inline, a few dozen bytes more
    for each item waiting for a flush."""
    item = _new_object(Item)
    item.__dict__.update(
        {
            "job_id": job_id,
            "key": key,
            "status": status,
            "message": message,
            "error_code": error_code,
            "before_state": before_state,
            "after_state": after_state,
            "processed_at": processed_at,
            "id": 0,
        }
    )
    return item


@dataclass(frozen=True)
class Event:
    """One row of ``job_events``: a transition of one attempt."""

    job_id: str
    at: datetime
    status: JobStatus
    attempt: int
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    #: The stage entered, on the event of a stage change (``job.stage()``).
    stage: str | None = None
    #: What an operator did, in words ("paused", "resumed", "retrying 3 failed items").
    note: str | None = None
    #: On the outcome of an attempt whose ``running`` was never written on its own (it
    #: started and ended between two flushes): when it started. Reading the trace gives
    #: that ``running`` back as an event of its own (see :func:`unfold_events`).
    started_at: datetime | None = None

    def row(self) -> EventRow:
        """The event as the writer holds it: values in :data:`EVENT_COLUMNS` order."""
        return (
            self.job_id,
            self.at,
            self.status.value,
            self.attempt,
            self.worker,
            self.error_type,
            self.error_message,
            self.stage,
            self.note,
            self.started_at,
        )

    @classmethod
    def of(cls, update: JobUpdate, attempt: int = 0) -> Event:
        """The trace entry of a transition: its time, status, worker and error."""
        return cls(
            job_id=update.id,
            at=update.updated_at,
            status=update.status,
            attempt=attempt,
            worker=update.worker,
            error_type=update.error_type,
            error_message=update.error_message,
        )


@dataclass(frozen=True)
class LogLine:
    """One row of ``job_logs``: a log record emitted while the job's task ran.
    ``seq`` is set by the database (it orders the lines and pages them: ``after=SEQ``)."""

    job_id: str
    at: datetime
    level: str
    logger: str | None
    message: str | None
    seq: int = 0


#: The longest owner id a job row holds (``jobs.owner_id`` is varchar(255)).
OWNER_ID_MAX = 255


def is_owner_id(owner_id: str) -> bool:
    """Whether ``owner_id`` can name one owner, stored exactly: not empty (no owner), not
    ``*`` (every owner, to row-level security), no NUL (PostgreSQL cannot compare with
    one), no lone surrogate (no database can store one), and at most
    :data:`OWNER_ID_MAX` characters (cut, it could be another owner's)."""
    if not owner_id or owner_id == "*" or "\x00" in owner_id or len(owner_id) > OWNER_ID_MAX:
        return False
    try:
        owner_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken as UTC already). ``ValueError`` when it
    has no UTC equivalent (year 1 at +14:00, year 9999 at -14:00): every date a caller
    gives (API, dashboard, CLI, cursors, bulk filters) goes through here, so such a date
    is bad input, never a database error."""
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{moment.isoformat()} is out of range in UTC") from exc


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list, a count or a stream covers: each field narrows, None is any.

    The one spelling of the job filters; the store, the CLI, the API and the dashboard
    all build one of these. ``search`` matches the name or error text (case-insensitive)
    or an exact id; ``since``/``until`` bound ``created_at``.
    """

    status: tuple[JobStatus, ...] | None = None
    job_type: str | None = None
    owner_id: str | None = None
    task_name: str | None = None
    queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    ids: tuple[str, ...] | None = None
    #: The stage the job is in (``progress_stage``).
    stage: str | None = None
    #: The job's ``ref``: exact, or every ref starting with what comes before a final
    #: ``*`` (``"repo:42@*"``).
    ref: str | None = None
    #: Every job of the workflow whose root (Celery's ``root_id``) is this id, the root
    #: included: a chain, the tasks a task started, and theirs.
    workflow: str | None = None
    #: The members of one group or chord header (Celery's ``group_id``).
    group: str | None = None
    #: False: jobs no operator retried or replayed yet (``retried_by`` empty); True:
    #: those one did.
    handled: bool | None = None
    #: The jobs of one failure group (:func:`error_group_of`).
    error_group: str | None = None

    @classmethod
    def of(
        cls,
        *,
        status: str | Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        **fields: Any,
    ) -> JobFilter:
        """A filter from plain values: ``status`` one name or several (an unknown one
        raises ``ValueError``), empty strings as None."""
        statuses = (
            None
            if status is None
            else tuple(JobStatus(s) for s in ([status] if isinstance(status, str) else status))
        )
        given: dict[str, Any] = {
            name: value if isinstance(value, bool) else value or None
            for name, value in fields.items()
        }
        return cls(status=statuses, ids=None if ids is None else tuple(ids), **given)

    def where(self, **changes: Any) -> JobFilter:
        """This filter with some fields changed."""
        return dataclasses.replace(self, **changes)

    def is_empty(self) -> bool:
        """Whether it narrows nothing (every job)."""
        return all(getattr(self, name) is None for name in FILTER_FIELDS)

    def to_json(self) -> dict[str, Any]:
        """The fields it sets, as JSON values (the audit trail's, the API's spelling)."""
        out: dict[str, Any] = {}
        for name in FILTER_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif name == "status":
                value = [s.value for s in value]
            elif name == "ids":
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobFilter:
        """The filter a JSON object describes; ``ValueError`` names an unknown field, an
        empty one or a bad value (the API answers 422, the CLI a usage error)."""
        unknown = sorted(set(data) - set(FILTER_FIELDS))
        if unknown:
            raise ValueError(f"unknown filter field(s): {', '.join(unknown)}")
        given: dict[str, Any] = {}
        for name, value in data.items():
            if value is None or value == "" or value == []:
                raise ValueError(f"filter field {name!r} is empty")
            if name in ("since", "until"):
                given[name] = as_utc(datetime.fromisoformat(str(value)))
            elif name == "handled":
                if not isinstance(value, bool):
                    raise ValueError("filter field 'handled' takes true or false")
                given[name] = value
            elif name in ("status", "ids"):
                values = [value] if isinstance(value, str) else value
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    raise ValueError(f"filter field {name!r} takes a string or a list of them")
                given[name] = values
            elif isinstance(value, str):
                given[name] = value
            else:
                raise ValueError(f"filter field {name!r} takes a string")
        return cls.of(**given)


@dataclass(frozen=True)
class Scope:
    """Which jobs an alert rule watches: globs (``import*``, ``reports.?``) on each
    field, any of a field's globs matching; an empty field matches every job."""

    task_names: tuple[str, ...] = ()
    job_types: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()

    def describe(self) -> str:
        """In words, for a message: "import*" jobs, or "jobs"."""
        parts = [
            "/".join(globs)
            for globs in (self.job_types, self.task_names, self.queues, self.owners)
            if globs
        ]
        return " ".join(parts) + " jobs" if parts else "jobs"


#: The fields of :class:`JobFilter`, in its order.
FILTER_FIELDS = tuple(f.name for f in fields(JobFilter))
#: What an operator can do to every job a filter matches.
BULK_ACTIONS = ("retry", "cancel", "pause", "resume", "delete")


@dataclass(frozen=True)
class Action:
    """One row of ``jobtrack_actions``: an operator's action (the audit trail).

    ``actor`` is the token's name (``cli`` for the command line), ``filter`` what it
    covered (a filter's JSON, or ``{"ids": [...]}``), and the counts how many jobs it
    matched and how many of those it did, skipped (nothing to do, or not allowed) and
    failed on. ``job_id`` names the jobtrack job that tracks a bulk action's run.
    """

    id: int
    action: str
    actor: str
    role: str
    status: str
    created_at: datetime
    owner_id: str | None = None
    bulk: bool = False
    filter: Any = None
    options: Any = None
    job_id: str | None = None
    matched: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    outcome: str | None = None
    finished_at: datetime | None = None

    def scope(self) -> str:
        """What it covered, in one line: its job ids, or its filter's fields (a control
        of workers, which covers no job: what it named, ``queue=imports``)."""
        where = dict(self.filter or {})
        if not where and self.options:
            return " ".join(
                f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in dict(self.options).items()
            )
        ids = where.pop("ids", None)
        shown = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in where.items()]
        if ids:
            more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
            shown.insert(0, ", ".join(ids[:3]) + more)
        return " ".join(shown) or "every job"


@dataclass(frozen=True)
class ActionTarget:
    """What one action did to one job (a row of ``jobtrack_action_targets``)."""

    action_id: int
    job_id: str
    state: str
    sends: int = 0
    result_id: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class StageSpan:
    """One stage of a job's run, read from the trace: when it began and ended."""

    name: str
    attempt: int
    started_at: datetime
    ended_at: datetime | None

    @property
    def duration_ms(self) -> int | None:
        if self.ended_at is None:
            return None
        return int((self.ended_at - self.started_at).total_seconds() * 1000)


def unfold_events(events: Sequence[Event]) -> list[Event]:
    """The trace as it happened: an attempt's outcome written with ``started_at`` (its
    ``running`` folded into it, see :attr:`Event.started_at`) becomes that ``running``
    and the outcome, each at its own time. ``events`` oldest first; so is the result."""
    out: list[Event] = []
    folded = False
    for event in events:
        if event.started_at is None:
            out.append(event)
            continue
        folded = True
        out.append(
            Event(event.job_id, event.started_at, JobStatus.RUNNING, event.attempt, event.worker)
        )
        out.append(dataclasses.replace(event, started_at=None))
    if folded:  # a running put back may belong before events written between its ends
        out.sort(key=lambda e: e.at)
    return out


def stage_spans(events: Sequence[Event]) -> list[StageSpan]:
    """The stages in ``events`` (a job's trace, oldest first), each ending where the
    next event of another kind (the next stage, a retry, the end) begins; the stage a
    running job is in has no end yet."""
    spans: list[StageSpan] = []
    current: Event | None = None
    for event in events:
        if current is not None and (
            event.stage is not None
            or event.status is not JobStatus.RUNNING
            or event.attempt != current.attempt
        ):
            spans.append(StageSpan(current.stage or "", current.attempt, current.at, event.at))
            current = None
        if event.stage is not None:
            current = event
    if current is not None:
        spans.append(StageSpan(current.stage or "", current.attempt, current.at, None))
    return spans


@dataclass
class Batch:
    """What one flush writes, in one transaction: job rows (one per job, merged), trace
    entries, items and log lines. :class:`JobUpdate` and :class:`Event` values given
    here are taken as their rows."""

    updates: list[Row] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        updates: list[Any] = self.updates
        events: list[Any] = self.events
        if any(type(u) is not dict for u in updates):
            self.updates = [u.row() if isinstance(u, JobUpdate) else u for u in updates]
        if any(type(e) is not tuple for e in events):
            self.events = [e.row() if isinstance(e, Event) else e for e in events]

    def __bool__(self) -> bool:
        return bool(self.updates or self.events or self.items or self.logs)

    def job_ids(self) -> list[str]:
        """The jobs this batch touches, each once, in first-seen order."""
        ids = (
            [u["id"] for u in self.updates]
            + [e[0] for e in self.events]
            + [i.job_id for i in self.items]
            + [line.job_id for line in self.logs]
        )
        return list(dict.fromkeys(ids))

    @classmethod
    def join(cls, batches: list[Batch]) -> Batch:
        """One batch of several (of different jobs, or in order)."""
        return cls(
            [u for b in batches for u in b.updates],
            [e for b in batches for e in b.events],
            [i for b in batches for i in b.items],
            [line for b in batches for line in b.logs],
        )


@dataclass(frozen=True)
class Stats:
    """What ``job_stats()`` returns."""

    by_status: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    total: int = 0
    failure_rate: float | None = None
    duration_ms_avg: float | None = None
    duration_ms_max: int | None = None
    duration_ms_p50: int | None = None
    duration_ms_p95: int | None = None
    duration_ms_p99: int | None = None


@dataclass(frozen=True)
class Count:
    """How many jobs one status holds under a filter, as a dashboard tab shows it.

    ``exact``: ``n`` is the number. Otherwise either ``estimated`` (``n`` is an estimate
    from a sample: shown as "~4,300,000") or a floor (there are more than ``n``: shown
    as "10,000+"), for counts that would read too many jobs to be exact.
    """

    n: int
    exact: bool = True
    estimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"count": self.n, "exact": self.exact, "estimated": self.estimated}


def time_left(job: Job, now: datetime) -> str | None:
    """ "about 3 min left" for a running job with an estimate (``eta_at``), else None."""
    if job.status is not JobStatus.RUNNING or job.eta_at is None:
        return None
    seconds = (job.eta_at - now).total_seconds()
    if seconds < 5:
        return "finishing"
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min left"
    if seconds < 48 * 3600:
        return f"about {seconds / 3600:.1f} h left"
    return f"about {round(seconds / 86400):.0f} days left"


@dataclass(frozen=True)
class Trend:
    """One task name's (or job type's) figures over one bucket of a window, or over the
    whole window (``start`` None): jobs that finished in it, by their ``completed_at``."""

    key: str
    start: datetime | None
    completed: int = 0
    failed: int = 0
    run_p50_ms: float | None = None
    run_p95_ms: float | None = None
    #: ``started_at - created_at``: how long the job waited for a worker.
    wait_p50_ms: float | None = None
    wait_p95_ms: float | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed of finished, 0 to 1; None when nothing finished."""
        return self.failed / self.finished if self.finished else None


# How each column of ``jobs`` merges when two updates of one job meet, whether in the
# writer's buffer (``JobUpdate.merge``) or in the store's upsert SQL. "takes" means the
# newer update outranks the row: a higher ``state_seq``, or an equal non-terminal one.
#: Set from the update that takes, when it has a value.
ATTEMPT_COLUMNS = (
    "worker",
    "pid",
    "started_at",
    "completed_at",
    "duration_ms",
    "output_data",
    "error_type",
    "error_message",
    "traceback",
    "eta",
)
#: Of the attempt columns, those an update that replaces a requested cancel sets even
#: when it has no value (the run's outcome, not the cancel's reason, is what they show).
ERROR_COLUMNS = ("error_type", "error_message", "traceback")
#: First value seen wins (``parent_id`` must: Celery rewrites it on retry).
FILL_COLUMNS = (
    "task_name",
    "job_type",
    "job_subtype",
    "name",
    "owner_id",
    "queue",
    "priority",
    "parent_id",
    "root_id",
    "group_id",
    "input_data",
    "max_retries",
    "metadata",
    "cancel_requested_at",
    "stage_count",
    "ref",
    "replay_of",
)
#: Last value wins until the job is finished; then they never change.
PROGRESS_COLUMNS = (
    "progress_percent",
    "progress_stage",
    "progress_message",
    "total_items",
    "stage_index",
    "checkpoint",
    "checkpoint_at",
    "eta_at",
)
#: Largest wins.
MAX_COLUMNS = ("retries", "heartbeat_at", "updated_at")
#: Smallest wins.
MIN_COLUMNS = ("created_at",)
#: The run a row belongs to: when its message was published (the publisher's clock,
#: carried to the worker in a header). Largest wins. Rows of one run (the same stamp,
#: or none) merge by the rules above; between runs, the later run's first row takes
#: the job whatever its state, and sets :data:`RESET_COLUMNS` (even to nothing: the
#: earlier run's outcome and progress are not this one's); an earlier run's row, once
#: a later run took the job, sets nothing but the descriptive columns. A row with no
#: stamp (an operator's write, a worker of an older version, a task published without
#: jobtrack) is never told apart by run: it merges by the rules above.
RUN_COLUMN = "sent_at"
#: Of the first-seen columns, those that belong to a run: a later run's first row sets
#: them even without a value (its own rows fill them then).
RESET_FILL_COLUMNS = ("cancel_requested_at", "input_data")
#: What a later run's first row sets even without a value.
RESET_COLUMNS = (
    *ATTEMPT_COLUMNS,
    *PROGRESS_COLUMNS,
    *RESET_FILL_COLUMNS,
    "heartbeat_at",
    "retries",
)
#: The key under which a merged row keeps the rows of an earlier run (or of no run) it
#: must not merge with: the store writes those first (see :func:`rows_in_order`).
BEFORE = "_before"


def takes(new_seq: int, current_seq: int) -> bool:
    """Whether an update at ``new_seq`` sets status and attempt columns of a row."""
    return new_seq > current_seq or (new_seq == current_seq and new_seq < TERMINAL_SEQ)


def progress_applies(new_seq: int, current_seq: int) -> bool:
    """A finished job's progress never changes again.

    (The final update's own values still land: it meets a row that is not yet final.)
    This rule, unlike "unless the update is itself final", gives the same row whether
    updates are applied one by one or merged first.
    """
    del new_seq
    return current_seq < TERMINAL_SEQ


@dataclass
class JobUpdate:
    """What one or more transitions of one job change, ready to upsert as one row."""

    id: str
    status: JobStatus
    state_seq: int
    created_at: datetime
    updated_at: datetime
    retries: int = 0
    worker: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    output_data: Any = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    eta: datetime | None = None
    task_name: str | None = None
    job_type: str | None = None
    job_subtype: str | None = None
    name: str | None = None
    owner_id: str | None = None
    queue: str | None = None
    priority: int | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    input_data: Any = None
    max_retries: int | None = None
    metadata: Any = None
    progress_percent: float | None = None
    progress_stage: str | None = None
    progress_message: str | None = None
    total_items: int | None = None
    heartbeat_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    stage_index: int | None = None
    stage_count: int | None = None
    checkpoint: Any = None
    checkpoint_at: datetime | None = None
    ref: str | None = None
    replay_of: str | None = None
    eta_at: datetime | None = None
    sent_at: datetime | None = None

    COLUMNS: ClassVar[tuple[str, ...]]

    @classmethod
    def transition(
        cls,
        job_id: str,
        status: JobStatus,
        attempt: int = 0,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> JobUpdate:
        """``job_id`` entering ``status`` in ``attempt`` (Celery's ``request.retries``),
        at ``at`` (now by default): the order key and the times are derived here, once."""
        moment = at or datetime.now(UTC)
        return cls(
            id=job_id,
            status=status,
            state_seq=state_seq(status, attempt),
            created_at=moment,
            updated_at=moment,
            **fields,
        )

    def merge(self, newer: JobUpdate) -> None:
        """Fold ``newer`` (a later update of the same job, of the same run) into this
        one, in place. Updates of two runs do not fold into one (see :func:`merge_row`):
        ``ValueError``."""
        if newer.sent_at != self.sent_at:
            raise ValueError("updates of two runs of a job do not merge into one update")
        row = self.row()
        merge_row(row, newer.row())
        for name in self.COLUMNS:
            setattr(self, name, row.get(name))
        self.status = JobStatus(row["status"])

    def row(self) -> Row:
        """The update as the writer holds it: the columns it sets."""
        return {
            name: value
            for name, value in zip(self.COLUMNS, self.values(), strict=True)
            if value is not None
        }

    def values(self) -> tuple[Any, ...]:
        """The update as a ``jobs`` row: values in :attr:`COLUMNS` order."""
        values = _job_update_values(self)
        return (values[0], self.status.value, *values[2:])


JobUpdate.COLUMNS = tuple(f.name for f in fields(JobUpdate))
_job_update_values = operator.attrgetter(*JobUpdate.COLUMNS)

_ATTEMPT, _PROGRESS, _FILL, _MAX, _MIN = range(5)
#: Each column's merge rule (the groups above); status, state_seq and id have none.
_RULES: dict[str, int] = {
    name: rule
    for rule, names in (
        (_ATTEMPT, ATTEMPT_COLUMNS),
        (_PROGRESS, PROGRESS_COLUMNS),
        (_FILL, FILL_COLUMNS),
        (_MAX, MAX_COLUMNS),
        (_MIN, MIN_COLUMNS),
    )
    for name in names
}


def merge_row(row: Row, newer: Row) -> None:
    """Fold ``newer`` (a later update of the same job) into ``row``, in place, by the
    rules above: what the store's upsert does when ``newer`` meets the stored row.

    Rows of two runs (two stamps, or a stamp and none: see :data:`RUN_COLUMN`) are not
    folded: ``row`` becomes ``newer`` and keeps what it was under :data:`BEFORE`, which
    the store writes first. Whichever run the stored row follows then, the result is
    the one each row would give written one by one."""
    if BEFORE in newer:  # a merged row itself: its rows, oldest first
        for part in rows_in_order(newer):
            merge_row(row, part)
        return
    if newer.get(RUN_COLUMN) != row.get(RUN_COLUMN):
        before = row.copy()
        row.clear()
        row.update(newer)
        row[BEFORE] = before
        return
    seq, new_seq = row["state_seq"], newer["state_seq"]
    wins = takes(new_seq, seq)
    progress_ok = progress_applies(new_seq, seq)
    if wins and seq == CANCEL_REQUESTED_SEQ:
        # The run's outcome replaces a requested cancel: its error, or none.
        for name in ERROR_COLUMNS:
            row[name] = newer.get(name)
    rules = _RULES
    for name, value in newer.items():
        if value is None:
            continue
        rule = rules.get(name)
        if rule is None:
            continue
        if rule == _ATTEMPT:
            if wins:
                row[name] = value
        elif rule == _PROGRESS:
            if progress_ok:
                row[name] = value
        elif rule == _FILL:
            if row.get(name) is None:
                row[name] = value
        else:
            current = row.get(name)
            if current is None or (value > current if rule == _MAX else value < current):
                row[name] = value
    if wins:
        row["status"] = newer["status"]
        row["state_seq"] = new_seq


def rows_in_order(row: Row) -> list[Row]:
    """A merged row as the store writes it: the rows of earlier runs it keeps (see
    :func:`merge_row`), oldest first, then its own; none with :data:`BEFORE`."""
    chain = []
    current: Row | None = row
    while current is not None:
        before = current.get(BEFORE)
        chain.append({k: v for k, v in current.items() if k != BEFORE} if before else current)
        current = before
    chain.reverse()
    return chain


# -- failure groups ----------------------------------------------------------------------

#: What a failure group leaves out of an error message, in this order: quoted values,
#: UUIDs, runs of 8 or more hex digits (hashes), words of letters and digits (ids such
#: as ``e5b6b``, ``user42``, ``30s``), then numbers. The same patterns run in PostgreSQL
#: (``schema.error_group_sql``: a trigger keeps ``jobs.error_group``) and here (SQLite
#: reads its groups in Python), each written so that both regular expression engines
#: match the same text (an alternation's branches start with different characters: no
#: leftmost-longest against leftmost-first difference).
ERROR_MASKS: tuple[tuple[str, str], ...] = (
    ("'[^']*'", "'…'"),
    ('"[^"]*"', '"…"'),
    ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<id>"),
    ("[0-9a-fA-F]{8,}", "<id>"),
    ("[A-Za-z_]+[0-9][A-Za-z0-9_]*|[0-9]+[A-Za-z_][A-Za-z0-9_]*", "<id>"),
    ("[0-9]+", "<n>"),
)
#: A failure group reads this much of an error message (the start says what failed).
ERROR_GROUP_CHARS = 1000
_MASKS = tuple((re.compile(pattern), replacement) for pattern, replacement in ERROR_MASKS)


def masked_error(message: str | None) -> str:
    """An error message as its failure group shows it: its start, with numbers, ids
    and quoted values masked ("upstream db-7 timed out after 30s" becomes "upstream
    db-<n> timed out after <n>s")."""
    text = (message or "")[:ERROR_GROUP_CHARS]
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def error_group_of(
    task_name: str | None, error_type: str | None, error_message: str | None
) -> str | None:
    """The failure group of an error: failed jobs of one task, with one error type and
    the same message once masked (:func:`masked_error`), share it. None with no error."""
    if error_type is None and error_message is None:
        return None
    key = f"{task_name or ''}\x1f{error_type or ''}\x1f{masked_error(error_message)}"
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class FailureGroup:
    """Failed (and lost) jobs no operator handled yet, of one task with one error type
    and message once masked: how many, when first and last seen, how many an hour over
    the last 24 hours (``hourly``, oldest first, the last ending now), and the newest
    of them (``example_id``, its message as written)."""

    key: str | None
    task_name: str | None
    error_type: str | None
    message: str
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    hourly: tuple[int, ...] = ()
    example_id: str | None = None
    example_message: str | None = None


# -- workers and queues, as jobtrack's rows show them -------------------------------------

#: The job_type of the jobtrack job that tracks a bulk action's run (its ``worker`` is
#: the process that runs it, not a Celery worker).
ACTION_JOB_TYPE = "jobtrack.action"


@dataclass(frozen=True)
class WorkerActivity:
    """A worker (Celery's hostname, ``celery@host``) as its jobs' rows show it: the
    jobs running on it now, its newest heartbeat, and the jobs it finished in the
    window asked for."""

    name: str
    running: int = 0
    last_heartbeat: datetime | None = None
    finished: int = 0
    last_finished: datetime | None = None


@dataclass(frozen=True)
class QueueBacklog:
    """A queue as jobtrack's rows show it: jobs published to it and not started
    (``pending``), of which ``waiting`` are due (no ETA ahead), the oldest of those
    since ``oldest_waiting``."""

    queue: str | None
    pending: int = 0
    waiting: int = 0
    oldest_waiting: datetime | None = None
