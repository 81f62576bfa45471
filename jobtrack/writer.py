"""How writes reach the store.

The per-task path only appends. Every signal handler and handle call gives the writer
one *fact* (a job row or a change to one, an attempt's start or end, a trace entry, an
item, a log line) and goes on: no lock, no copy, no cleaning, no JSON (but for a bounded
burst of folding every few hundred job facts, see ``_fold_here``, and a moment's sleep
when the writer's thread waits for the interpreter, see ``_step_aside``). Facts queue in
arrival order; whoever flushes (the writer's thread, every ``flush_interval_s`` or as
soon as ``flush_max_jobs`` / ``flush_max_items`` are waiting) takes them in that order
and folds them into the batch it is building:

* rows of one job merge into one (:func:`~jobtrack.models.merge_row`, the same rules as
  the store's SQL), each cleaned once on the way (:class:`~jobtrack.payload.Cleaner`);
* an attempt whose start and end both arrive before a flush is one row and one trace
  entry: nobody could have read its ``running`` (it was never written), so the outcome's
  entry carries the start instead (``started_at``; reading the trace gives the two
  back). Once a flush has written the ``running`` (or progress, or a heartbeat), the
  outcome is a write of its own, as before;
* running attempts are watched from their start on: at each flush their latest progress
  is collected, with a heartbeat every ``heartbeat_interval_s``, and with each heartbeat
  the operator's pause and cancel requests are read for them.

The batch is written in one transaction. A task never waits for the database. If a
write fails the batch is kept and tried again with backoff (what arrives meanwhile is
folded over it, so order is preserved), spooled to disk past ``buffer_max_jobs``; a row
the database still refuses is isolated and set aside, never left to block the rest.

:class:`SyncWriter` commits every transition before the task goes on, for people who
prefer that to throughput; the same buffered writer underneath is its heartbeat and
progress pump.

Both are fork-safe: a forked child starts with an empty queue, no thread, and a store
whose pool holds none of the parent's connections.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .errors import DataRefused, StoreError, is_time_limit
from .models import (
    Batch,
    Event,
    EventRow,
    Item,
    JobStatus,
    JobUpdate,
    LogLine,
    Row,
    Stop,
    merge_row,
    state_seq,
)
from .payload import Cleaner
from .settings import Settings
from .spool import Spool
from .store import Store

__all__ = [
    "BufferedWriter",
    "ProgressSource",
    "SyncWriter",
    "Writer",
    "cleaner_for",
    "make_writer",
]

log = logging.getLogger("jobtrack.writer")

#: The longest wait between two tries while the database is unreachable, and a bound on
#: the doublings that lead to it (a float of the interval times 2**1024 overflows).
_MAX_BACKOFF_S = 5.0
_MAX_BACKOFF_DOUBLINGS = 16
_SPOOL_CHECK_S = 30.0
_RUNNING = JobStatus.RUNNING.value

# A fact about a job's row is the row itself (a plain dict the writer now owns), with
# the writer's own keys, which no column has, saying what it is. Dicts of plain values
# and strings are invisible to Python's garbage collector, so facts waiting for a flush
# never make it scan more: a hot path that kept objects alive until the next flush would
# pay for full collections of the whole process.
_KIND = "_fact"
_ROW = 0  # a change to the row; "_trace": attempt for its trace entry; "_note"; "_event"
_START = 1  # an attempt began ("_attempt"): its running row
_END = 2  # the attempt ended: its outcome ("_attempt", "_note", "_progress": its last)
#: (kind, job id, its last progress row or None): an attempt ended with no outcome to
#: write here. Other facts are an Event, an Item or a LogLine.
_RELEASED = 3
#: Every this many job facts appended in a process, the thread appending the last one
#: folds what is queued (if no other thread is folding or writing), at most
#: :data:`_BURST_MAX` facts: a burst of a few hundred microseconds to a few milliseconds.
_FOLD_EVERY = 512
_BURST_MAX = 2 * _FOLD_EVERY
#: How long a task's thread steps aside for the writer's (see ``_step_aside``; a sleep
#: this short lasts about 100 µs on Linux, its timer slack added), and the least and most
#: it then waits before stepping aside again when the writer did not take its turn.
_STEP_S = 50e-6
_STEP_AGAIN_MIN_S = 0.0005
_STEP_AGAIN_MAX_S = 0.008
#: Whether threads share one interpreter lock (a free-threaded build has none, and no
#: thread of it ever waits for one: nothing to step aside for).
_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def default_spool_dir() -> str:
    """Where spool files go unless ``spool_dir`` is set: the system's temp directory."""
    return os.path.join(tempfile.gettempdir(), "jobtrack-spool")


