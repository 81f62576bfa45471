"""Evaluating the rules and delivering what they say: one pass at a time.

A pass (``jobtrack alerts run`` every ``alerts_interval_s``, or the ``jobtrack.alerts``
beat task) holds the ``alerts`` lease while it runs, so one runner at a time evaluates a
database (a runner killed mid-pass gives it up at once on its own host, else when it
expires); then, for each rule:

* **Single-job rules** (failed, lost, stuck, slow, queued, item_failure_rate) read the
  jobs they should report and have not (``jobtrack_alert_seen``). A burst is gathered for
  ``group_wait`` after its first job, then sent as one message ("1,200 import jobs
  failed in 5 min"); after a message, the rule holds what comes for ``cooldown`` and
  sends it as the next.
* **failure_rate** measures the failed share of the jobs that finished in its window,
  sends "firing" when it goes over its threshold (with at least ``min_jobs`` jobs), and
  "resolved" when it is back under.

An alert is recorded with a pending delivery per channel, and its jobs marked reported,
in one transaction, before anything is sent; each delivery is marked sent right after
its channel accepts it. A runner killed mid-pass therefore leaves only undelivered
messages, which the next pass sends; what was delivered is never sent again. A failed
delivery is retried with exponential backoff (``retry_after``, doubling, at most an
hour) up to the channel's ``max_attempts``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import leases
from ..errors import JobtrackError
from ..models import Job
from ..settings import Settings
from ..store import Store
from ..store.alerts import AlertState, Delivery
from .channels import DeliveryFailed, Message
from .rules import AlertConfig, Rule

__all__ = ["ALERT_LEASE", "AlertRunner", "PassReport"]

log = logging.getLogger("jobtrack.alerts")

#: The lease row whose holder evaluates the rules of a database.
ALERT_LEASE = "alerts"
#: Jobs one message of a rule covers at most (the count says how many more).
MAX_JOBS_PER_PASS = 10_000
#: Jobs a message lists by name.
SAMPLE = 20
_MAX_BACKOFF_S = 3600.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PassReport:
    """What one pass did."""

    evaluated: bool = True
    alerts: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(job: Job, rule: Rule) -> datetime | None:
    """When ``job`` became something ``rule`` reports."""
    over = timedelta(seconds=rule.over_s or 0)
    if rule.kind in ("failed", "item_failure_rate"):
        return job.completed_at
    if rule.kind == "lost":
        return job.updated_at
    if rule.kind == "slow":
        return job.started_at + over if job.started_at else None
    if rule.kind == "queued":
        due = job.eta or job.created_at
        return due + over if due else None
    return None  # stuck: as of this pass


def _job_summary(job: Job) -> dict[str, Any]:
    error = ": ".join(p for p in (job.error_type, job.error_message) if p) or None
    return {
        "id": job.id,
        "name": job.name,
        "task_name": job.task_name,
        "job_type": job.job_type,
        "owner_id": job.owner_id,
        "queue": job.queue,
        "status": job.status.value,
        "error": error[:300] if error else None,
        "processed_items": job.processed_items,
        "failed_items": job.failed_items,
    }


def _phrase(rule: Rule) -> str:
    """What a rule says of its jobs ("failed", "stuck: no progress for 15 min")."""
    if rule.kind == "stuck":
        return f"stuck: no progress for {_span(rule.after_s or 0)}"
    if rule.kind in ("slow", "queued"):
        state = "running" if rule.kind == "slow" else "queued"
        return f"{state} longer than {_span(rule.over_s or 0)}"
    if rule.kind == "item_failure_rate":
        return f"finished with over {rule.threshold or 0:g}% of items failed"
    return {"failed": "failed", "lost": "lost (no heartbeat from their worker)"}[rule.kind]


def _title(rule: Rule, jobs: list[Job], span_s: float) -> str:
    count, what = len(jobs), rule.scope.describe()
    many = f"{count:,}{'+' if count >= MAX_JOBS_PER_PASS else ''} {what}"
    one = jobs[0].name or jobs[0].task_name or jobs[0].id
    phrase = _phrase(rule)
    if count == 1:
        error = jobs[0].error_message if rule.kind == "failed" else None
        return f"{one} {phrase}" + (f": {error[:200]}" if error else "")
    within = f" in {_span(span_s)}" if rule.kind == "failed" else ""
    return f"{many} {phrase}{within}"


class AlertRunner:
    """Evaluates ``config``'s rules on ``store`` and delivers their messages."""

    def __init__(
        self,
        store: Store,
        config: AlertConfig,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.settings = settings
        self.clock = clock
        self.holder = leases.holder_id()
        #: The primary's WAL position after the last pass's writes: the next pass's
        #: reads on a replica wait until it has replayed them (its rules' states, the
        #: jobs already reported), so no job is reported twice. "" when unknown: the
        #: next pass reads the primary.
        self._written: str | None = None

    # -- one pass --------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Evaluate every rule, then deliver what is due. Another runner holding the
        lease: nothing (``evaluated`` False)."""
        now = self.clock()
        ttl = max(3 * self.settings.alerts_interval_s, 60.0)
        if not leases.take(self.store, ALERT_LEASE, self.holder, ttl):
            return PassReport(evaluated=False)
        try:
            return self._pass(now)
        finally:
            leases.release(self.store, ALERT_LEASE, self.holder)

    def _pass(self, now: datetime) -> PassReport:
        report = PassReport()
        # The rules' reads go to a replica when there are any (read_database_url), once
        # it has replayed the last pass's writes; writes and deliveries stay on the
        # primary.
        reading = (
            self.store.reading(min_lsn=self._written)
            if self._written != ""
            else contextlib.nullcontext()
        )
        try:
            with reading:
                states = self.store.alerts.alert_states()
                for rule in self.config.rules:
                    try:
                        made = self._evaluate(rule, states.get(rule.name), now)
                    except JobtrackError as exc:
                        log.warning(
                            "could not evaluate alert rule %s: %s",
                            rule.name,
                            exc,
                            extra={"job_id": None, "action": "alerts"},
                        )
                        continue
                    if made is not None:
                        report.alerts.append(made)
        finally:
            self._note_written()
        self.deliver(report, now)
        return report

    def _note_written(self) -> None:
        if self.store.replicas is None:
            return
        try:
            self._written = self.store.primary_lsn()
        except JobtrackError:
            self._written = ""  # unknown: the next pass reads the primary

    def run_forever(self, stop: threading.Event) -> None:
        """Passes every ``alerts_interval_s`` until ``stop`` is set; an unreachable
        database is logged and tried again next time."""
        while not stop.is_set():
            try:
                self.run_once()
            except JobtrackError as exc:
                log.warning(
                    "alert pass failed: %s", exc, extra={"job_id": None, "action": "alerts"}
                )
            stop.wait(self.settings.alerts_interval_s)

    def _evaluate(self, rule: Rule, state: AlertState | None, now: datetime) -> int | None:
        if rule.kind == "failure_rate":
            return self._rate(rule, state, now)
        last = state.last_sent_at if state else None
        if last is not None and (now - last).total_seconds() < rule.cooldown_s:
            return None  # held for the next message
        since = now - timedelta(seconds=rule.lookback_s)
        if rule.kind == "stuck":
            jobs = self.store.alerts.stuck_jobs(
                rule.name,
                rule.scope,
                now=now,
                after_s=rule.after_s or 0,
                limit=MAX_JOBS_PER_PASS,
            )
        else:
            jobs = self.store.alerts.alert_candidates(
                rule.name,
                rule.kind,
                rule.scope,
                since=since,
                older_than=now - timedelta(seconds=rule.over_s) if rule.over_s else None,
                threshold=rule.threshold,
                min_items=rule.min_items,
                limit=MAX_JOBS_PER_PASS,
            )
        if not jobs:
            return None
        # A burst is gathered from its first job's time; jobs with no such time (stuck:
        # its ``after`` was the wait) are not held.
        times = [t for job in jobs if (t := _when(job, rule)) is not None]
        if times and (now - min(times)).total_seconds() < rule.group_wait_s:
            return None
        times = times or [now]
        first = min(times)
        body = {
            "count": len(jobs),
            "jobs": [_job_summary(job) for job in jobs[:SAMPLE]],
            "since": first.isoformat(),
        }
        return self.store.alerts.record_alert(
            rule.name,
            "firing",
            _title(rule, jobs, (max(times) - first).total_seconds()),
            body,
            channels=rule.channels,
            job_ids=[job.id for job in jobs],
            now=now,
        )

    def _rate(self, rule: Rule, state: AlertState | None, now: datetime) -> int | None:
        window = rule.window_s or 0
        completed, failed = self.store.alerts.finished_counts(
            rule.scope, since=now - timedelta(seconds=window)
        )
        total = completed + failed
        rate = 100.0 * failed / total if total else 0.0
        over = total >= rule.min_jobs and rate > (rule.threshold or 0)
        firing = bool(state and state.firing)
        what = rule.scope.describe()
        body = {
            "count": total,
            "failed": failed,
            "completed": completed,
            "rate_percent": round(rate, 2),
            "threshold_percent": rule.threshold,
            "window_s": window,
        }
        last = state.last_sent_at if state else None
        cooled = last is None or (now - last).total_seconds() >= rule.cooldown_s
        if over and not firing and cooled:
            title = (
                f"{what} failing: {rate:.0f}% of {total:,} in the last {_span(window)} "
                f"(over {rule.threshold:g}%)"
            )
            kind, firing_now = "firing", True
        elif not over and firing:
            title = f"{what} failure rate back to {rate:.0f}% (under {rule.threshold:g}%)"
            kind, firing_now = "resolved", False
        else:
            self.store.alerts.note_rule_value(rule.name, rate, now=now)
            return None
        return self.store.alerts.record_alert(
            rule.name,
            kind,
            title,
            body,
            channels=rule.channels,
            now=now,
            firing=firing_now,
            value=rate,
        )

    # -- delivering ------------------------------------------------------------------------

    def message(self, delivery: Delivery) -> Message:
        return Message(
            delivery_id=delivery.id,
            alert_id=delivery.alert_id,
            rule=delivery.rule,
            kind=delivery.kind,
            title=delivery.title,
            body=dict(delivery.body or {}),
            created_at=delivery.created_at.isoformat(),
            base_url=self.settings.web_public_url,
        )

    def deliver(self, report: PassReport, now: datetime, *, only: int | None = None) -> None:
        """Send the deliveries that are due (``only``: those of one alert)."""
        for delivery in self.store.alerts.due_deliveries(now=now, limit=500):
            if only is not None and delivery.alert_id != only:
                continue
            channel = self.config.channels.get(delivery.channel)
            if channel is None:
                problem = f"no channel named {delivery.channel!r} in the rules now"
                self.store.alerts.delivery_failed(delivery.id, problem, next_attempt_at=None)
                report.failed.append((delivery.id, problem))
                continue
            try:
                channel.send(self.message(delivery))
            except Exception as exc:  # a channel's failure is retried, never raised
                reason = exc if isinstance(exc, DeliveryFailed) else f"{type(exc).__name__}: {exc}"
                problem = self.config.mask(str(reason))
                attempts = delivery.attempts + 1
                retry = None
                if attempts < channel.max_attempts:
                    backoff = min(channel.retry_base_s * 2 ** (attempts - 1), _MAX_BACKOFF_S)
                    retry = now + timedelta(seconds=backoff)
                self.store.alerts.delivery_failed(delivery.id, problem, next_attempt_at=retry)
                report.failed.append((delivery.id, problem))
                log.warning(
                    "alert delivery %s to %s failed (attempt %d%s): %s",
                    delivery.id,
                    delivery.channel,
                    attempts,
                    f", next at {retry.isoformat(timespec='seconds')}" if retry else ", giving up",
                    problem,
                    extra={"job_id": None, "action": "alerts"},
                )
            else:
                self.store.alerts.delivery_sent(delivery.id, now=self.clock())
                report.sent.append(delivery.id)

    def send_test(self, rule_name: str) -> PassReport:
        """A sample message of ``rule_name`` to each of its channels, now."""
        rule = self.config.rule(rule_name)
        now = self.clock()
        alert_id = self.store.alerts.record_alert(
            rule.name,
            "test",
            f"Test of alert rule {rule.name} ({rule.kind} of {rule.scope.describe()})",
            {"count": 0, "jobs": [], "test": True},
            channels=rule.channels,
            now=now,
        )
        report = PassReport(alerts=[alert_id])
        self.deliver(report, now, only=alert_id)
        return report
