"""The store's operator-action statements: the audit trail, what each action covers,
deleting jobs, and replays.

A part the :class:`~jobtrack.store.Store` holds, ``store.actions`` (one transaction per
public method, like the rest of it). An action's targets are snapshotted in one ``INSERT
… SELECT`` when it starts, so jobs that arrive later are never swept in; each target
then moves ``pending`` → ``sending`` → ``done`` (or ``skipped``/``failed``), committed
per batch, and the action's counts move in the same transaction as its targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from ..errors import ActionNotFound
from ..models import (
    DELETABLE,
    Action,
    ActionTarget,
    EventRow,
    Job,
    JobFilter,
    JobStatus,
    JobUpdate,
    Row,
)
from ..schema import action_targets, actions, job_events, job_items, job_logs, jobs
from .common import Transactions, filtered, job_of, notify
from .dialects import updated

__all__ = ["ActionQueries", "TargetState", "WorkItem"]

#: Targets still to do: never reached, or sent by a run that stopped before it knew.
_OPEN = ("pending", "sending")


class TargetState:
    """The states of an action's target (``jobtrack_action_targets.state``)."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    #: The counters each final state adds to.
    COUNTER: ClassVar[dict[str, str]] = {DONE: "done", SKIPPED: "skipped", FAILED: "failed"}


@dataclass(frozen=True)
class WorkItem:
    """An open target with its job as it is now (None: the job is gone)."""

    job_id: str
    state: str
    sends: int
    result_id: str | None
    job: Job | None


#: What the actions read of a target's job (the rest of the row is left at its default).
_TARGET_JOB_FIELDS = (
    "id",
    "status",
    "task_name",
    "job_type",
    "job_subtype",
    "name",
    "owner_id",
    "queue",
    "ref",
    "max_retries",
    "input_data",
    "pause_requested_at",
    "retried_by",
)
_TARGET_JOB_COLUMNS = tuple(jobs.c[name].label(f"j_{name}") for name in _TARGET_JOB_FIELDS)


def _action(row: Any) -> Action:
    return Action(**dict(row))