class ProgressSource(Protocol):
    """A running job (its handle), watched by the writer from its start to its end."""

    job_id: str
    attempt: int
    sent_at: datetime | None

    def take_progress(self) -> JobUpdate | None: ...
    def request_stop(self, stop: Stop) -> None: ...


class Writer(Protocol):
    clean: Cleaner

    def update(
        self,
        update: JobUpdate | Row,
        event: Event | None = None,
        *,
        trace: int | None = None,
        note: str | None = None,
    ) -> None: ...
    def started(self, source: ProgressSource, row: Row) -> None: ...
    def ended(self, source: ProgressSource, row: Row, note: str | None = None) -> None: ...
    def released(self, source: ProgressSource) -> None: ...
    def item(self, item: Item) -> None: ...
    def event(self, event: Event) -> None: ...
    def log(self, line: LogLine) -> None: ...
    def flush(self) -> bool: ...
    def close(self, timeout_s: float | None = None) -> None: ...


def cleaner_for(settings: Settings) -> Cleaner:
    """The :class:`~jobtrack.payload.Cleaner` with the limits of ``settings``."""
    return Cleaner.for_limits(
        message_chars=settings.max_message_chars,
        traceback_chars=settings.max_traceback_chars,
        name_chars=settings.max_name_chars,
        max_payload_bytes=settings.max_payload_bytes,
        redact_keys=settings.redact_keys,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class BufferedWriter:
    """Queue facts, fold them into batches, write; see the module docstring."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        cleaner: Cleaner | None = None,
        *,
        step_aside: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clean = cleaner or cleaner_for(settings)
        #: Whether task threads step aside for the writer's (see ``_step_aside``); not
        #: where they write themselves (:class:`SyncWriter`).
        self._steps = step_aside and _GIL
        self._spool = Spool(settings.spool_dir or default_spool_dir(), settings.database_url)
        #: Wake the thread once this many job facts (rows, starts, ends) are queued:
        #: about ``flush_max_jobs`` jobs, each with its start and end.
        self._wake_jobs = settings.flush_max_jobs * 2
        self._wake_items = settings.flush_max_items
        self._init_process_state()
        _live_writers.add(self)

    def _init_process_state(self) -> None:
        #: Facts not folded yet: appended by any thread, taken by the one that flushes.
        self._queue: deque[Any] = deque()
        self._queued_jobs = 0  # approximate counts (no lock): when to wake the thread
        self._queued_items = 0
        self._unfolded = 0  # job facts appended since the last burst (approximate too)
        #: True while a fold runs (under _flush_lock, which the folding thread may take
        #: again): a burst never starts inside a fold.
        self._folding = False
        self._flush_lock = threading.RLock()  # one folder and writer at a time: order
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        # The batch being built; touched only under _flush_lock.
        self._rows: dict[str, Row] = {}
        self._events: list[EventRow] = []
        self._items: list[Item] = []
        self._logs: list[LogLine] = []
        #: Job id -> (attempt, when, worker) of an attempt that started since the last
        #: flush: its ``running`` entry, made at the flush unless its outcome came first.
        self._open: dict[str, tuple[int, datetime, str | None]] = {}
        #: The attempts running in this process, by job id: from their start to their
        #: end (set and cleared by the per-task path itself).
        self._running: dict[str, ProgressSource] = {}
        self._thread: threading.Thread | None = None
        #: Set by the writer's thread (and, to wake it, by whoever wakes it) under the
        #: interpreter lock: from when it may be waiting for that lock (its wait over;
        #: 0.0 once it is woken, until it waits again: also while it talks to the
        #: database), and its turns (each wake and each wait). See ``_step_aside``.
        self._due = float("inf")
        self._turns = 0
        #: The task threads' own: the writer's turn at which a step found it not taking
        #: its turn, when to step again, and the delay after that.
        self._step_turn = -1
        self._next_step = 0.0
        self._step_again = _STEP_AGAIN_MIN_S
        self._failures = 0
        self._outage: _Outage | None = None
        self._last_heartbeat = time.monotonic()
        self._next_spool_check = 0.0

    def _after_fork_in_child(self) -> None:
        self._init_process_state()

    @property
    def in_outage(self) -> bool:
        """True while the database is known to be unreachable (writes are kept)."""
        return self._outage is not None

    # -- what the per-task path calls: append a fact, nothing else --------------------

    def update(
        self,
        update: JobUpdate | Row,
        event: Event | None = None,
        *,
        trace: int | None = None,
        note: str | None = None,
    ) -> None:
        """A change to a job's row (a :class:`JobUpdate`, or a fresh row the writer now
        owns); with ``trace`` (the attempt), also its trace entry, made from the cleaned
        row, with ``note`` (how it came about); or ``event``, an entry of the caller's."""
        row = update.row() if isinstance(update, JobUpdate) else update
        row[_KIND] = _ROW
        if trace is not None:
            row["_trace"] = trace
        if note is not None:
            row["_note"] = note
        if event is not None:
            row["_event"] = event.row()
        self._queue.append(row)
        self._queued_job()

    def started(self, source: ProgressSource, row: Row) -> None:
        """An attempt began: its ``running`` row (a fresh dict the writer now owns). The
        writer watches ``source`` until it ends."""
        row[_KIND] = _START
        row["_attempt"] = source.attempt
        if source.sent_at is not None:  # the run's rows carry its stamp (see RUN_COLUMN)
            row["sent_at"] = source.sent_at
        self._queue.append(row)
        self._running[source.job_id] = source
        self._queued_job()

    def ended(self, source: ProgressSource, row: Row, note: str | None = None) -> None:
        """The attempt ``source`` began ended: the outcome's row (a fresh dict)."""
        progress = self._let_go(source)
        row[_KIND] = _END
        row["_attempt"] = source.attempt
        if source.sent_at is not None:
            row["sent_at"] = source.sent_at
        if note is not None:
            row["_note"] = note
        if progress is not None:
            row["_progress"] = progress
        self._queue.append(row)
        self._queued_job()

    def released(self, source: ProgressSource) -> None:
        """The attempt ``source`` began ended without an outcome this process writes
        (another process reports it): stop watching it; its last progress is written."""
        self._queue.append((_RELEASED, source.job_id, self._let_go(source)))
        self._queued_job()

    def _let_go(self, source: ProgressSource) -> Row | None:
        """Stop watching ``source`` (at once: nothing keeps the handle alive after its
        run); its last progress, if it has some unwritten."""
        if self._running.get(source.job_id) is source:
            self._running.pop(source.job_id, None)
        progress = source.take_progress()
        return progress.row() if progress is not None else None

    def event(self, event: Event) -> None:
        self._queue.append(event)
        self._queued_job()

    def item(self, item: Item) -> None:
        self._queue.append(item)
        self._queued_item()

    def log(self, line: LogLine) -> None:
        """A captured log line (the items' path: flushed at the interval, or at once
        past ``flush_max_items``)."""
        self._queue.append(line)
        self._queued_item()

    def _queued_job(self) -> None:
        if self._thread is None:
            self._start_thread()
        self._queued_jobs += 1
        self._unfolded += 1
        if self._unfolded >= _FOLD_EVERY:
            self._unfolded = 0
            self._fold_here()
        if self._queued_jobs >= self._wake_jobs:
            self._queued_jobs = 0
            self._wake_now()
        if time.monotonic() >= self._due:
            self._step_aside()

    def _wake_now(self) -> None:
        """Wake the writer's thread (enough is queued): it may run at once."""
        if self._steps:
            self._due = 0.0
        self._wake.set()

    def _step_aside(self) -> None:
        """Let the writer's thread take the interpreter: this thread sleeps a moment.

        A thread running tasks back to back lets go of the interpreter only for moments
        (a task id from ``uuid4()`` reads ``os.urandom``) and takes it back before the
        writer's thread, woken, can run: that thread then waits, woken and beaten at
        every task, until it wins a race (a "GIL convoy", see docs/design.md). So once
        the writer's thread may be waiting (``_due`` passed), the task's thread sleeps
        ``_STEP_S``, and the writer runs on until it next waits (for the database, or
        its interval), or until this thread asks for the interpreter back after a
        switch interval. When the writer took no turn in the step (it was talking to
        the database, say), this thread steps aside again only after a delay, twice as
        long each time up to ``_STEP_AGAIN_MAX_S``, until the writer's next turn. The
        writer's ``_due`` is never written here: a step that comes late, after the
        writer went back to waiting, costs one sleep and nothing after it."""
        turns = self._turns
        if turns == self._step_turn and time.monotonic() < self._next_step:
            return
        thread = self._thread
        if (
            self._closed
            or thread is None
            or thread.ident == threading.get_ident()
            or not thread.is_alive()
        ):
            return  # no writer's thread to step aside for, or this is it
        if turns != self._step_turn:
            self._step_again = _STEP_AGAIN_MIN_S
        time.sleep(_STEP_S)
        if self._turns == turns:
            self._step_turn = turns
            self._next_step = time.monotonic() + self._step_again
            self._step_again = min(self._step_again * 2, _STEP_AGAIN_MAX_S)

    def _fold_here(self) -> None:
        """Fold up to :data:`_BURST_MAX` queued facts on this thread (a task's), if
        nobody is folding or writing now; never waits. A thread that keeps the
        interpreter busy (tasks back to back) leaves the writer's thread only the
        moments the interpreter switches to it, in which it folded slowly, and the queue
        grew faster than it went: the thread that makes the facts folds them, in bursts,
        and the writer's thread writes."""
        if self._folding or not self._flush_lock.acquire(blocking=False):
            return
        try:
            self._fold(_BURST_MAX)
        except Exception as exc:  # never into the task: the writer's thread folds the rest
            if is_time_limit(exc):
                raise  # the task's own soft time limit, raised in its thread: its own
            log.exception("tracking fold error", extra={"job_id": None, "action": "fold"})
        finally:
            self._flush_lock.release()

    def _queued_item(self) -> None:
        if self._thread is None:
            self._start_thread()
        self._queued_items += 1
        if self._queued_items >= self._wake_items:
            self._queued_items = 0
            self._wake_now()
        if time.monotonic() >= self._due:
            self._step_aside()

    # -- folding facts into the batch (under _flush_lock) -----------------------------

    def _fold(self, limit: int | None = None) -> None:
        """Take the facts queued so far (at most ``limit``), in order, into the batch
        being built."""
        folding, self._folding = self._folding, True
        try:
            queued = len(self._queue)
            self._fold_queued(queued if limit is None else min(queued, limit))
        finally:
            self._folding = folding

    def _fold_queued(self, count: int) -> None:
        queue = self._queue
        take = queue.popleft
        # What is queued now, not what arrives meanwhile: a task thread appending as fast
        # as this folds would otherwise keep the flush from ever starting.
        for _ in range(count):
            try:
                fact = take()
            except IndexError:  # fewer than the limit, or taken by a fold inside this one
                return
            kind = type(fact)
            if kind is dict:
                what = fact.pop(_KIND)
                if what == _START:
                    self._start(fact)
                elif what == _END:
                    self._end(fact)
                else:
                    trace, note = fact.pop("_trace", None), fact.pop("_note", None)
                    given = fact.pop("_event", None)
                    row = self._merge(fact)
                    if given is not None:
                        self._events.append(self.clean.event_row(given))
                    elif trace is not None:
                        self._events.append(self._entry(row, trace, note))
            elif kind is Item:
                self._items.append(self.clean(fact))
            elif kind is LogLine:
                self._logs.append(self.clean(fact))
            elif kind is Event:
                self._events.append(self.clean.event_row(fact.row()))
            else:  # released
                if fact[2] is not None:
                    self._merge(fact[2])

    def _merge(self, row: Row) -> Row:
        """Clean ``row`` and merge it into the batch's row of its job; returns ``row``
        (cleaned: what its trace entry is made from)."""
        row = self.clean.row(row)
        current = self._rows.get(row["id"])
        if current is None:
            self._rows[row["id"]] = row  # merged into later: read it now, not after
        else:
            merge_row(current, row)
        return row

    def _entry(self, row: Row, attempt: int, note: str | None) -> EventRow:
        """The trace entry of a transition: its time, status, worker and error."""
        entry = (
            row["id"],
            row["updated_at"],
            row["status"],
            attempt,
            row.get("worker"),
            row.get("error_type"),
            row.get("error_message"),
            None,
            note,
            None,
        )
        return entry if note is None else self.clean.event_row(entry)

    def _start(self, row: Row) -> None:
        attempt = row.pop("_attempt")
        row = self._merge(row)
        # Its trace entry waits: the outcome takes it in if it comes before the flush.
        self._open[row["id"]] = (attempt, row["updated_at"], row.get("worker"))

    def _end(self, row: Row) -> None:
        attempt, note = row.pop("_attempt"), row.pop("_note", None)
        progress = row.pop("_progress", None)
        if progress is not None:  # the last of it lands before the outcome
            self._merge(progress)
        row = self._merge(row)
        entry = self._entry(row, attempt, note)
        opened = self._open.pop(row["id"], None)
        if opened is not None:
            if opened[0] == attempt:
                # Started and ended between two flushes: one entry, carrying the start.
                entry = (*entry[:9], opened[1])
            else:
                self._events.append(_running_entry(row["id"], opened))
        self._events.append(entry)

    def _collect_watched(self, *, heartbeat: bool) -> None:
        """Fold the running jobs' latest progress (and a heartbeat) into the batch."""
        now = _now() if heartbeat else None
        for source in list(self._running.values()):
            progress = source.take_progress()
            row = progress.row() if progress is not None else None
            if now is not None:
                beat: Row = {
                    "id": source.job_id,
                    "status": _RUNNING,
                    "state_seq": state_seq(JobStatus.RUNNING, source.attempt),
                    "created_at": now,
                    "updated_at": now,
                    "heartbeat_at": now,
                    "retries": source.attempt,
                }
                if source.sent_at is not None:  # the run's (see RUN_COLUMN)
                    beat["sent_at"] = source.sent_at
                if row is None:
                    row = beat
                else:
                    merge_row(row, beat)
            if row is not None:
                self._merge(row)

    def _take_batch(self) -> Batch:
        events = self._events
        if self._open:  # attempts still running: their start is written on its own
            events.extend(_running_entry(job_id, opened) for job_id, opened in self._open.items())
            self._open.clear()
        batch = Batch(list(self._rows.values()), events, self._items, self._logs)
        self._rows, self._events, self._items, self._logs = {}, [], [], []
        return batch

    def _give_back(self, batch: Batch) -> None:
        """Put a failed batch back in front of what was folded since."""
        newer = self._rows
        self._rows = {row["id"]: row for row in batch.updates}
        for row in newer.values():
            older = self._rows.get(row["id"])
            if older is None:
                self._rows[row["id"]] = row
            else:
                merge_row(older, row)
        self._events = [*batch.events, *self._events]
        self._items = batch.items + self._items
        self._logs = batch.logs + self._logs
        self._open.clear()

    # -- flushing -----------------------------------------------------------------

    def _start_thread(self) -> None:
        if self._closed:
            return
        with self._thread_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="jobtrack-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # the thread ends here, logged: nothing above it to tell
            if not self._closed:
                log.exception(
                    "tracking writer thread ended", extra={"job_id": None, "action": "flush"}
                )
        finally:
            self._turns += 1
            self._due = float("inf")  # no thread to step aside for

    def _loop(self) -> None:
        while not self._closed:
            delay = self.settings.flush_interval_s
            if self._failures:
                doublings = min(self._failures, _MAX_BACKOFF_DOUBLINGS)
                delay = min(delay * 2**doublings, _MAX_BACKOFF_S)
            if self._steps:
                self._turns += 1
                self._due = time.monotonic() + delay
            self._wake.wait(delay)
            self._wake.clear()
            if self._closed:
                break
            if self._steps:
                self._turns += 1
                self._due = 0.0  # woken: until it waits again (see _step_aside)
            try:
                now = time.monotonic()
                beat = now - self._last_heartbeat >= self.settings.heartbeat_interval_s
                if beat:
                    self._last_heartbeat = now
                with self._flush_lock:
                    self._fold()
                    self._collect_watched(heartbeat=beat)
                    if self.flush() and beat:
                        self._read_stop_requests()
            except Exception:  # the thread must survive anything a flush meets
                log.exception(
                    "tracking writer loop error", extra={"job_id": None, "action": "flush"}
                )

    def _read_stop_requests(self) -> None:
        """With each heartbeat: which running jobs of this process an operator asked to
        pause or cancel (one read by primary key for all of them). The job's next handle
        call stops it; nothing is read per call."""
        sources = dict(self._running)
        if not sources:
            return
        try:
            found = self.store.requests.stops(list(sources))
        except StoreError:
            return  # unreachable now: the flush's outage handling says so; next beat
        for job_id, stop in found.items():
            source = sources.get(job_id)
            if source is not None:
                source.request_stop(stop)

    def flush(self) -> bool:
        """Write everything queued now. Returns False if the database could not be
        reached (the data stays buffered, or spooled past ``buffer_max_jobs``, for the
        next try). Rows the database refuses for their data never block the others:
        see :meth:`_settle`."""
        with self._flush_lock:
            self._fold()
            if not self._replay_spool():
                self._spill_if_over_bound()
                return False
            batch = self._take_batch()
            if not batch:
                return True
            left, error = self._settle(batch)
            if error is not None:
                self._give_back(left)
                self._failed(error, left)
                self._spill_if_over_bound()
                return False
            self._recovered()
            return True

    def _settle(self, batch: Batch) -> tuple[Batch, Exception | None]:
        """Write ``batch``; returns what is left unwritten because the database could not
        be reached, and that error (an empty batch and None when all is settled).

        When the database refuses the batch for its data (not for being unreachable),
        the batch is halved by job until the refused jobs stand alone; each of those is
        tried once more in a deeper-cleaned form, then moved to the dead-letter folder
        (``jobtrack spool`` lists, replays or discards them). Every other row is written.
        """
        try:
            self.store.write_batch(batch)
        except DataRefused:
            pass
        except Exception as exc:
            return batch, exc
        else:
            return Batch(), None
        groups = _by_job(batch)
        if len(groups) == 1:
            return self._settle_one(groups[0])
        half = len(groups) // 2
        for n, part in enumerate((groups[:half], groups[half:])):
            left, error = self._settle(Batch.join(part))
            if error is not None:
                rest = [left] + (groups[half:] if n == 0 else [])
                return Batch.join(rest), error
        return Batch(), None

    def _settle_one(self, batch: Batch) -> tuple[Batch, Exception | None]:
        """One job's rows, refused: try them deep-cleaned, the row and its trace apart
        from its items; dead-letter what is still refused."""
        deep = self.clean.deep
        parts = [
            Batch([deep(row) for row in batch.updates], [deep(e) for e in batch.events]),
            Batch(items=[deep(i) for i in batch.items]),
            Batch(logs=[deep(line) for line in batch.logs]),
        ]
        for n, part in enumerate(parts):
            if not part:
                continue
            try:
                self.store.write_batch(part)
            except DataRefused as exc:
                self._dead_letter(part, exc)
            except Exception as exc:  # unreachable now: this part and the rest wait
                return Batch.join(parts[n:]), exc
        return Batch(), None

    def _dead_letter(self, batch: Batch, exc: DataRefused) -> None:
        job_id = batch.job_ids()[0] if batch.job_ids() else None
        try:
            path = self._spool.dead_letter(batch, str(exc))
        except OSError:
            log.exception(
                "the database refused a job's tracking data and the dead-letter "
                "file could not be written; dropped: %s",
                exc,
                extra={"job_id": job_id, "action": "dead_letter"},
            )
            return
        log.error(
            "the database refused a job's tracking data (%s); kept in %s (see: jobtrack spool)",
            exc,
            path,
            extra={"job_id": job_id, "action": "dead_letter"},
        )

    def _failed(self, error: Exception, batch: Batch) -> None:
        """Count a failed try; log once when an outage starts."""
        self._failures += 1
        if self._outage is None:
            self._outage = _Outage(time.monotonic())
            log.warning(
                "tracking database unreachable (%s): writes are kept in memory (spooled "
                "past %d jobs) and retried; tasks are not affected",
                error,
                self.settings.buffer_max_jobs,
                extra={
                    "job_id": batch.updates[0]["id"] if batch.updates else None,
                    "action": "flush",
                },
            )

    def _recovered(self) -> None:
        """Reset the failure count; log the end of an outage once, with a summary."""
        outage, self._outage = self._outage, None
        if outage is not None:
            log.info(
                "tracking database reachable again after %.1f s: %d failed tries, "
                "%d spool files written",
                time.monotonic() - outage.since,
                self._failures,
                outage.spooled,
                extra={"job_id": None, "action": "flush"},
            )
        self._failures = 0

    def _replay_spool(self) -> bool:
        """Write spooled batches, oldest first; False if the database was unreachable.

        Looks at the spool directory only after a failure (this process may have
        spooled) and every ``_SPOOL_CHECK_S`` (another process may have died with a
        spool), so the normal path costs nothing. A file the database refuses for its
        data is settled like a batch (its refused jobs go to the dead-letter folder); an
        unreadable file goes there whole: neither blocks the files behind it.
        """
        now = time.monotonic()
        if not self._failures and now < self._next_spool_check:
            return True
        self._next_spool_check = now + _SPOOL_CHECK_S
        for path in self._spool.pending():
            claimed = self._spool.claim(path)
            if claimed is None:
                continue
            try:  # cleaned again: the file may come from before values were cleaned
                batch = self._spool.read(claimed)
                batch = Batch(
                    [self.clean(row) for row in batch.updates],
                    [self.clean(e) for e in batch.events],
                    [self.clean(i) for i in batch.items],
                    [self.clean(line) for line in batch.logs],
                )
            except Exception as exc:  # corrupt or from an incompatible version
                self._spool.bury(claimed, f"unreadable: {exc}")
                log.error(
                    "spool file %s is unreadable (%s); moved to the dead-letter folder",
                    path.name,
                    exc,
                    extra={"job_id": None, "action": "replay"},
                )
                continue
            left, error = self._settle(batch)
            if error is not None:
                self._spool.put_back(claimed, left, whole=left is batch)
                self._failed(error, left)
                return False
            claimed.unlink()
            log.info(
                "replayed spooled tracking data from %s",
                path.name,
                extra={"job_id": None, "action": "replay"},
            )
        return True

    def _spill_if_over_bound(self, *, force: bool = False) -> None:
        """Move the buffer to a spool file when it is over the memory bound."""
        over = (
            len(self._rows) > self.settings.buffer_max_jobs
            or len(self._items) > self.settings.buffer_max_jobs * 10
            or len(self._logs) > self.settings.buffer_max_jobs * 10
        )
        if not (over or force):
            return
        batch = self._take_batch()
        if not batch:
            return
        try:
            path = self._spool.write(batch)
        except OSError:
            self._give_back(batch)
            log.exception(
                "spooling tracking data failed; it stays in memory",
                extra={"job_id": None, "action": "spool"},
            )
            return
        if self._outage is not None:
            self._outage.spooled += 1
            if self._outage.spooled > 1:
                return  # the outage's end says how many
        log.warning(
            "tracking database unreachable: %d job updates spooled to %s",
            len(batch.updates),
            path,
            extra={"job_id": None, "action": "spool"},
        )

    def pending(self) -> int:
        """Facts and rows not written yet."""
        with self._flush_lock:
            buffered = len(self._rows) + len(self._events) + len(self._items) + len(self._logs)
            return len(self._queue) + buffered

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what is buffered, spool what could not be written, stop the thread.

        Tries for ``exit_flush_timeout_s`` (or ``timeout_s``) at most, and not at all
        while the database is already known to be unreachable: a process that exits
        during an outage spools at once and goes (another process replays the file).
        """
        limit = self.settings.exit_flush_timeout_s if timeout_s is None else timeout_s
        with self._flush_lock:
            self._fold()
            self._collect_watched(heartbeat=False)
            deadline = time.monotonic() + limit
            if self._outage is None:  # not during a known outage: one starting now, retried
                while not self.flush() and time.monotonic() < deadline:
                    time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
            self._closed = True
            self._wake.set()
            self._fold()
            if self._rows or self._events or self._items or self._logs:
                self._spill_if_over_bound(force=True)


def _running_entry(job_id: str, opened: tuple[int, datetime, str | None]) -> EventRow:
    attempt, at, worker = opened
    return (job_id, at, _RUNNING, attempt, worker, None, None, None, None, None)


@dataclass
class _Outage:
    since: float
    spooled: int = 0


def _by_job(batch: Batch) -> list[Batch]:
    """``batch`` split into one batch per job (its row, events, items and log lines)."""
    groups: dict[str, Batch] = {}
    for row in batch.updates:
        groups.setdefault(row["id"], Batch()).updates.append(row)
    for event in batch.events:
        groups.setdefault(event[0], Batch()).events.append(event)
    for item in batch.items:
        groups.setdefault(item.job_id, Batch()).items.append(item)
    for line in batch.logs:
        groups.setdefault(line.job_id, Batch()).logs.append(line)
    return list(groups.values())


class SyncWriter:
    """Commit each transition before the task goes on.

    A :class:`BufferedWriter` underneath does the writing: each transition is queued
    and flushed at once (after anything still queued, so order holds), and its thread
    is the heartbeat and progress pump, as in buffered mode. While the database is
    unreachable transitions stay buffered and are retried in the background, so tasks
    do not wait on a dead connection. A failure is logged, never raised.
    """

    def __init__(self, store: Store, settings: Settings, cleaner: Cleaner | None = None) -> None:
        self.store = store
        self.settings = settings
        # The task's thread writes each transition itself: it never steps aside.
        self._buffer = BufferedWriter(store, settings, cleaner, step_aside=False)
        self.clean = self._buffer.clean

    def update(
        self,
        update: JobUpdate | Row,
        event: Event | None = None,
        *,
        trace: int | None = None,
        note: str | None = None,
    ) -> None:
        self._buffer.update(update, event, trace=trace, note=note)
        self._write_now()

    def started(self, source: ProgressSource, row: Row) -> None:
        self._buffer.started(source, row)
        self._write_now()

    def ended(self, source: ProgressSource, row: Row, note: str | None = None) -> None:
        self._buffer.ended(source, row, note)
        self._write_now()

    def released(self, source: ProgressSource) -> None:
        self._buffer.released(source)

    def item(self, item: Item) -> None:
        self._buffer.item(item)
        self._write_now()

    def event(self, event: Event) -> None:
        self._buffer.event(event)
        self._write_now()

    def log(self, line: LogLine) -> None:
        # Log lines are never committed one by one, in either mode: they go with the
        # next transition's write, or the thread's next flush.
        self._buffer.log(line)

    def _write_now(self) -> None:
        if not self._buffer.in_outage:
            self._buffer.flush()

    def flush(self) -> bool:
        return self._buffer.flush()

    def close(self, timeout_s: float | None = None) -> None:
        self._buffer.close(timeout_s)


_live_writers: weakref.WeakSet[BufferedWriter] = weakref.WeakSet()


def _reset_writers_in_child() -> None:
    for writer in list(_live_writers):
        writer._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_writers_in_child)


def make_writer(store: Store, settings: Settings, cleaner: Cleaner | None = None) -> Writer:
    factory: Callable[[Store, Settings, Cleaner | None], Writer] = (
        SyncWriter if settings.write_mode == "sync" else BufferedWriter
    )
    return factory(store, settings, cleaner)
