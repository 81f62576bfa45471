"""Pending jobs whose message is gone from the broker (Redis, PostgreSQL, an in-process
worker): purged messages leave no job pending forever; a message still queued, or held
by a worker for its ETA, keeps its job pending; a broker that cannot be read, or a queue
the app does not declare, changes nothing."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from jobtrack.maintenance import WorkerUpkeep, reap_vanished
from jobtrack.models import JobStatus
from jobtrack.store import MESSAGE_LOST
from tests.conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def make_app(broker: str) -> Celery:
    app = Celery(f"v{uuid.uuid4().hex[:6]}", broker=broker)
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name=f"{app.main}.noop")
    def noop(n: int) -> int:
        return n

    return app


def test_purged_messages_leave_no_job_pending(installed: Any, redis_url: str) -> None:
    app = make_app(redis_url)
    noop = app.tasks[f"{app.main}.noop"]
    purged_q, kept_q, held_q = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in "pkh")
    tracker = installed(app, pending_lost_after_s=0.01, reap_interval_s=0.1)
    store = tracker.store
    purged = [noop.apply_async((n,), queue=purged_q).id for n in range(3)]
    kept = noop.apply_async((9,), queue=kept_q).id
    tracker.upsert_job(f"elsewhere-{uuid.uuid4().hex[:6]}", queue="no-such-queue")
    client = redis.Redis.from_url(redis_url)
    with start_worker(app, pool="threads", queues=[held_q], perform_ping_check=False):
        held = noop.apply_async((7,), queue=held_q, countdown=3600).id  # waits in the worker
        wait_for(
            lambda: any(held.encode() in raw for raw in client.hvals("unacked")),
            message="the worker holding the ETA message",
        )
        with app.connection_for_write() as conn:
            assert conn.default_channel.queue_purge(purged_q) == 3  # as celery purge -Q does
        tracker.flush()
        upkeep = WorkerUpkeep(app, tracker)  # the worker upkeep's round, under its lease
        clock = itertools.count(10**6, 10**6)
        marked = wait_for(lambda: upkeep.step(now=next(clock)), message="an upkeep round")
        assert sorted(marked) == sorted(purged)
        assert reap_vanished(app, store, 0.01) == []  # nothing more, nothing twice
    for job_id in purged:
        job = store.get_job(job_id)
        assert (job.status, job.error_type) == (JobStatus.LOST, MESSAGE_LOST)
        assert purged_q in (job.error_message or "") and "purged" in (job.error_message or "")
        assert [e.status for e in store.list_events(job_id)][-1] is JobStatus.LOST
    assert store.get_job(kept).status is JobStatus.PENDING  # still in its queue
    assert store.get_job(held).status is JobStatus.PENDING  # a worker holds it
    assert all(
        j.status is JobStatus.PENDING for j in store.list_jobs() if j.queue == "no-such-queue"
    )


def test_a_broker_that_cannot_be_read_changes_nothing(installed: Any) -> None:
    app = make_app("memory://")
    tracker = installed(app, pending_lost_after_s=0.01)
    job_id = app.tasks[f"{app.main}.noop"].apply_async((1,), queue="q1").id
    tracker.flush()
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("q1")
    assert reap_vanished(app, tracker.store, 0.01) == []
    assert tracker.store.get_job(job_id).status is JobStatus.PENDING
