"""How writes reach the store.

:class:`BufferedWriter` (the default) keeps transitions in memory per process, folds
several transitions of one job into one row (:meth:`JobUpdate.merge`, the same rules as
the store's SQL), and writes them in one transaction every ``flush_interval_s`` or as
soon as ``flush_max_jobs`` / ``flush_max_items`` are waiting. A task never waits for the
database: it only takes a short in-memory lock. If a write fails the batch is kept and
tried again with backoff, merged under anything newer, so order is preserved. Every
value is cleaned and bounded on the way in (:class:`~jobtrack.payload.Cleaner`), and a
row the database still refuses is isolated and set aside, never left to block the rest.

:class:`SyncWriter` commits every transition before the task goes on, for people who
prefer that to throughput; the same buffered writer underneath is its heartbeat and
progress pump.

Both are fork-safe: a forked child starts with an empty buffer, no thread, and a store
whose pool holds none of the parent's connections.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from .errors import DataRefused, StoreError
from .models import Event, Item, JobStatus, JobUpdate, LogLine, Stop
from .payload import Cleaner
from .settings import Settings
from .spool import Spool
from .store import Batch, Store

__all__ = ["BufferedWriter", "ProgressSource", "SyncWriter", "Writer", "cleaner_for", "make_writer"]

log = logging.getLogger("jobtrack.writer")

_MAX_BACKOFF_S = 5.0
_SPOOL_CHECK_S = 30.0


def default_spool_dir() -> str:
    """Where spool files go unless ``spool_dir`` is set: the system's temp directory."""
    return os.path.join(tempfile.gettempdir(), "jobtrack-spool")


class ProgressSource(Protocol):
    """A running job whose progress the writer collects at each flush."""

    job_id: str
    attempt: int

    def take_progress(self) -> JobUpdate | None: ...
    def request_stop(self, stop: Stop) -> None: ...


