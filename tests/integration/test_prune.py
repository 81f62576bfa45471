"""Pruning in batches while a real worker keeps writing: old rows go, new rows stay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.models import JobStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres

OLD_ROWS = 20_000


def test_prune_while_a_worker_writes(pg_url: str) -> None:
    app = Celery(f"prune{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name=f"{app.main}.work")
    def work(n: int) -> int:
        jobtrack.current_job().item(f"k{n}")
        return n

    tracker = jobtrack.install(app, pg_url, keep_completed_days=30)
    store = tracker.store
    store.ensure_schema()
    marker = uuid.uuid4().hex[:8]
    with store.engine.begin() as conn:  # generated history, 200 days old
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, status, state_seq, created_at, updated_at, "
            "completed_at, processed_items, failed_items, skipped_items, retries) "
            "SELECT %(m)s || '-' || g, 'completed', 1099511627776, "
            "now() - interval '200 days', now() - interval '200 days', "
            "now() - interval '200 days', 0, 0, 0, 0 FROM generate_series(1, %(n)s) g",
            {"m": marker, "n": OLD_ROWS},
        )
        conn.exec_driver_sql(
            "INSERT INTO job_events (job_id, at, status, attempt) SELECT id, created_at, "
            "'completed', 0 FROM jobs WHERE id LIKE %(m)s",
            {"m": marker + "-%"},
        )
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            results = [work.delay(n) for n in range(100)]
            removed = store.prune(
                finished_before=datetime.now(UTC) - timedelta(days=30),
                statuses=["completed"],
                batch_size=1000,
            )
            results += [work.delay(n) for n in range(100, 200)]
            assert [r.get(timeout=30) for r in results] == list(range(200))
            wait_for(
                lambda: (
                    jobtrack.flush()
                    and all(
                        (j := store.find_job(r.id)) is not None and j.status is JobStatus.COMPLETED
                        for r in results
                    )
                ),
                20,
                message="all new jobs completed",
            )
        assert removed >= OLD_ROWS
        with store.engine.connect() as conn:
            left = conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM jobs WHERE id LIKE %(m)s), "
                "(SELECT count(*) FROM job_events WHERE job_id LIKE %(m)s)",
                {"m": marker + "-%"},
            ).one()
        assert tuple(left) == (0, 0)
        assert all(store.get_job(r.id).processed_items == 1 for r in results)
    finally:
        jobtrack.uninstall()
        store.close()
