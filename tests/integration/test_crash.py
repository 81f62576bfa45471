"""Whole-worker kill -9: no signal at all. The reaper marks the job lost; with acks_late
the message is redelivered (Redis visibility timeout) and the job ends completed."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from jobtrack.maintenance import reap
from jobtrack.models import JobStatus
from tests.conftest import wait_for
from tests.integration.conftest import job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

HEARTBEAT_S = 0.5
LOST_AFTER_S = 3.0


def test_killed_worker_is_lost_then_redelivered_and_completed(
    publisher: Any, start_worker: Any
) -> None:
    app, store = publisher
    env = {"JOBTRACK_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S)}
    first = start_worker(env=env)
    result = app.send_task("wa.sleep_late", args=[3], queue=first.queue)
    started = job_when(store, result.id, status=JobStatus.RUNNING).started_at
    # A live job's heartbeat advances, and keeps the reaper off it.
    wait_for(
        lambda: store.get_job(result.id).heartbeat_at > started + timedelta(seconds=HEARTBEAT_S),
        10,
        message="a heartbeat after the start",
    )
    assert reap(store, LOST_AFTER_S) == []

    first.kill_all()
    killed_at = time.monotonic()
    lost = wait_for(
        lambda: reap(store, LOST_AFTER_S),
        20,
        interval_s=0.2,
        message="the reaper to mark the job lost",
    )
    assert lost == [result.id]
    lost_in = time.monotonic() - killed_at
    assert lost_in <= LOST_AFTER_S + HEARTBEAT_S + 2
    assert store.get_job(result.id).status is JobStatus.LOST

    start_worker(env=env, queue=first.queue)  # redelivery after the visibility timeout
    restarted_at = time.monotonic()
    job = job_when(store, result.id, 60, status=JobStatus.COMPLETED)
    print(
        f"\nFIGURE whole worker SIGKILL -> lost: {lost_in:.1f} s (threshold "
        f"{LOST_AFTER_S:g} s); new worker -> completed: "
        f"{time.monotonic() - restarted_at:.1f} s (visibility timeout 4 s, task 3 s)"
    )
    assert job.output_data == "slept"
    trace = [(e.status.value, e.attempt) for e in store.list_events(result.id)]
    assert trace == [("pending", 0), ("running", 0), ("lost", 0), ("running", 0), ("completed", 0)]
