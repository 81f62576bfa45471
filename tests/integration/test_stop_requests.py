"""Stop requests with an in-process worker (threads pool, PostgreSQL, sync write mode):
what an operator sees when a task never calls its handle, ``job.check()`` as the stop
point of a loop that calls nothing else, and a paused job cancelled."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.control import cancel_job, pause_job, resume_job
from jobtrack.models import JobStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def world(pg_url: str) -> Iterator[dict[str, Any]]:
    app = Celery(f"stop{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True
    gate = threading.Event()
    checks: list[int] = []

    @app.task(name=f"{app.main}.idle")
    @jobtrack.track(job_type="idle")
    def idle() -> str:
        assert gate.wait(60), "the test never opened the gate"
        return "done"

    @app.task(name=f"{app.main}.spin")
    @jobtrack.track(job_type="spin")
    def spin() -> int:
        job = jobtrack.current_job()
        while True:
            checks.append(1)
            job.check()
            time.sleep(0.01)

    tracker = jobtrack.install(
        app, pg_url, write_mode="sync", heartbeat_interval_s=0.1, reap_in_workers=False
    )
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        yield {"app": app, "tracker": tracker, "idle": idle, "spin": spin, "gate": gate}
        gate.set()
    jobtrack.uninstall()
    tracker.store.close()


def status_is(world: dict[str, Any], job_id: str, status: JobStatus) -> Any:
    job = world["tracker"].store.find_job(job_id)
    return job if job is not None and job.status is status else None


def test_a_task_that_never_checks_shows_the_pause_as_requested(world: dict[str, Any]) -> None:
    app, tracker = world["app"], world["tracker"]
    job_id = world["idle"].delay().id
    wait_for(lambda: status_is(world, job_id, JobStatus.RUNNING), message="running")
    assert pause_job(app, tracker, job_id).startswith("pause requested")
    asked = tracker.store.get_job(job_id).pause_requested_at

    def beats_later() -> Any:  # heartbeats (each reads the request) well after it
        job = tracker.store.get_job(job_id)
        return job if job.heartbeat_at > asked + timedelta(seconds=0.5) else None

    job = wait_for(beats_later, message="heartbeats after the request")
    assert job.status is JobStatus.RUNNING and job.pause_requested_at is not None
    assert resume_job(app, tracker, job_id) == "pause request withdrawn; it keeps running"
    world["gate"].set()
    done = wait_for(lambda: status_is(world, job_id, JobStatus.COMPLETED), message="done")
    assert done.pause_requested_at is None and done.output_data == "done"


def test_check_is_the_stop_point_and_a_paused_job_can_be_cancelled(
    world: dict[str, Any],
) -> None:
    app, tracker = world["app"], world["tracker"]
    job_id = world["spin"].delay().id
    wait_for(lambda: status_is(world, job_id, JobStatus.RUNNING), message="running")
    pause_job(app, tracker, job_id)
    paused = wait_for(lambda: status_is(world, job_id, JobStatus.PAUSED), message="paused")
    assert paused.error_type is None and paused.completed_at is None
    assert cancel_job(app, tracker, job_id) == "cancelled"
    job = tracker.store.get_job(job_id)
    assert job.status is JobStatus.CANCELLED and job.cancel_requested_at is not None
    with pytest.raises(jobtrack.JobtrackError) as refused:
        resume_job(app, tracker, job_id)
    assert "it is cancelled; only paused jobs can be resumed" in str(refused.value)
