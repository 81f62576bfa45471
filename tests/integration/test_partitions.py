"""Partitioned job tables with a real worker (in-process, PostgreSQL): tasks with items,
log lines and a retry land whole in their period's partition, and retention drops the
period once it has passed, with nothing left behind."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from sqlalchemy import text

import jobtrack
import jobtrack.maintenance as maintenance
from jobtrack.maintenance import WorkerUpkeep, prune_by_retention
from jobtrack.models import JobStatus
from jobtrack.settings import Settings
from jobtrack.store import Store
from jobtrack.tracker import Tracker
from tests.conftest import fresh_pg_database, wait_for

pytestmark = pytest.mark.postgres
log = logging.getLogger("tests.partitions")


@pytest.fixture
def parted_url() -> Iterator[str]:
    with fresh_pg_database("jobtrack_part") as url:
        store = Store(url)
        store.ensure_schema()
        store.partition("month")
        store.close()
        yield url


def test_tasks_land_whole_in_their_partition_and_go_with_it(
    parted_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Celery(f"parts{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name=f"{app.main}.load", bind=True, max_retries=2)
    @jobtrack.track(job_type="import", name="Load {n}")
    def load(self: Any, n: int) -> int:
        job = jobtrack.current_job()
        for i in range(n):
            job.item(f"row-{i}", status="success")
        log.info("loaded %d rows", n)
        if self.request.retries == 0:
            raise self.retry(countdown=0.05)
        return n

    tracker = jobtrack.install(app, parted_url, reap_in_workers=False)
    log.setLevel(logging.INFO)  # the test worker sets the root's level to ERROR
    store = tracker.store
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            ids = [load.delay(n).id for n in (3, 5)]

            def done() -> bool:
                jobtrack.flush()
                found = [store.find_job(i) for i in ids]
                return all(j is not None and j.status.is_terminal for j in found)

            wait_for(done, 30, message="both tasks finished")
        jobtrack.flush()
        jobs = {i: store.get_job(i) for i in ids}
        assert {j.status for j in jobs.values()} == {JobStatus.COMPLETED}
        assert [jobs[i].processed_items for i in ids] == [3, 5]
        assert all(j.retries == 1 for j in jobs.values())
        assert all(store.logs.lines(i) for i in ids)
        here = f"{datetime.now(UTC):%Y%m}01"
        with store.engine.connect() as conn:
            for table in ("jobs", "job_items", "job_events", "job_logs"):
                key = "id" if table == "jobs" else "job_id"
                placed = (
                    conn.execute(
                        text(
                            f"SELECT DISTINCT tableoid::regclass::text FROM {table} "
                            f"WHERE {key} = ANY(:i)"
                        ),
                        {"i": ids},
                    )
                    .scalars()
                    .all()
                )
                assert placed == [f"{table}_p{here}"], table
            assert (
                conn.execute(
                    text("SELECT count(*) FROM jobs WHERE id = ANY(:i)"), {"i": ids}
                ).scalar()
                == 2
            )

        # Three months on, with a week's retention: the period is dropped whole.
        later = datetime.now(UTC) + timedelta(days=100)
        monkeypatch.setattr(maintenance, "utcnow", lambda: later)
        week = dataclasses.replace(
            tracker.settings,
            keep_completed_days=7,
            keep_failed_days=7,
            keep_cancelled_days=7,
        )
        removed = prune_by_retention(store, week)
        assert removed["partitions"] >= 1 and removed["jobs"] == 2
        assert all(store.find_job(i) is None for i in ids)
        assert all(store.list_items(i) == [] and store.logs.lines(i) == [] for i in ids)
        assert f"jobs_p{here}" not in {p.name for p in store.partitions()}
    finally:
        jobtrack.uninstall()
        store.close()


def test_the_worker_upkeep_makes_the_next_periods_partitions() -> None:
    with fresh_pg_database("jobtrack_part") as url:
        _upkeep_makes_partitions(url)


def _upkeep_makes_partitions(url: str) -> None:
    tracker = Tracker(Settings(database_url=url))
    try:
        tracker.store.ensure_schema()
        # Converted long ago: its partitions end after January 2025.
        tracker.store.partition("month", now=datetime(2024, 11, 5, tzinfo=UTC))
        assert max(p.start for p in tracker.store.partitions() if p.start) < date(2025, 2, 1)
        upkeep = WorkerUpkeep(Celery("upkeep"), tracker)
        upkeep.step()
        here = datetime.now(UTC).date().replace(day=1)
        starts = {p.start for p in tracker.store.partitions()}
        assert here in starts and max(s for s in starts if s) > here  # and ahead of it
    finally:
        tracker.store.close()
