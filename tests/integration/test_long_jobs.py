"""Long jobs (issue 12, first part): stages and checkpoints, with an in-process worker on
PostgreSQL. A task declares its stages, moves through them, checkpoints as it goes;
its retry starts from the last checkpoint and records every item exactly once; an
operator's retry of a failed job starts from the failed job's checkpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.control import retry_job
from jobtrack.models import JobFilter, JobStatus, stage_spans
from jobtrack.store import Store
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres

ROWS = 10


@pytest.fixture
def world(pg_url: str) -> Iterator[dict[str, Any]]:
    app = Celery(f"long{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True
    starts: dict[str, list[int]] = {}
    durable: list[Any] = []
    reader = Store(pg_url)  # another connection: what is committed, not what is buffered

    @app.task(name=f"{app.main}.import_file", bind=True, max_retries=2)
    @jobtrack.track(job_type="import", name="Import {path}", stages=["download", "parse", "load"])
    def import_file(self: Any, path: str, crash: str = "retry") -> str:
        job = jobtrack.current_job()
        start = (job.last_checkpoint or {}).get("row", 0)
        starts.setdefault(self.request.id, []).append(start)
        job.stage("download")
        job.stage("parse")
        job.stage("load")
        for n in range(start, ROWS):
            job.item(f"row-{n}", status="success")
            job.progress(current=n + 1, total=ROWS)
            if n % 3 == 2:
                job.checkpoint({"row": n + 1})
                durable.append(reader.get_job(self.request.id).checkpoint)
            if n == 5 and self.request.retries == 0 and not job_was_retried(job):
                if crash == "retry":
                    raise self.retry(countdown=0.05)
                raise RuntimeError("the source went away")
        return "done"

    def job_was_retried(job: Any) -> bool:
        found = reader.find_job(job.id)
        return bool(found and isinstance(found.metadata, dict) and found.metadata.get("retry_of"))

    tracker = jobtrack.install(app, pg_url, reap_in_workers=False)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        yield {
            "app": app,
            "task": import_file,
            "tracker": tracker,
            "store": tracker.store,
            "starts": starts,
            "durable": durable,
        }
    jobtrack.uninstall()
    tracker.store.close()
    reader.close()


def finished(store: Store, job_id: str) -> Any:
    jobtrack.flush()
    job = store.find_job(job_id)
    return job if job is not None and job.status.is_terminal else None


def test_stages_and_checkpoints_through_a_retry(world: dict[str, Any]) -> None:
    store: Store = world["store"]
    result = world["task"].delay("products.csv")
    job = wait_for(lambda: finished(store, result.id), 30, message="import finished")
    assert job.status is JobStatus.COMPLETED and job.retries == 1
    # The retry started from the last checkpoint (after row 6), and each item is once.
    assert world["starts"][result.id] == [0, 6]
    assert [i.key for i in store.list_items(result.id)] == [f"row-{n}" for n in range(ROWS)]
    assert job.processed_items == ROWS
    # Durable when checkpoint() returned: another connection read it at once.
    assert world["durable"][:2] == [{"row": 3}, {"row": 6}]
    assert job.checkpoint == {"row": 9} and job.checkpoint_at is not None
    assert (job.progress_stage, job.stage_index, job.stage_count) == ("load", 3, 3)
    spans = stage_spans(store.list_events(result.id))
    assert [(s.name, s.attempt) for s in spans] == [
        ("download", 0),
        ("parse", 0),
        ("load", 0),
        ("download", 1),
        ("parse", 1),
        ("load", 1),
    ]
    assert all(s.ended_at is not None and s.duration_ms is not None for s in spans)
    assert result.id in {j.id for j in store.list_jobs(JobFilter.of(stage="load"))}


def test_an_operators_retry_starts_from_the_failed_jobs_checkpoint(world: dict[str, Any]) -> None:
    store: Store = world["store"]
    failed = world["task"].delay("orders.csv", crash="fail")
    job = wait_for(lambda: finished(store, failed.id), 30, message="import failed")
    assert job.status is JobStatus.FAILED and job.checkpoint == {"row": 6}
    again = retry_job(world["app"], world["tracker"], failed.id)
    done = wait_for(lambda: finished(store, again), 30, message="retried import finished")
    assert done.status is JobStatus.COMPLETED
    assert world["starts"][again] == [6]
    assert [i.key for i in store.list_items(again)] == [f"row-{n}" for n in range(6, ROWS)]
