"""The store's alert statements: what each rule should report, what it reported already,
rule state, alert messages and their deliveries.

A part the :class:`~jobtrack.store.Store` holds, ``store.alerts``. Every rule's read is
bounded by an index (``(status, completed_at)``, ``(status, created_at)``) and by a
limit; a job a rule has reported is in ``jobtrack_alert_seen`` and never reported by it
again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Text,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from ..models import Job, JobStatus, Scope
from ..schema import alert_deliveries, alert_progress, alert_seen, alert_state, alerts, jobs
from .common import Transactions, escape_like, job_of
from .dialects import upsert

__all__ = ["AlertQueries", "AlertState", "Delivery", "glob_to_like"]

#: What a message shows of each job.
_JOB_FIELDS = (
    "id",
    "status",
    "name",
    "task_name",
    "job_type",
    "owner_id",
    "queue",
    "error_type",
    "error_message",
    "processed_items",
    "failed_items",
    "total_items",
    "created_at",
    "eta",
    "started_at",
    "completed_at",
    "updated_at",
    "heartbeat_at",
    "retries",
)
_FINISHED = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)


@dataclass(frozen=True)
class AlertState:
    """A rule's state: firing (a rate rule over its threshold), what it measured last,
    when it last sent."""

    rule: str
    firing: bool
    value: float | None
    last_sent_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One message to one channel, with the alert it carries."""

    id: int
    alert_id: int
    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None
    rule: str
    kind: str
    title: str
    body: Any
    created_at: datetime


def glob_to_like(glob: str) -> str:
    """A glob (``*`` any run, ``?`` one character) as a LIKE pattern (escape ``\\``)."""
    return escape_like(glob).replace("*", "%").replace("?", "_")


def _in_scope(query: Any, scope: Scope) -> Any:
    for column, globs in (
        (jobs.c.task_name, scope.task_names),
        (jobs.c.job_type, scope.job_types),
        (jobs.c.queue, scope.queues),
        (jobs.c.owner_id, scope.owners),
    ):
        if globs:
            query = query.where(or_(*(column.like(glob_to_like(g), escape="\\") for g in globs)))
    return query


