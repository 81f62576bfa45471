"""Upkeep: lost jobs, retention, and what a worker's main process does in the background.

* :func:`reap` marks running jobs whose worker stopped beating as lost;
  :func:`republish_lost` publishes them again when the settings ask for it.
  :func:`reap_vanished` marks lost the pending jobs whose message the broker no longer
  has (purged, expired), where the broker can be read (Redis).
* :func:`prune_by_retention` applies the ``keep_*_days`` settings.
* :class:`WorkerUpkeep` runs in each worker's main process: it keeps the open cancel
  and pause requests (read when the worker starts, refreshed every heartbeat interval,
  and told at once by a pause's broadcast), so a worker does not run a job cancelled or
  paused while it was queued or while the worker was away, and it reaps lost jobs every
  ``reap_interval_s``, one worker per database at a time (a lease row).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from .brokers import vanished_messages
from .control import publish_again, replayable_input
from .errors import StoreError
from .models import Stop
from .settings import Settings
from .store import Store, describe_url
from .tracker import Tracker

__all__ = [
    "REAP_LEASE",
    "WorkerUpkeep",
    "prune_by_retention",
    "reap",
    "reap_vanished",
    "republish_lost",
]

log = logging.getLogger("jobtrack.maintenance")

#: The lease row whose holder reaps for every worker of a database.
REAP_LEASE = "reap"


def utcnow() -> datetime:
    return datetime.now(UTC)


def reap(store: Store, lost_after_s: float) -> list[str]:
    """Mark jobs lost whose heartbeat is older than ``lost_after_s``; log each one."""
    lost = store.upkeep.mark_lost(heartbeat_before=utcnow() - timedelta(seconds=lost_after_s))
    for job_id in lost:
        log.warning(
            "job marked lost: no heartbeat from its worker for %g s",
            lost_after_s,
            extra={"job_id": job_id, "action": "reap"},
        )
    return lost


def reap_vanished(app: Any, store: Store, pending_lost_after_s: float) -> list[str]:
    """Mark lost the jobs pending for over ``pending_lost_after_s`` (unchanged since)
    whose message is in no queue of the broker and held by no worker: purged (``celery
    purge``, ``app.control.purge()``) or dropped as expired, they will never run. Only
    where the broker can be read (Redis, the queues ``app`` declares: see
    :func:`jobtrack.brokers.vanished_messages`); elsewhere nothing changes. 0: off.
    Such jobs are not re-published (a purge is someone's decision). Returns their ids."""
    if pending_lost_after_s <= 0:
        return []
    before = utcnow() - timedelta(seconds=pending_lost_after_s)
    candidates = store.upkeep.stale_pending(updated_before=before)
    gone = vanished_messages(app, candidates) if candidates else None
    if not gone:
        return []
    marked = store.upkeep.mark_vanished({i: candidates[i] for i in gone}, updated_before=before)
    for job_id in marked:
        log.warning(
            "job marked lost: pending for over %g s and its message is in no queue %r of "
            "the broker nor held by a worker",
            pending_lost_after_s,
            candidates[job_id],
            extra={"job_id": job_id, "action": "reap"},
        )
    return marked


def republish_lost(app: Any, tracker: Tracker, job_ids: list[str]) -> list[str]:
    """Publish lost jobs again under their own id, as their next retry; returns the ids
    published. A job past its ``max_retries`` ends failed; one whose recorded input is
    incomplete (redacted, cut, or replaced by argsrepr) is left lost, with a log line."""
    published = []
    for job_id in job_ids:
        job = tracker.store.get_job(job_id)
        replay = replayable_input(job.input_data)
        if job.max_retries is not None and job.retries >= job.max_retries:
            tracker.fail_job(
                job_id, f"lost, and its retries are used up (max_retries={job.max_retries})"
            )
        elif job.task_name is None or replay is None:
            log.warning(
                "lost job not re-published: its recorded input is incomplete",
                extra={"job_id": job_id, "action": "republish"},
            )
        else:
            publish_again(app, job, replay, job.retries + 1)
            published.append(job_id)
    return published


def prune_by_retention(store: Store, settings: Settings) -> dict[str, int]:
    """Apply the keep_*_days settings; returns how many jobs went, per status (and how
    many audit entries and alert messages, under ``actions`` and ``alerts``)."""
    now = utcnow()
    removed: dict[str, int] = {}
    groups: tuple[tuple[tuple[str, ...], float], ...] = (
        (("completed",), settings.keep_completed_days),
        (("failed",), settings.keep_failed_days),
        (("cancelled", "lost"), settings.keep_cancelled_days),
    )
    if store.partitioned() is not None:
        if all(days > 0 for _, days in groups):
            cutoffs = {
                status: now - timedelta(days=days)
                for statuses, days in groups
                for status in statuses
            }
            removed["partitions"], removed["jobs"] = store.drop_partitions(cutoffs, now=now)
        else:
            log.info(
                "partitions are dropped only when every keep_*_days setting is above 0",
                extra={"job_id": None, "action": "prune"},
            )
        groups = ()
    for statuses, days in groups:
        if days > 0:
            count = store.prune(finished_before=now - timedelta(days=days), statuses=statuses)
            removed[",".join(statuses)] = count
            if count:
                log.info(
                    "pruned %d %s jobs older than %g days",
                    count,
                    "/".join(statuses),
                    days,
                    extra={"job_id": None, "action": "prune"},
                )
    if settings.keep_actions_days > 0:
        before = now - timedelta(days=settings.keep_actions_days)
        removed["actions"] = store.actions.prune_actions(before=before)
    if settings.keep_alerts_days > 0:
        removed["alerts"] = store.alerts.prune_alerts(
            before=now - timedelta(days=settings.keep_alerts_days)
        )
    return removed


class WorkerUpkeep:
    """A worker main process's background chores (see the module docstring).

    :meth:`load_requests` runs once before the worker takes tasks (bounded by the
    connection timeout); :meth:`start` starts the thread once the worker is ready.
    :meth:`requested` is a dict lookup, cheap enough for the consumer loop.
    """

    def __init__(self, app: Any, tracker: Tracker) -> None:
        self.app = app
        self.tracker = tracker
        self.settings = tracker.settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._requests: dict[str, Stop] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_reap = 0.0
        self._unreachable = False  # the database did not answer the last round
        self._started = False  # the thread has started: the worker takes tasks

    def requested(self, job_id: str) -> Stop | None:
        """Whether an operator asked to cancel or pause ``job_id``, as last known here
        (a hint: verify with the store before acting on it)."""
        return self._requests.get(job_id)

    def hold(self, job_id: str, stop: Stop) -> None:
        """Learn of a request now (a broadcast), ahead of the next refresh."""
        self._requests = {**self._requests, job_id: stop}

    def load_requests(self) -> bool:
        """Read the open cancel and pause requests; False if the database did not
        answer. Logged once when it stops answering and once when it answers again, not
        at every round of an outage.

        The first read, before the worker takes tasks (``worker_init``), is also the
        check ``require_database`` asks for: the database unusable then (or its tables
        behind this jobtrack) raises ``SystemExit`` with the reason, which stops the
        worker before it starts."""
        if self.settings.require_database and not self._started:
            self._require_database()
        try:
            self._requests = self.tracker.store.requests.open()
        except StoreError as exc:
            if not self._unreachable:
                log.warning(
                    "could not read open cancel and pause requests: %s (tried again every "
                    "round; logged again when the database answers)",
                    exc,
                    extra={"job_id": None, "action": "open_requests"},
                )
            self._unreachable = True
            return False
        if self._unreachable:
            log.info(
                "the tracking database answers the worker's upkeep again",
                extra={"job_id": None, "action": "open_requests"},
            )
        self._unreachable = False
        return True

    def _require_database(self) -> None:
        """Stop the worker (``SystemExit``) unless the tracking database answers and its
        tables are at this jobtrack's revision."""
        from .migrate import head_revision

        store = self.tracker.store
        where = describe_url(self.settings.database_url)
        try:
            store.requests.open()  # connects (and creates or upgrades the tables, if told)
            current, head = store.schema_revision(), head_revision()
        except StoreError as exc:
            problem = str(exc)
        else:
            if current == head:
                return
            problem = (
                f"its tables are at revision {current or '(none)'}, this jobtrack needs "
                f"{head}: run jobtrack db upgrade"
            )
        message = (
            f"jobtrack: require_database is set and the tracking database {where} cannot "
            f"be used: {problem}"
        )
        log.critical(message, extra={"job_id": None, "action": "worker_init"})
        raise SystemExit(message)

    def start(self) -> None:
        self._started = True
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="jobtrack-upkeep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        period = min(self.settings.heartbeat_interval_s, self.settings.reap_interval_s)
        while not self._stop.wait(period):
            self._round()

    def _round(self) -> None:
        try:
            self.step()
        except Exception:  # the thread must outlive anything one round meets
            log.exception("worker upkeep round failed", extra={"job_id": None, "action": "upkeep"})

    @staticmethod
    def _make_partitions(store: Store) -> None:
        """Partitioned tables: the next periods' partitions, ahead of need. A failure
        (say a lock not granted in time) is logged and tried again next round; rows of
        a period without its partition wait in the default one meanwhile."""
        try:
            if store.partitioned() is not None:
                store.ensure_partitions()
        except StoreError as exc:
            log.warning(
                "making the next partitions failed: %s (tried again next round)",
                exc,
                extra={"job_id": None, "action": "partitions"},
            )

    def step(self, now: float | None = None) -> list[str]:
        """One round: refresh the open requests; reap when due and holding the lease.
        Returns the ids marked lost. While the database does not answer, nothing else
        is tried."""
        if not self.load_requests():
            return []
        clock = time.monotonic() if now is None else now
        if not self.settings.reap_in_workers or clock < self._next_reap:
            return []
        self._next_reap = clock + self.settings.reap_interval_s
        store = self.tracker.store
        try:
            if not store.leases.take(REAP_LEASE, self.holder, self.settings.reap_interval_s):
                return []
            self._make_partitions(store)
            lost = reap(store, self.settings.lost_after_s)
            if lost and self.settings.reap_republish:
                republish_lost(self.app, self.tracker, lost)
            lost += reap_vanished(self.app, store, self.settings.pending_lost_after_s)
        except StoreError as exc:
            log.warning(
                "reaping lost jobs failed: %s", exc, extra={"job_id": None, "action": "reap"}
            )
            return []
        return lost
