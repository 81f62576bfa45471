"""The live feed of job changes behind ``GET /api/stream`` (Server-Sent Events).

One thread per app learns which jobs changed and hands their ids to every open stream:

* on PostgreSQL it LISTENs: every write the store makes sends a notification naming the
  jobs it changed, delivered at commit, so a change reaches the browser about as soon as
  it is in the table, whichever process wrote it;
* elsewhere (SQLite) it polls, every ``web_poll_interval_s``, for rows whose
  ``updated_at`` falls in the last :data:`LOOKBACK_S` seconds and whose version changed.
  A row written later than that after its own timestamp (a worker that spooled through
  an outage) shows on the next page load rather than live.

If the LISTEN connection drops, the thread polls until it is back, then scans once
for what it missed. With read replicas (``read_database_url``) the thread still LISTENs
on the primary (a standby cannot), and reads the changed rows on a replica once it has
replayed past the primary's WAL position at the notification (at most ``read_wait_s``;
then on the primary), so no event carries a row older than the change it announces.

The thread reads each round's changed rows once and hands the rows
to every open stream; each stream keeps those it may see (an owner-bound token sees its
owner's only) and sends one ``job`` event per row. A stream holds no thread and no
connection of its own, so any number of them cost the database nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import StoreError
from ..models import Job, JobFilter, JobStatus
from ..store import ChangeListener, Store, current_owner, owner_scope

__all__ = ["LOOKBACK_S", "ChangeFeed", "job_event"]

log = logging.getLogger("jobtrack.web")

#: How far back (by ``updated_at``) polling looks for changed rows, in seconds.
LOOKBACK_S = 60.0
#: Seconds between keep-alive comments on an idle stream (proxies close silent ones).
KEEPALIVE_S = 15.0
_CLOSED: dict[str, Job] = {"\x00closed": Job(id="\x00closed", status=JobStatus.PENDING)}
#: Most job ids read in one query (an IN list).
_READ_CHUNK = 500

#: The fields a ``job`` event carries: enough to redraw a row or a job page's header.
EVENT_FIELDS = (
    "id",
    "name",
    "task_name",
    "job_type",
    "owner_id",
    "status",
    "progress_percent",
    "progress_stage",
    "progress_message",
    "total_items",
    "processed_items",
    "failed_items",
    "skipped_items",
    "retries",
    "error_type",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "duration_ms",
    "updated_at",
)


def job_event(job: Job) -> str:
    """One SSE message for a job's current row."""
    data = {name: getattr(job, name) for name in EVENT_FIELDS}
    body = json.dumps(data, default=_json_default, separators=(",", ":"))
    return f"event: job\ndata: {body}\n\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclasses.dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Job]]
    #: The owner scope it was opened in: its rows are read under it (None: every owner).
    owner: str | None = None


class ChangeFeed:
    """Fans out changed job ids to subscribers; started by the first subscriber."""

    def __init__(self, store: Store, *, poll_interval_s: float) -> None:
        self.store = store
        self.poll_interval_s = poll_interval_s
        self._subscribers: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._versions: dict[str, tuple[Any, ...]] = {}
        self._ready = threading.Event()
        self._listen = False

    # -- subscribers (event loop side) ------------------------------------------------

    async def changes(self) -> AsyncIterator[dict[str, Job] | None]:
        """An empty dict once the feed is watching, then the changed jobs' rows (by id)
        as they come, and None after each quiet ``KEEPALIVE_S``."""
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(), current_owner())
        with self._lock:
            self._subscribers.add(sub)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True, name="jobtrack-feed")
                self._thread.start()
        try:
            deadline = time.monotonic() + 10.0
            while not self._ready.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # no thread held while waiting
            yield {}
            while not self._stop.is_set():
                try:
                    rows = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield None
                    continue
                while not sub.queue.empty():  # a slow reader gets the latest, no backlog
                    rows = {**rows, **sub.queue.get_nowait()}
                if _CLOSED.keys() <= rows.keys():
                    return
                yield rows
        finally:
            with self._lock:
                self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """Stop the thread and end every open stream."""
        self._stop.set()
        self._hand_out(_CLOSED)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the feed thread --------------------------------------------------------------

    def _publish(self, ids: Iterable[str]) -> None:
        """Read the changed rows once per owner scope the open streams were opened in
        (so row-level security, when on, decides what each stream may see), and hand
        them to those streams."""
        wanted = sorted(set(ids))
        with self._lock:
            owners = {sub.owner for sub in self._subscribers}
        try:
            # The changes are committed on the primary (LISTEN needs it); read on a
            # replica, they are read once it has replayed them (else on the primary).
            seen = self.store.primary_lsn() if self.store.replicas is not None else None
            with self.store.reading(min_lsn=seen):
                for owner in owners:
                    rows: dict[str, Job] = {}
                    with owner_scope(owner) if owner else contextlib.nullcontext():
                        for start in range(0, len(wanted), _READ_CHUNK):
                            chunk = tuple(wanted[start : start + _READ_CHUNK])
                            found = self.store.list_jobs(JobFilter(ids=chunk), limit=len(chunk))
                            rows.update((job.id, job) for job in found)
                    if rows:
                        self._hand_out(rows, owners={owner})
        except StoreError as exc:
            log.warning("live feed: %s", exc, extra={"action": "feed", "job_id": None})

    def _hand_out(self, rows: dict[str, Job], owners: set[str | None] | None = None) -> None:
        """Give ``rows`` to the streams opened in one of ``owners`` (None: every one)."""
        with self._lock:
            subscribers = [s for s in self._subscribers if owners is None or s.owner in owners]
        for sub in subscribers:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, rows)

    def _run(self) -> None:
        listener: ChangeListener | None = None
        self._listen = self.store.dialect == "postgresql"
        self._scan(publish=False)
        while not self._stop.is_set():
            listener = self._step(listener)
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    def _step(self, listener: ChangeListener | None) -> ChangeListener | None:
        """Wait for (or poll for) one round of changes and publish them; returns the
        listener to use next (None after it failed)."""
        try:
            if self._listen and listener is None:
                listener = self.store.listen_changes()
                self._listen = listener is not None
                if self._ready.is_set():
                    self._scan(publish=True)  # what happened while not listening
            self._ready.set()
            if listener is None:
                self._stop.wait(self.poll_interval_s)
                self._scan(publish=True)
                return None
            ids = listener.wait(self.poll_interval_s)
            if ids is None:
                self._scan(publish=True)
            elif ids:
                self._publish(ids)
            return listener
        except StoreError as exc:
            self._ready.set()
            log.warning("live feed: %s; retrying", exc, extra={"action": "feed", "job_id": None})
            if listener is not None:
                with contextlib.suppress(Exception):
                    listener.close()
            self._stop.wait(max(self.poll_interval_s, 1.0))
            return None

    def _scan(self, *, publish: bool) -> None:
        """Poll: ids whose version changed within the lookback window."""
        since = datetime.now(UTC) - timedelta(seconds=LOOKBACK_S)
        try:
            with self.store.reading():
                rows = self.store.recent_changes(since=since)
        except StoreError as exc:
            log.warning("live feed: %s", exc, extra={"action": "feed", "job_id": None})
            return
        seen = dict(rows)
        changed = [
            job_id for job_id, version in seen.items() if self._versions.get(job_id) != version
        ]
        self._versions = seen
        if publish and changed:
            self._publish(changed)