class Writer(Protocol):
    clean: Cleaner

    def update(
        self, update: JobUpdate, event: Event | None = None, *, trace: int | None = None
    ) -> None: ...
    def item(self, item: Item) -> None: ...
    def event(self, event: Event) -> None: ...
    def log(self, line: LogLine) -> None: ...
    def watch(self, source: ProgressSource) -> None: ...
    def unwatch(self, source: ProgressSource) -> None: ...
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
    """Buffer, coalesce and batch transitions; see the module docstring."""

    def __init__(self, store: Store, settings: Settings, cleaner: Cleaner | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clean = cleaner or cleaner_for(settings)
        self._spool = Spool(settings.spool_dir or default_spool_dir(), settings.database_url)
        self._init_process_state()
        _live_writers.add(self)

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()  # guards the buffers below
        self._flush_lock = threading.RLock()  # one flush at a time: keeps order
        self._wake = threading.Event()
        self._closed = False
        self._updates: dict[str, JobUpdate] = {}
        self._events: list[Event] = []
        self._items: list[Item] = []
        self._logs: list[LogLine] = []
        self._watched: dict[str, ProgressSource] = {}
        self._thread: threading.Thread | None = None
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

    # -- what the wiring calls (hot path: memory only) ------------------------------

    def update(
        self, update: JobUpdate, event: Event | None = None, *, trace: int | None = None
    ) -> None:
        """Buffer a transition; with ``trace`` (the attempt), also its trace entry,
        made from the cleaned update (so it needs no cleaning of its own)."""
        update = self.clean(update)
        if event is not None:
            event = self.clean(event)
        elif trace is not None:
            event = Event.of(update, trace)
        with self._lock:
            current = self._updates.get(update.id)
            if current is None:
                self._updates[update.id] = update
            else:
                current.merge(update)
            if event is not None:
                self._events.append(event)
            full = len(self._updates) >= self.settings.flush_max_jobs
        self._ensure_thread()
        if full:
            self._wake.set()

    def event(self, event: Event) -> None:
        event = self.clean(event)
        with self._lock:
            self._events.append(event)
        self._ensure_thread()

    def item(self, item: Item) -> None:
        item = self.clean(item)
        with self._lock:
            self._items.append(item)
            full = len(self._items) >= self.settings.flush_max_items
        self._ensure_thread()
        if full:
            self._wake.set()

    def log(self, line: LogLine) -> None:
        """Buffer a captured log line (the items' path: flushed at the interval, or at
        once past ``flush_max_items``)."""
        line = self.clean(line)
        with self._lock:
            self._logs.append(line)
            full = len(self._logs) >= self.settings.flush_max_items
        self._ensure_thread()
        if full:
            self._wake.set()

    def watch(self, source: ProgressSource) -> None:
        with self._lock:
            self._watched[source.job_id] = source
        self._ensure_thread()

    def unwatch(self, source: ProgressSource) -> None:
        with self._lock:
            if self._watched.get(source.job_id) is source:
                del self._watched[source.job_id]
        pending = source.take_progress()
        if pending is not None:
            self.update(pending)

    # -- flushing -----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        thread = self._thread
        if (thread is not None and thread.is_alive()) or self._closed:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="jobtrack-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            delay = self.settings.flush_interval_s
            if self._failures:
                delay = min(delay * (2**self._failures), _MAX_BACKOFF_S)
            self._wake.wait(delay)
            self._wake.clear()
            if self._closed:
                break
            try:
                now = time.monotonic()
                beat = now - self._last_heartbeat >= self.settings.heartbeat_interval_s
                if beat:
                    self._last_heartbeat = now
                self._collect_watched(heartbeat=beat)
                if self.flush() and beat:
                    self._read_stop_requests()
            except Exception:  # the thread must survive anything a flush meets
                log.exception(
                    "tracking writer loop error", extra={"job_id": None, "action": "flush"}
                )

    def _collect_watched(self, *, heartbeat: bool) -> None:
        """Take the running jobs' latest progress (and a heartbeat) into the buffer."""
        with self._lock:
            sources = list(self._watched.values())
        now = _now()
        for source in sources:
            pending = source.take_progress()
            if heartbeat:
                beat = JobUpdate.transition(
                    source.job_id,
                    JobStatus.RUNNING,
                    source.attempt,
                    at=now,
                    heartbeat_at=now,
                    retries=source.attempt,
                )
                if pending is None:
                    pending = beat
                else:
                    pending.merge(beat)
            if pending is not None:
                self.update(pending)

    def _read_stop_requests(self) -> None:
        """With each heartbeat: which running jobs of this process an operator asked to
        pause or cancel (one read by primary key for all of them). The job's next handle
        call stops it; nothing is read per call."""
        with self._lock:
            sources = dict(self._watched)
        if not sources:
            return
        try:
            found = self.store.stop_requests(list(sources))
        except StoreError:
            return  # unreachable now: the flush's outage handling says so; next beat
        for job_id, stop in found.items():
            source = sources.get(job_id)
            if source is not None:
                source.request_stop(stop)

    def _take_batch(self) -> Batch:
        with self._lock:
            batch = Batch(list(self._updates.values()), self._events, self._items, self._logs)
            self._updates, self._events, self._items, self._logs = {}, [], [], []
        return batch

    def _give_back(self, batch: Batch) -> None:
        """Put a failed batch back in front of what arrived since."""
        with self._lock:
            newer = self._updates
            self._updates = {u.id: u for u in batch.updates}
            for update in newer.values():
                older = self._updates.get(update.id)
                if older is None:
                    self._updates[update.id] = update
                else:
                    older.merge(update)
            self._events = batch.events + self._events
            self._items = batch.items + self._items
            self._logs = batch.logs + self._logs

    def flush(self) -> bool:
        """Write everything buffered now. Returns False if the database could not be
        reached (the data stays buffered, or spooled past ``buffer_max_jobs``, for the
        next try). Rows the database refuses for their data never block the others:
        see :meth:`_settle`."""
        with self._flush_lock:
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
            Batch([deep(u) for u in batch.updates], [deep(e) for e in batch.events]),
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
                extra={"job_id": batch.updates[0].id if batch.updates else None, "action": "flush"},
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
                    [self.clean(u) for u in batch.updates],
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
        with self._lock:
            over = (
                len(self._updates) > self.settings.buffer_max_jobs
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
        with self._lock:
            return len(self._updates) + len(self._events) + len(self._items) + len(self._logs)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what is buffered, spool what could not be written, stop the thread.

        Tries for ``exit_flush_timeout_s`` (or ``timeout_s``) at most, and not at all
        while the database is already known to be unreachable: a process that exits
        during an outage spools at once and goes (another process replays the file).
        """
        limit = self.settings.exit_flush_timeout_s if timeout_s is None else timeout_s
        self._collect_watched(heartbeat=False)
        deadline = time.monotonic() + limit
        if self._outage is None:  # not during a known outage: one that starts now, retried
            while not self.flush() and time.monotonic() < deadline:
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        self._closed = True
        self._wake.set()
        if self.pending():
            self._spill_if_over_bound(force=True)


@dataclass
class _Outage:
    since: float
    spooled: int = 0


def _by_job(batch: Batch) -> list[Batch]:
    """``batch`` split into one batch per job (its update, events and items)."""
    groups: dict[str, Batch] = {}
    for update in batch.updates:
        groups.setdefault(update.id, Batch()).updates.append(update)
    for event in batch.events:
        groups.setdefault(event.job_id, Batch()).events.append(event)
    for item in batch.items:
        groups.setdefault(item.job_id, Batch()).items.append(item)
    for line in batch.logs:
        groups.setdefault(line.job_id, Batch()).logs.append(line)
    return list(groups.values())


class SyncWriter:
    """Commit each transition before the task goes on.

    A :class:`BufferedWriter` underneath does the writing: each transition is added and
    flushed at once (after anything still buffered, so order holds), and its thread
    is the heartbeat and progress pump, as in buffered mode. While the database is
    unreachable transitions stay buffered and are retried in the background, so tasks
    do not wait on a dead connection. A failure is logged, never raised.
    """

    def __init__(self, store: Store, settings: Settings, cleaner: Cleaner | None = None) -> None:
        self.store = store
        self.settings = settings
        self._buffer = BufferedWriter(store, settings, cleaner)
        self.clean = self._buffer.clean

    def update(
        self, update: JobUpdate, event: Event | None = None, *, trace: int | None = None
    ) -> None:
        self._buffer.update(update, event, trace=trace)
        self._write_now()

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

    def watch(self, source: ProgressSource) -> None:
        self._buffer.watch(source)

    def unwatch(self, source: ProgressSource) -> None:
        self._buffer.unwatch(source)

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
