"""What the rows say of workers and queues, on every backend (``store.fleet``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtrack.models import JobStatus, JobUpdate, QueueBacklog, WorkerActivity
from jobtrack.store import Batch, Store

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_workers_from_their_running_and_finished_jobs(store: Store) -> None:
    rows = [
        JobUpdate.transition("r1", JobStatus.RUNNING, worker="celery@a", heartbeat_at=ago(5)),
        JobUpdate.transition("r2", JobStatus.RUNNING, worker="celery@a", heartbeat_at=ago(2)),
        JobUpdate.transition("r3", JobStatus.RUNNING, worker="celery@b", heartbeat_at=ago(9)),
        *(
            JobUpdate.transition(
                f"d{n}", JobStatus.COMPLETED, worker="celery@c", completed_at=ago(10 * n + 1)
            )
            for n in range(4)
        ),
        JobUpdate.transition("f1", JobStatus.FAILED, worker="celery@a", completed_at=ago(30)),
        # Finished before the window: c's fourth job (31 s ago) is outside a 30 s one.
        JobUpdate.transition("old", JobStatus.COMPLETED, worker="celery@d", completed_at=ago(900)),
        JobUpdate.transition("q1", JobStatus.PENDING),
    ]
    store.write_batch(Batch(rows))
    found = store.fleet.workers(now=NOW, window_s=35)
    assert found == [
        WorkerActivity("celery@a", 2, ago(2), 1, ago(30)),
        WorkerActivity("celery@b", 1, ago(9), 0, None),
        WorkerActivity("celery@c", 0, None, 4, ago(1)),
    ]
    assert [w.name for w in store.fleet.workers(now=NOW, window_s=3600)][-1] == "celery@d"


def test_queues_from_their_pending_jobs(store: Store) -> None:
    rows = [
        JobUpdate.transition("i1", JobStatus.PENDING, at=ago(120), queue="imports"),
        JobUpdate.transition("i2", JobStatus.PENDING, at=ago(60), queue="imports"),
        # Not due: a countdown ahead; its age does not count as waiting.
        JobUpdate.transition(
            "i3", JobStatus.PENDING, at=ago(600), queue="imports", eta=NOW + timedelta(hours=1)
        ),
        JobUpdate.transition("m1", JobStatus.PENDING, at=ago(5), queue="mail"),
        JobUpdate.transition("m2", JobStatus.RUNNING, at=ago(500), queue="mail"),
    ]
    store.write_batch(Batch(rows))
    assert store.fleet.queues(now=NOW) == [
        QueueBacklog("imports", pending=3, waiting=2, oldest_waiting=ago(120)),
        QueueBacklog("mail", pending=1, waiting=1, oldest_waiting=ago(5)),
    ]


def test_filters_suggest_the_values_there_are(store: Store) -> None:
    rows = [
        JobUpdate.transition(
            f"s{n}",
            JobStatus.COMPLETED if n % 2 else JobStatus.PENDING,
            task_name=f"app.task_{n % 3}",
            job_type=None if n % 4 == 0 else f"type_{n % 2}",
            owner_id=f"owner-{n % 2}",
            queue="imports" if n < 5 else "mail",
        )
        for n in range(12)
    ]
    store.write_batch(Batch(rows))
    assert store.suggest.values("task_name") == ["app.task_0", "app.task_1", "app.task_2"]
    assert store.suggest.values("job_type") == ["type_0", "type_1"]  # no empty value
    assert store.suggest.values("queue", limit=1) == ["imports"]
    assert store.suggest.values("owner_id") == ["owner-0", "owner-1"]
    # An owner-bound reader: its own jobs' values only (owner-1 has the odd jobs).
    assert store.suggest.values("job_type", owner_id="owner-1") == ["type_1"]
    with pytest.raises(ValueError, match="no suggestions for 'name'"):
        store.suggest.values("name")
