"""Smoke tests through real containers (pytest-celery): a worker container with jobtrack,
Redis and RabbitMQ as broker, a PostgreSQL container as the tracking database. The test
publishes from this host and reads the rows back from the database container."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from pytest_celery import CELERY_REDIS_BROKER, CeleryTestSetup

from jobtrack.maintenance import reap
from jobtrack.models import JobStatus
from jobtrack.store import Store


def until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.3)


def job_in(store: Store, job_id: str, *statuses: JobStatus) -> Any:
    def check() -> Any:
        job = store.find_job(job_id)
        return job if job is not None and job.status in statuses else None

    return until(check, 90, f"job {job_id} in {[s.value for s in statuses]}")


def publish(setup: CeleryTestSetup, source: str, rows: int, delay_s: float = 0.0) -> str:
    queue = setup.worker.worker_queue
    sent = setup.app.send_task("smoke.import_rows", args=[source, rows, delay_s], queue=queue)
    return str(sent.id)


def test_tracked_through_containers(celery_setup: CeleryTestSetup, tracking_db: Store) -> None:
    """Runs once per broker pytest-celery knows: Redis and RabbitMQ."""
    job_id = publish(celery_setup, "a", 5)
    job = job_in(tracking_db, job_id, JobStatus.COMPLETED)
    assert (job.processed_items, job.output_data, job.stage_count) == (5, 5, 2)
    assert job.worker and job.worker.startswith(celery_setup.worker.worker_name)
    events = tracking_db.list_events(job_id)
    assert [e.stage for e in events if e.stage] == ["read", "write"]


@pytest.mark.parametrize("celery_broker", [CELERY_REDIS_BROKER], indirect=True)
def test_a_killed_worker_container_leaves_its_job_lost(
    celery_setup: CeleryTestSetup, tracking_db: Store
) -> None:
    job_id = publish(celery_setup, "k", 400, 0.05)
    until(
        lambda: (j := tracking_db.find_job(job_id)) is not None and j.processed_items >= 10,
        90,
        "the job under way",
    )
    celery_setup.worker.kill()
    lost = until(lambda: job_id in reap(tracking_db, lost_after_s=3), 60, "the job lost")
    assert lost
    job = tracking_db.get_job(job_id)
    assert job.status is JobStatus.LOST and 10 <= job.processed_items < 400


@pytest.mark.parametrize("celery_broker", [CELERY_REDIS_BROKER], indirect=True)
def test_the_database_cut_off_and_back(
    celery_setup: CeleryTestSetup, tracking_db: Store, smoke_postgres: Any
) -> None:
    """The database container leaves the network while tasks run; the worker keeps them
    in memory; once it is back every row converges."""
    network = next(iter(smoke_postgres.attrs["NetworkSettings"]["Networks"]))
    first = publish(celery_setup, "before", 3)
    job_in(tracking_db, first, JobStatus.COMPLETED)
    subprocess.run(["docker", "network", "disconnect", network, smoke_postgres.name], check=True)
    try:
        during = [publish(celery_setup, f"during-{n}", 4) for n in range(5)]
        results = [celery_setup.app.AsyncResult(i) for i in during]
        for result in results:  # the tasks themselves finish during the outage
            assert result.get(timeout=60) == 4
    finally:
        subprocess.run(["docker", "network", "connect", network, smoke_postgres.name], check=True)
    smoke_postgres.reload()
    host, port = smoke_postgres.get_addr("5432/tcp")
    back = Store(f"postgresql://jobtrack:jobtrack@{host}:{port}/jobtrack")
    try:
        for job_id in during:
            job = job_in(back, job_id, JobStatus.COMPLETED)
            assert job.processed_items == 4
    finally:
        back.close()
