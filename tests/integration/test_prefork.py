"""A real prefork worker subprocess on Redis, writing to PostgreSQL.

These are the issue's "done when" checks, read back with plain SQL-level reads of the
jobs table: pending at publish, completed with worker/pid/duration, decorated jobs with
items, failures, retries, revoke with terminate, a pool child killed with SIGKILL, bad
inputs, and nothing lost on a warm shutdown.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import text

from jobtrack.models import JobStatus
from tests.conftest import wait_for
from tests.integration.conftest import job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_lifecycle_through_plain_sql(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    # Published to a queue nobody consumes yet: the row is pending, with its queue.
    waiting = app.send_task("wa.noop", args=[1], queue=worker.queue + "-later", countdown=5)
    job_when(store, waiting.id, status=JobStatus.PENDING, queue=worker.queue + "-later")

    done = app.send_task("wa.noop", args=[{"k": "v"}], queue=worker.queue)
    imp = app.send_task("wa.import", args=["products.csv", "u7", 25], queue=worker.queue)
    failed = app.send_task("wa.boom", args=["broken row"], queue=worker.queue)
    retried = app.send_task("wa.flaky", args=[2], queue=worker.queue)
    for r in (done, imp, failed, retried):
        wait_for(
            lambda r=r: store.find_job(r.id) and store.get_job(r.id).status.is_terminal,
            30,
            message=f"{r.id} finished",
        )

    with store.engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, status, queue, worker, pid, started_at, completed_at, duration_ms, "
                    "job_type, job_subtype, name, owner_id, total_items, processed_items, "
                    "failed_items, progress_percent, error_type, error_message, traceback, "
                    "retries, input_data, output_data, created_at, sent_at FROM jobs"
                )
            )
        }
        items = conn.execute(
            text("SELECT status, count(*) FROM job_items WHERE job_id = :id GROUP BY status"),
            {"id": imp.id},
        ).all()
        attempts = conn.execute(  # every transition, each its own row (docs/schema.md)
            text("SELECT status, attempt FROM job_trace WHERE job_id = :id ORDER BY at, id, step"),
            {"id": retried.id},
        ).all()

    row = rows[done.id]
    assert row.status == "completed" and row.queue == worker.queue
    assert row.worker == worker.name and row.pid in worker.child_pids()
    assert row.started_at <= row.completed_at and row.duration_ms is not None
    assert row.input_data == {"args": [{"k": "v"}], "kwargs": {}}
    assert row.output_data == {"k": "v"}

    row = rows[imp.id]
    assert (row.job_type, row.job_subtype, row.name, row.owner_id) == (
        "import",
        "csv",
        "Import products.csv",
        "u7",
    )
    assert (row.total_items, row.processed_items, row.failed_items) == (25, 25, 3)
    assert row.progress_percent == 100.0
    assert dict(items) == {"success": 22, "error": 3}

    row = rows[failed.id]
    assert row.status == "failed" and row.error_type == "ValueError"
    assert row.error_message == "broken row" and "raise ValueError" in row.traceback

    row = rows[retried.id]
    assert row.status == "completed" and row.retries == 2
    # One run: the stamp the publisher made at its publish (its row's created_at) came
    # through the broker to the pool child, and both retries the child published kept it.
    assert row.sent_at is not None and row.sent_at == row.created_at
    assert [tuple(a) for a in attempts] == [
        ("pending", 0),
        ("running", 0),
        ("retrying", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("completed", 2),
    ]


def test_pool_child_killed_is_failed_not_running(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    result = app.send_task("wa.sleep", args=[60], queue=worker.queue)
    job = job_when(store, result.id, status=JobStatus.RUNNING)
    assert job.pid in worker.child_pids()
    killed_at = time.monotonic()
    os.kill(job.pid, signal.SIGKILL)
    job = job_when(store, result.id, 20, status=JobStatus.FAILED)
    elapsed = time.monotonic() - killed_at
    assert job.error_type is not None and "WorkerLostError" in job.error_type
    # worker_lost_wait is 3 s in this worker; the issue allows it + 5 s.
    assert elapsed < 3 + 5
    print(f"\nFIGURE pool child SIGKILL -> failed: {elapsed:.1f} s (worker_lost_wait 3 s)")


def test_revoke_with_terminate_is_cancelled(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    result = app.send_task("wa.sleep", args=[60], queue=worker.queue)
    job_when(store, result.id, status=JobStatus.RUNNING)
    app.control.revoke(result.id, terminate=True)
    job = job_when(store, result.id, status=JobStatus.CANCELLED)
    assert job.error_type == "Revoked" and "terminated" in (job.error_message or "")


def test_bad_inputs_are_stored_safely(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    blob = "\x00" + "x" * (3 * 1024 * 1024)
    big = app.send_task(
        "wa.echo_size", args=[blob], kwargs={"password": "hunter2"}, queue=worker.queue
    )
    nul = app.send_task("wa.boom", args=["bad\x00byte"], queue=worker.queue)
    odd = app.send_task("wa.opaque", queue=worker.queue)
    job = job_when(store, big.id, status=JobStatus.COMPLETED)
    assert job.output_data == len(blob)  # the task ran on the whole argument
    with store.engine.connect() as conn:
        size = conn.execute(
            text("SELECT octet_length(input_data::text) FROM jobs WHERE id = :id"), {"id": big.id}
        ).scalar_one()
    assert size < 128 * 1024
    assert job.input_data["kwargs"] == {"password": "[redacted]"}
    job = job_when(store, nul.id, status=JobStatus.FAILED)
    assert job.error_message == "bad\ufffdbyte"
    assert job.input_data == {"args": ["bad\ufffdbyte"], "kwargs": {}}
    job = job_when(store, odd.id, status=JobStatus.COMPLETED)
    assert "Opaque" in job.output_data  # a repr that raises becomes a description


def test_warm_shutdown_loses_nothing_buffered(
    publisher: Any, start_worker: Any, redis_backend_url: str
) -> None:
    app, store = publisher
    # A flush interval far longer than the test: only the shutdown flush can write.
    worker = start_worker(
        env={"JOBTRACK_FLUSH_INTERVAL_S": "600", "JOBTRACK_FLUSH_MAX_JOBS": "100000"},
        backend=redis_backend_url,
    )
    results = [app.send_task("wa.noop", args=[n], queue=worker.queue) for n in range(40)]
    assert [r.get(timeout=30) for r in results] == list(range(40))
    assert worker.stop(signal.SIGTERM) == 0
    for r in results:
        job = store.get_job(r.id)
        assert job.status is JobStatus.COMPLETED, (r.id, job.status)


def test_one_poisoned_job_never_stops_tracking(publisher: Any, start_worker: Any) -> None:
    """The issue's case: a decorated task whose name template and owner are filled from
    an argument holding NUL (and a 2 MB one). Its row is stored cleaned and bounded (the
    owner not at all: mended, it could be another owner's), and clean jobs after it are
    recorded, in the same worker and in a worker started later."""
    app, store = publisher
    worker = start_worker()
    poisoned = [
        app.send_task("wa.import", args=["rep\x00ort.csv", "us\x00er", 2], queue=worker.queue),
        app.send_task("wa.import", args=["x" * (2 * 1024 * 1024), "u2", 1], queue=worker.queue),
    ]
    clean = [app.send_task("wa.noop", args=[n], queue=worker.queue) for n in range(3)]
    for result in clean:
        assert job_when(store, result.id, status=JobStatus.COMPLETED).output_data is not None
    first = job_when(store, poisoned[0].id, status=JobStatus.COMPLETED)
    assert first.name == "Import rep\ufffdort.csv" and first.owner_id is None
    assert first.processed_items == 2
    big = job_when(store, poisoned[1].id, status=JobStatus.COMPLETED)
    assert big.name is not None and len(big.name) <= 500
    worker.stop()
    later = start_worker(queue=worker.queue)  # a new process: nothing poisoned to replay
    after = app.send_task("wa.noop", args=["later"], queue=later.queue)
    assert job_when(store, after.id, status=JobStatus.COMPLETED).output_data == "later"
    assert "relation" not in later.log() and "refused" not in worker.log()