class AlertQueries:
    """Alerts' SQL: what a rule reports, its state, and the deliveries (the store's part
    ``store.alerts``)."""

    def __init__(
        self,
        begin: Transactions,
        read: Callable[[str], AbstractContextManager[Connection]],
    ) -> None:
        #: The store's transactions, and its reads (on a replica where routed).
        self._begin = begin
        self._read = read

    # -- what a rule reports ---------------------------------------------------------------

    def alert_candidates(
        self,
        rule: str,
        kind: str,
        scope: Scope,
        *,
        since: datetime,
        older_than: datetime | None = None,
        threshold: float | None = None,
        min_items: int = 1,
        limit: int = 1000,
    ) -> list[Job]:
        """Jobs rule ``rule`` (of ``kind``) should report and has not: failed (finished
        failed since ``since``), lost (since ``since``), slow (running, started before
        ``older_than``), queued (waiting, due before ``older_than``), item_failure_rate
        (finished since ``since`` with at least ``min_items`` items, more than
        ``threshold`` % of them failed). Oldest first. ``since`` bounds the kinds about
        what happened (history); slow and queued are about what is so now."""
        query = select(*(jobs.c[name] for name in _JOB_FIELDS))
        if kind == "failed":
            query = query.where(
                jobs.c.status == JobStatus.FAILED.value, jobs.c.completed_at >= since
            )
        elif kind == "lost":
            query = query.where(jobs.c.status == JobStatus.LOST.value, jobs.c.updated_at >= since)
        elif kind == "slow":
            assert older_than is not None
            query = query.where(
                jobs.c.status == JobStatus.RUNNING.value, jobs.c.started_at < older_than
            )
        elif kind == "queued":
            assert older_than is not None
            query = query.where(
                jobs.c.status == JobStatus.PENDING.value,
                func.coalesce(jobs.c.eta, jobs.c.created_at) < older_than,
            )
        elif kind == "item_failure_rate":
            assert threshold is not None
            query = query.where(
                jobs.c.status.in_(_FINISHED),
                jobs.c.completed_at >= since,
                jobs.c.processed_items >= max(min_items, 1),
                jobs.c.failed_items * 100.0 > jobs.c.processed_items * threshold,
            )
        else:
            raise ValueError(f"{kind!r} is not a rule on single jobs read here")
        query = _in_scope(query, scope).where(~_seen(rule))
        query = query.order_by(jobs.c.created_at).limit(max(limit, 1))
        with self._read("alert candidates") as conn:
            return [job_of(row._mapping) for row in conn.execute(query)]

    def stuck_jobs(
        self,
        rule: str,
        scope: Scope,
        *,
        now: datetime,
        after_s: float,
        limit: int = 1000,
    ) -> list[Job]:
        """Running jobs whose progress (percent, items, stage, checkpoint) has not changed
        for ``after_s`` seconds, as this runner saw it pass by pass, or whose heartbeat is
        that old; not reported by ``rule`` yet. The progress seen is kept in
        ``jobtrack_alert_progress`` (rows of jobs no longer running are dropped)."""
        fingerprint = _joined(
            jobs.c.progress_percent,
            jobs.c.processed_items,
            jobs.c.progress_stage,
            jobs.c.checkpoint_at,
            jobs.c.retries,
        )
        running = _in_scope(
            select(jobs.c.id, fingerprint.label("fingerprint")).where(
                jobs.c.status == JobStatus.RUNNING.value
            ),
            scope,
        ).limit(100_000)
        cutoff = now - timedelta(seconds=after_s)
        with self._read("stuck jobs") as conn:
            seen_now = {row.id: row.fingerprint for row in conn.execute(running)}
            if seen_now:
                conn.execute(
                    upsert(
                        conn.dialect.name,
                        alert_progress,
                        keys=["job_id"],
                        # the fingerprint, which the condition reads, last (MySQL)
                        update=lambda new: {
                            "changed_at": new.changed_at,
                            "fingerprint": new.fingerprint,
                        },
                        where=lambda new: alert_progress.c.fingerprint != new.fingerprint,
                    ),
                    [
                        {"job_id": job_id, "fingerprint": (print_ or "")[:255], "changed_at": now}
                        for job_id, print_ in seen_now.items()
                    ],
                )
            conn.execute(
                delete(alert_progress).where(
                    ~exists().where(
                        jobs.c.id == alert_progress.c.job_id,
                        jobs.c.status == JobStatus.RUNNING.value,
                    )
                )
            )
            query = (
                select(*(jobs.c[name] for name in _JOB_FIELDS))
                .join(alert_progress, alert_progress.c.job_id == jobs.c.id)
                .where(
                    jobs.c.status == JobStatus.RUNNING.value,
                    or_(
                        alert_progress.c.changed_at < cutoff,
                        func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at) < cutoff,
                    ),
                    ~_seen(rule),
                )
                .order_by(jobs.c.created_at)
                .limit(max(limit, 1))
            )
            return [job_of(row._mapping) for row in conn.execute(_in_scope(query, scope))]

    def finished_counts(self, scope: Scope, *, since: datetime) -> tuple[int, int]:
        """How many jobs in ``scope`` finished since ``since``: (completed, failed)."""
        query = _in_scope(
            select(
                func.count(case((jobs.c.status == JobStatus.COMPLETED.value, 1))),
                func.count(case((jobs.c.status == JobStatus.FAILED.value, 1))),
            ).where(jobs.c.status.in_(_FINISHED), jobs.c.completed_at >= since),
            scope,
        )
        with self._read("finished counts") as conn:
            completed, failed = conn.execute(query).one()
        return int(completed), int(failed)

    # -- what was sent -------------------------------------------------------------------

    def record_alert(
        self,
        rule: str,
        kind: str,
        title: str,
        body: dict[str, Any],
        *,
        channels: Sequence[str],
        job_ids: Sequence[str] = (),
        now: datetime,
        firing: bool | None = None,
        value: float | None = None,
    ) -> int:
        """One alert message: its row, a pending delivery per channel, its jobs marked
        reported by ``rule``, the rule's state (last sent; ``firing`` and ``value`` for a
        rate rule), in one transaction. Returns its id."""
        with self._begin("record alert", writes_data=True) as conn:
            alert_id = int(
                conn.execute(
                    insert(alerts).values(
                        rule=rule, kind=kind, title=title, body=body, created_at=now
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            conn.execute(
                insert(alert_deliveries),
                [
                    {
                        "alert_id": alert_id,
                        "channel": channel,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                    }
                    for channel in channels
                ],
            )
            if job_ids:
                conn.execute(
                    insert(alert_seen),
                    [{"rule": rule, "job_id": j, "alert_id": alert_id, "at": now} for j in job_ids],
                )
            if kind != "test":
                self._set_state(conn, rule, now, last_sent_at=now, firing=firing, value=value)
        return alert_id

    def note_rule_value(self, rule: str, value: float | None, *, now: datetime) -> None:
        """What a rate rule measured, between messages (the dashboard shows it)."""
        with self._begin("note rule value") as conn:
            self._set_state(conn, rule, now, value=value)

    def _set_state(self, conn: Connection, rule: str, now: datetime, **values: Any) -> None:
        """Upsert the rule's state row: the columns given (None leaves a column as it is,
        except ``value``, which None clears: nothing measured)."""
        given = {k: v for k, v in values.items() if v is not None or k == "value"}
        values = {
            "rule": rule,
            "updated_at": now,
            "firing": bool(given.get("firing", False)),
            **{k: v for k, v in given.items() if k != "firing"},
        }
        conn.execute(
            upsert(
                conn.dialect.name,
                alert_state,
                values,
                keys=["rule"],
                update=lambda new: {"updated_at": now, **{k: new[k] for k in given}},
            )
        )

    def alert_states(self) -> dict[str, AlertState]:
        with self._read("alert states") as conn:
            return {
                row.rule: AlertState(**row._mapping)
                for row in conn.execute(select(alert_state).order_by(alert_state.c.rule))
            }

    def due_deliveries(self, *, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first."""
        return self._deliveries(
            and_(alert_deliveries.c.status == "pending", alert_deliveries.c.next_attempt_at <= now),
            order=alert_deliveries.c.id,
            limit=limit,
        )

    def recent_deliveries(self, *, limit: int = 50) -> list[Delivery]:
        """The newest deliveries, whatever their status (the dashboard's)."""
        return self._deliveries(None, order=alert_deliveries.c.id.desc(), limit=limit)

    def _deliveries(self, where: Any, *, order: Any, limit: int) -> list[Delivery]:
        query = (
            select(
                alert_deliveries,
                alerts.c.rule,
                alerts.c.kind,
                alerts.c.title,
                alerts.c.body,
                alerts.c.created_at,
            )
            .join(alerts, alerts.c.id == alert_deliveries.c.alert_id)
            .order_by(order)
            .limit(max(limit, 1))
        )
        if where is not None:
            query = query.where(where)
        with self._read("deliveries") as conn:
            return [Delivery(**row._mapping) for row in conn.execute(query)]

    def delivery_sent(self, delivery_id: int, *, now: datetime) -> None:
        with self._begin("delivery sent") as conn:
            conn.execute(
                update(alert_deliveries)
                .where(alert_deliveries.c.id == delivery_id)
                .values(status="sent", sent_at=now, attempts=alert_deliveries.c.attempts + 1)
            )

    def delivery_failed(
        self, delivery_id: int, error: str, *, next_attempt_at: datetime | None
    ) -> None:
        """A failed attempt: try again at ``next_attempt_at``, or never (None: failed)."""
        with self._begin("delivery failed", writes_data=True) as conn:
            conn.execute(
                update(alert_deliveries)
                .where(alert_deliveries.c.id == delivery_id)
                .values(
                    status="pending" if next_attempt_at is not None else "failed",
                    attempts=alert_deliveries.c.attempts + 1,
                    last_error=error[:2000],
                    **({"next_attempt_at": next_attempt_at} if next_attempt_at else {}),
                )
            )

    def prune_alerts(self, *, before: datetime) -> int:
        """Delete alert messages (with their deliveries) and reported-job marks older
        than ``before``; returns how many messages went."""
        with self._begin("prune alerts") as conn:
            old = select(alerts.c.id).where(alerts.c.created_at < before)
            conn.execute(delete(alert_deliveries).where(alert_deliveries.c.alert_id.in_(old)))
            conn.execute(delete(alert_seen).where(alert_seen.c.at < before))
            return int(conn.execute(delete(alerts).where(alerts.c.created_at < before)).rowcount)


def _seen(rule: str) -> Any:
    return exists().where(alert_seen.c.rule == rule, alert_seen.c.job_id == jobs.c.id)


def _joined(*columns: Any) -> Any:
    """The columns' values as one string (NULL as empty), on every backend."""
    parts: list[Any] = []
    for column in columns:
        if parts:
            parts.append("|")
        parts.append(func.coalesce(cast(column, Text), ""))
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + part  # text: || (PostgreSQL, SQLite), concat() on MySQL
    return joined
