"""How writes reach the store.

:class:`BufferedWriter` (the default) keeps transitions in memory per process, folds
several transitions of one job into one row (:meth:`JobUpdate.merge`, the same rules as
the store's SQL), and writes them in one transaction every ``flush_interval_s`` or as
soon as ``flush_max_jobs`` / ``flush_max_items`` are waiting. A task never waits for the
database: it only takes a short in-memory lock. If a write fails the batch is kept and
tried again with backoff, merged under anything newer, so order is preserved.

:class:`SyncWriter` commits every transition before the task goes on, for people who
prefer that to throughput.

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
from datetime import datetime, timezone
from typing import Protocol

from .errors import StoreError
from .models import Event, Item, JobStatus, JobUpdate
from .settings import Settings
from .spool import Spool
from .store import Batch, Store

__all__ = ["BufferedWriter", "ProgressSource", "SyncWriter", "Writer", "make_writer"]

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


class Writer(Protocol):
    def update(self, update: JobUpdate, event: Event | None = None) -> None: ...
    def item(self, item: Item) -> None: ...
    def watch(self, source: ProgressSource) -> None: ...
    def unwatch(self, source: ProgressSource) -> None: ...
    def flush(self) -> bool: ...
    def close(self) -> None: ...


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BufferedWriter:
    """Buffer, coalesce and batch transitions; see the module docstring."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._spool = Spool(settings.spool_dir or default_spool_dir(), settings.database_url)
        self._init_process_state()
        _live_writers.add(self)

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()          # guards the buffers below
        self._flush_lock = threading.Lock()    # one flush at a time: keeps order
        self._wake = threading.Event()
        self._closed = False
        self._updates: dict[str, JobUpdate] = {}
        self._events: list[Event] = []
        self._items: list[Item] = []
        self._watched: dict[str, ProgressSource] = {}
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._last_heartbeat = time.monotonic()
        self._next_spool_check = 0.0

    def _after_fork_in_child(self) -> None:
        self._init_process_state()

    # -- what the wiring calls (hot path: memory only) ------------------------------

    def update(self, update: JobUpdate, event: Event | None = None) -> None:
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
        with self._lock:
            self._events.append(event)
        self._ensure_thread()

    def item(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            full = len(self._items) >= self.settings.flush_max_items
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
            self._thread = threading.Thread(
                target=self._run, name="jobtrack-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            delay = self.settings.flush_interval_s
            if self._failures:
                delay = min(delay * (2 ** self._failures), _MAX_BACKOFF_S)
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
                self.flush()
            except Exception:  # the thread must survive anything a flush meets
                log.exception("tracking writer loop error", extra={"action": "flush"})

    def _collect_watched(self, *, heartbeat: bool) -> None:
        """Take the running jobs' latest progress (and a heartbeat) into the buffer."""
        with self._lock:
            sources = list(self._watched.values())
        now = _now()
        for source in sources:
            pending = source.take_progress()
            if heartbeat:
                beat = JobUpdate.transition(
                    source.job_id, JobStatus.RUNNING, source.attempt, at=now, heartbeat_at=now,
                    retries=source.attempt,
                )
                if pending is None:
                    pending = beat
                else:
                    pending.merge(beat)
            if pending is not None:
                self.update(pending)

    def _take_batch(self) -> Batch:
        with self._lock:
            batch = Batch(list(self._updates.values()), self._events, self._items)
            self._updates, self._events, self._items = {}, [], []
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

    def flush(self) -> bool:
        """Write everything buffered now. Returns False if the database refused it
        (the data stays buffered, or spooled past ``buffer_max_jobs``, for the next try)."""
        with self._flush_lock:
            if not self._replay_spool():
                self._spill_if_over_bound()
                return False
            batch = self._take_batch()
            if not batch:
                return True
            try:
                self.store.write_batch(batch)
            except Exception as exc:
                self._give_back(batch)
                self._failures += 1
                log.warning(
                    "tracking write of %d jobs failed (try %d), kept for retry: %s",
                    len(batch.updates), self._failures, exc,
                    extra={"job_id": batch.updates[0].id if batch.updates else None,
                           "action": "flush"},
                )
                self._spill_if_over_bound()
                return False
            if self._failures:
                log.info("tracking writes recovered after %d failed tries", self._failures,
                         extra={"job_id": None, "action": "flush"})
            self._failures = 0
            return True

    def _replay_spool(self) -> bool:
        """Write spooled batches, oldest first; False if the database refused one.

        Looks at the spool directory only after a failure (this process may have
        spooled) and every ``_SPOOL_CHECK_S`` (another process may have died with a
        spool), so the normal path costs nothing.
        """
        now = time.monotonic()
        if not self._failures and now < self._next_spool_check:
            return True
        self._next_spool_check = now + _SPOOL_CHECK_S
        for path in self._spool.pending():
            claimed = self._spool.claim(path)
            if claimed is None:
                continue
            try:
                self.store.write_batch(self._spool.read(claimed))
            except Exception as exc:
                self._spool.release(claimed)
                self._failures += 1
                log.warning("replaying spooled tracking data failed (try %d): %s",
                            self._failures, exc, extra={"job_id": None, "action": "replay"})
                return False
            claimed.unlink()
            log.info("replayed spooled tracking data from %s", path.name,
                     extra={"job_id": None, "action": "replay"})
        return True

    def _spill_if_over_bound(self, *, force: bool = False) -> None:
        """Move the buffer to a spool file when it is over the memory bound."""
        with self._lock:
            over = (len(self._updates) > self.settings.buffer_max_jobs
                    or len(self._items) > self.settings.buffer_max_jobs * 10)
        if not (over or force):
            return
        batch = self._take_batch()
        if not batch:
            return
        try:
            path = self._spool.write(batch)
        except OSError:
            self._give_back(batch)
            log.exception("spooling tracking data failed; it stays in memory",
                          extra={"job_id": None, "action": "spool"})
            return
        log.warning("database unreachable: %d job updates spooled to %s",
                    len(batch.updates), path, extra={"job_id": None, "action": "spool"})

    def pending(self) -> int:
        with self._lock:
            return len(self._updates) + len(self._events) + len(self._items)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is buffered (retrying until ``timeout_s``), spool what still could
        not be written, and stop the thread."""
        self._collect_watched(heartbeat=False)
        deadline = time.monotonic() + timeout_s
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        self._closed = True
        self._wake.set()
        if self.pending():
            self._spill_if_over_bound(force=True)


class SyncWriter:
    """Commit each transition at once.

    When a write fails (the database is unreachable), this writer switches to a
    :class:`BufferedWriter` that keeps the data in order and retries in the background,
    so tasks do not wait on a dead connection; it writes directly again once that
    buffer has drained. A failure is logged, never raised.
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._fallback = BufferedWriter(store, settings)

    def _write(self, batch: Batch, job_id: str) -> None:
        if self._fallback.pending():
            self._give_to_fallback(batch)
            return
        try:
            self.store.write_batch(batch)
        except StoreError:
            log.warning("tracking write failed; kept and retried in the background",
                        exc_info=True, extra={"job_id": job_id, "action": "write"})
            self._give_to_fallback(batch)

    def _give_to_fallback(self, batch: Batch) -> None:
        for update in batch.updates:
            self._fallback.update(update)
        for event in batch.events:
            self._fallback.event(event)
        for item in batch.items:
            self._fallback.item(item)

    def update(self, update: JobUpdate, event: Event | None = None) -> None:
        self._write(Batch([update], [event] if event else []), update.id)

    def item(self, item: Item) -> None:
        self._write(Batch(items=[item]), item.job_id)

    def watch(self, source: ProgressSource) -> None:
        pass

    def unwatch(self, source: ProgressSource) -> None:
        pending = source.take_progress()
        if pending is not None:
            self.update(pending)

    def flush(self) -> bool:
        return self._fallback.flush()

    def close(self) -> None:
        self._fallback.close()


_live_writers: weakref.WeakSet[BufferedWriter] = weakref.WeakSet()


def _reset_writers_in_child() -> None:
    for writer in list(_live_writers):
        writer._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_writers_in_child)


def make_writer(store: Store, settings: Settings) -> Writer:
    factory: Callable[[Store, Settings], Writer] = (
        SyncWriter if settings.write_mode == "sync" else BufferedWriter
    )
    return factory(store, settings)