class ActionQueries:
    """Operator actions' SQL: the audit trail, a bulk action's targets and the jobs it
    changes (the store's part ``store.actions``)."""

    def __init__(
        self,
        begin: Transactions,
        read: Callable[[str], AbstractContextManager[Connection]],
        write_jobs: Callable[[Connection, Sequence[Row], Sequence[EventRow], Sequence[str]], None],
    ) -> None:
        #: The store's transactions; its reads (on a replica where routed); its writer of
        #: job rows and trace entries (as the writer's batches are written).
        self._begin = begin
        self._read = read
        self._write_jobs = write_jobs

    def count_matching(self, where: JobFilter) -> int:
        """How many jobs ``where`` matches now (exact: what a bulk action would cover)."""
        query = filtered(select(func.count()).select_from(jobs), where)
        with self._read("count matching") as conn:
            return int(conn.execute(query).scalar_one())

    # -- the audit trail ---------------------------------------------------------------

    def record_action(
        self,
        action: str,
        *,
        actor: str,
        role: str,
        owner_id: str | None = None,
        where: JobFilter | None = None,
        options: dict[str, Any] | None = None,
        bulk: bool = False,
        status: str = "completed",
        targets: Sequence[ActionTarget] = (),
        outcome: str | None = None,
    ) -> int:
        """Add an entry to the audit trail (with what it did to each job in
        ``targets``, for a single action); returns its id."""
        now = datetime.now(UTC)
        counts = {"done": 0, "skipped": 0, "failed": 0}
        for target in targets:
            if target.state in TargetState.COUNTER:
                counts[TargetState.COUNTER[target.state]] += 1
        with self._begin("record action", writes_data=True) as conn:
            action_id = int(
                conn.execute(
                    insert(actions).values(
                        action=action,
                        actor=actor,
                        role=role,
                        owner_id=owner_id,
                        bulk=bulk,
                        filter=(where or JobFilter()).to_json(),
                        options=options or None,
                        status=status,
                        matched=len(targets),
                        outcome=outcome,
                        created_at=now,
                        finished_at=None if status in ("pending", "running") else now,
                        **counts,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            if targets:
                conn.execute(
                    insert(action_targets),
                    [
                        {
                            "action_id": action_id,
                            "job_id": t.job_id,
                            "state": t.state,
                            "sends": t.sends,
                            "result_id": t.result_id,
                            "outcome": (t.outcome or "")[:500] or None,
                        }
                        for t in targets
                    ],
                )
                notify(conn, [t.job_id for t in targets])
        return action_id

    def get_action(self, action_id: int) -> Action:
        with self._read("get action") as conn:
            row = conn.execute(select(actions).where(actions.c.id == action_id)).mappings().first()
        if row is None:
            raise ActionNotFound(action_id)
        return _action(row)

    def list_actions(
        self,
        *,
        limit: int = 50,
        before_id: int | None = None,
        owner_id: str | None = None,
        job_id: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[Action]:
        """Audit entries, newest first; ``owner_id`` keeps those an operator bound to
        that owner made, ``job_id`` those that touched that job, ``kinds`` those of
        these actions."""
        query = select(actions)
        if kinds is not None:
            query = query.where(actions.c.action.in_(list(kinds)))
        if before_id is not None:
            query = query.where(actions.c.id < before_id)
        if owner_id is not None:
            query = query.where(actions.c.owner_id == owner_id)
        if job_id is not None:
            query = query.where(
                actions.c.id.in_(
                    select(action_targets.c.action_id).where(action_targets.c.job_id == job_id)
                )
            )
        query = query.order_by(actions.c.id.desc()).limit(max(min(limit, 1000), 1))
        with self._read("list actions") as conn:
            return [_action(r) for r in conn.execute(query).mappings()]

    def actions_for_job(self, job_id: str, *, limit: int = 50) -> list[tuple[Action, ActionTarget]]:
        """What operators did to ``job_id``, newest first, with what each did to it."""
        query = (
            select(actions, *[c.label(f"t_{c.name}") for c in action_targets.c])
            .join(action_targets, action_targets.c.action_id == actions.c.id)
            .where(action_targets.c.job_id == job_id)
            .order_by(actions.c.id.desc())
            .limit(max(limit, 1))
        )
        found = []
        with self._read("actions for job") as conn:
            for row in conn.execute(query).mappings():
                values = dict(row)
                target = {k[2:]: values.pop(k) for k in list(values) if k.startswith("t_")}
                found.append((_action(values), ActionTarget(**target)))
        return found

    def prune_actions(self, *, before: datetime, batch_size: int = 5000) -> int:
        """Delete audit entries made before ``before`` (with their targets)."""
        total = 0
        while True:
            with self._begin("prune actions") as conn:
                ids = list(
                    conn.execute(
                        select(actions.c.id)
                        .where(actions.c.created_at < before)
                        .limit(max(batch_size, 1))
                    ).scalars()
                )
                if not ids:
                    return total
                conn.execute(delete(action_targets).where(action_targets.c.action_id.in_(ids)))
                total += conn.execute(delete(actions).where(actions.c.id.in_(ids))).rowcount

    # -- a bulk action's run -------------------------------------------------------------

    def snapshot_targets(self, action_id: int, where: JobFilter) -> int:
        """Record every job ``where`` matches now as a target of the action, in one
        statement; returns how many (later arrivals are not covered). An action of an
        owner-bound operator covers only that owner's jobs (a filter naming another owner
        matches nothing). Again for an action that has its targets already changes
        nothing."""
        with self._begin("snapshot targets") as conn:
            matched = conn.execute(
                select(actions.c.matched, actions.c.status, actions.c.owner_id).where(
                    actions.c.id == action_id
                )
            ).first()
            if matched is None:
                raise ActionNotFound(action_id)
            if matched.status != "pending":
                return int(matched.matched)
            if matched.owner_id is not None:  # an owner-bound operator's: its owner's only
                where = (
                    where.where(ids=())
                    if where.owner_id not in (None, matched.owner_id)
                    else where.where(owner_id=matched.owner_id)
                )
            chosen = filtered(
                select(literal(action_id), jobs.c.id, literal(TargetState.PENDING)), where
            )
            conn.execute(
                insert(action_targets).from_select(["action_id", "job_id", "state"], chosen)
            )
            count = conn.execute(  # (rowcount is not told for INSERT … SELECT everywhere)
                select(func.count()).where(action_targets.c.action_id == action_id)
            ).scalar_one()
            conn.execute(
                update(actions)
                .where(actions.c.id == action_id)
                .values(matched=count, status="running")
            )
        if conn.dialect.name == "postgresql" and count > 1000:
            # The planner learns of the rows just added (else it reads them all, sorted,
            # for each batch of a big action): what autovacuum would do later, now.
            with self._begin("analyze targets") as conn:
                conn.execute(text(f"ANALYZE {action_targets.name}"))
        return int(count)

    def count_targets(self, action_id: int, state: str) -> int:
        """How many of the action's targets are in ``state``."""
        query = select(func.count()).where(
            action_targets.c.action_id == action_id, action_targets.c.state == state
        )
        with self._begin("count targets") as conn:
            return int(conn.execute(query).scalar_one())

    def open_targets(self, action_id: int, *, limit: int, after: str = "") -> list[WorkItem]:
        """The next open targets of the action after job id ``after`` (in id order, on
        the primary key), with what the actions read of their jobs as they are now."""
        query = (
            select(action_targets, *_TARGET_JOB_COLUMNS)
            .outerjoin(jobs, jobs.c.id == action_targets.c.job_id)
            .where(
                action_targets.c.action_id == action_id,
                action_targets.c.job_id > after,
                action_targets.c.state.in_(_OPEN),
            )
            .order_by(action_targets.c.job_id)
            .limit(max(limit, 1))
        )
        found = []
        with self._begin("open targets") as conn:
            for row in conn.execute(query):
                values = row._mapping
                job = None
                if values["j_id"] is not None:
                    job = job_of({name: values[f"j_{name}"] for name in _TARGET_JOB_FIELDS})
                found.append(
                    WorkItem(
                        job_id=values[action_targets.c.job_id],
                        state=values[action_targets.c.state],
                        sends=values[action_targets.c.sends],
                        result_id=values[action_targets.c.result_id],
                        job=job,
                    )
                )
        return found

    def mark_sending(
        self,
        action_id: int,
        targets: Sequence[tuple[str, str | None]],
        new_jobs: Sequence[JobUpdate] = (),
    ) -> None:
        """Record, before publishing them, that these targets (job id, the new job's
        id) are being sent, with the new jobs' rows, in one transaction: a run that
        resumes after a crash knows which ones it may have sent already."""
        if not targets:
            return
        with self._begin("mark sending", writes_data=True) as conn:
            if new_jobs:
                self._write_jobs(conn, [u.row() for u in new_jobs], [], [u.id for u in new_jobs])
                _retried(conn, [(old, new) for old, new in targets if new is not None])
            conn.execute(
                update(action_targets)
                .where(
                    action_targets.c.action_id == action_id,
                    action_targets.c.job_id == bindparam("target"),
                )
                .values(
                    state=TargetState.SENDING,
                    sends=action_targets.c.sends + 1,
                    result_id=bindparam("result"),
                ),
                [{"target": job_id, "result": result} for job_id, result in targets],
            )

    def settle_targets(
        self, action_id: int, outcomes: Sequence[tuple[str, str, str | None]]
    ) -> Action:
        """Settle targets (job id, final state, outcome in words) and add them to the
        action's counts, in one transaction; a target settled already is not counted
        twice. Returns the action as it is then."""
        groups: dict[tuple[str, str | None], list[str]] = {}
        for job_id, state, outcome in outcomes:  # few distinct outcomes: one UPDATE each
            groups.setdefault((state, (outcome or "")[:500] or None), []).append(job_id)
        with self._begin("settle targets", writes_data=True) as conn:
            counts = {"done": 0, "skipped": 0, "failed": 0}
            for (state, outcome), job_ids in groups.items():
                changed = updated(
                    conn,
                    action_targets,
                    [
                        action_targets.c.action_id == action_id,
                        # A batch is a run of the key: the range keeps the index scan to
                        # it, whatever the statistics of a fresh action say.
                        action_targets.c.job_id.between(min(job_ids), max(job_ids)),
                        action_targets.c.job_id.in_(job_ids),
                        action_targets.c.state.in_(_OPEN),
                    ],
                    {"state": state, "outcome": outcome},
                    [action_targets.c.job_id],
                )
                counts[TargetState.COUNTER[state]] += len(changed)
            conn.execute(
                update(actions)
                .where(actions.c.id == action_id)
                .values(**{name: actions.c[name] + n for name, n in counts.items()})
            )
            row = conn.execute(select(actions).where(actions.c.id == action_id)).mappings().one()
            notify(conn, [job_id for job_id, _, _ in outcomes])
        return _action(row)

    def finish_action(self, action_id: int, status: str, outcome: str | None = None) -> None:
        with self._begin("finish action", writes_data=True) as conn:
            conn.execute(
                update(actions)
                .where(actions.c.id == action_id)
                .values(status=status, outcome=outcome, finished_at=datetime.now(UTC))
            )

    def reopen_action(self, action_id: int) -> None:
        """A bulk action whose run stopped on an error runs again (``resume``)."""
        with self._begin("reopen action") as conn:
            conn.execute(
                update(actions)
                .where(actions.c.id == action_id, actions.c.status == "failed")
                .values(status="running", finished_at=None, outcome=None)
            )

    def set_action_job(self, action_id: int, job_id: str) -> None:
        with self._begin("set action job") as conn:
            conn.execute(update(actions).where(actions.c.id == action_id).values(job_id=job_id))

    def unfinished_actions(self) -> list[Action]:
        """Bulk actions not finished (never started, running, or stopped on an error):
        what ``resume --all`` finds."""
        query = (
            select(actions)
            .where(actions.c.bulk.is_(True), actions.c.status.in_(("pending", "running", "failed")))
            .order_by(actions.c.id)
        )
        with self._begin("unfinished actions") as conn:
            return [_action(r) for r in conn.execute(query).mappings()]

    # -- deleting and replays ------------------------------------------------------------

    def delete_jobs(self, job_ids: Sequence[str]) -> list[str]:
        """Delete those of ``job_ids`` that are finished or paused, with their items and
        events, in one transaction; returns the ids deleted. A job a worker may still
        write to is left (cancel it first)."""
        if not job_ids:
            return []
        deletable = [s.value for s in DELETABLE]
        with self._begin("delete jobs") as conn:
            ids = list(
                conn.execute(
                    select(jobs.c.id)
                    .where(jobs.c.id.in_(list(job_ids)), jobs.c.status.in_(deletable))
                    .with_for_update()
                ).scalars()
            )
            if ids:
                for table in (job_items, job_events, job_logs):  # also where cascades are off
                    conn.execute(delete(table).where(table.c.job_id.in_(ids)))
                conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
                notify(conn, ids)
        return ids

    def mark_retried(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record that each job (first of a pair) was retried or replayed as another
        (second): its ``retried_by``, which makes a failure handled."""
        if pairs:
            with self._begin("mark retried") as conn:
                _retried(conn, pairs)

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of each of ``job_ids`` that exists (by primary key)."""
        if not job_ids:
            return {}
        query = select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(list(job_ids)))
        with self._begin("job statuses") as conn:
            return {job_id: JobStatus(status) for job_id, status in conn.execute(query)}

    def replays_of(self, job_id: str, *, limit: int = 20) -> list[str]:
        """The jobs an operator replayed ``job_id`` as, newest first."""
        query = (
            select(jobs.c.id)
            .where(jobs.c.replay_of == job_id)
            .order_by(jobs.c.created_at.desc())
            .limit(limit)
        )
        with self._read("replays") as conn:
            return list(conn.execute(query).scalars())


def _retried(conn: Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Set ``retried_by`` (and ``updated_at``, which SQLite's change feed reads) of each
    job retried, on the caller's connection; the live stream hears of it."""
    if not pairs:
        return
    now = datetime.now(UTC)
    conn.execute(
        update(jobs)
        .where(jobs.c.id == bindparam("old"))
        .values(
            retried_by=bindparam("new"), updated_at=bindparam("at", type_=jobs.c.updated_at.type)
        ),
        [{"old": old, "new": new, "at": now} for old, new in pairs],
    )
    notify(conn, [old for old, _ in pairs])
