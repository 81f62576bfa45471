"""`jobtrack -A app retry|cancel` acting on a live prefork worker (Redis, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from jobtrack.models import JobStatus
from tests.integration.conftest import cli, job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_retry_publishes_again_with_the_original_arguments(
    publisher: Any, start_worker: Any
) -> None:
    app, store = publisher
    worker = start_worker()
    first = app.send_task("wa.boom", args=["bad row 7"], queue=worker.queue)
    job_when(store, first.id, status=JobStatus.FAILED)
    done = cli(worker, "retry", first.id)
    assert done.returncode == 0, done.stdout + done.stderr
    new_id = done.stdout.split("new job ")[1].split()[0]
    again = job_when(store, new_id, status=JobStatus.FAILED)  # it ran again on the worker
    assert again.error_message == "bad row 7" and again.worker == worker.name
    assert again.metadata == {"retry_of": first.id}
    assert store.get_job(first.id).status is JobStatus.FAILED  # history kept

    running = app.send_task("wa.sleep", args=[60], queue=worker.queue)
    job_when(store, running.id, status=JobStatus.RUNNING)
    watched = cli(worker, "watch", "--once")
    assert watched.returncode == 0, watched.stderr
    row = next(line for line in watched.stdout.splitlines() if "wa.sleep" in line)
    assert "running" in row and "ago" in row
    refused = cli(worker, "retry", running.id)
    assert refused.returncode == 1 and "only failed, cancelled and lost" in refused.stderr
    assert cli(worker, "cancel", "--terminate", running.id).returncode == 0
    job_when(store, running.id, status=JobStatus.CANCELLED)


def test_cancel_a_job_that_has_not_started(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    later = app.send_task("wa.noop", args=[1], queue=worker.queue, countdown=30)
    job_when(store, later.id, status=JobStatus.PENDING)
    done = cli(worker, "cancel", later.id)
    assert done.returncode == 0 and "cancelled" in done.stdout
    assert store.get_job(later.id).status is JobStatus.CANCELLED
