"""Steering long jobs on real workers (issue 12), black-box: the task is
``wa.long_import`` in a worker subprocess, the operator is ``jobtrack -A app`` in another,
and everything is read back from the database, on PostgreSQL and on SQLite.

* pause a running import mid-way: it reads ``paused``, its only worker slot is free,
  and resuming runs it again under its id from its last checkpoint, every item once;
* pause a queued job: the worker drops it without running its body;
* cancel in a threads pool (which cannot terminate a task) ends it ``cancelled``;
* retry only the failed items: the task is given exactly those keys, they replace
  their failed rows, and the counters follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import jobtrack
from jobtrack.models import JobStatus, Stop
from jobtrack.store import Store
from tests.conftest import wait_for
from tests.integration.conftest import Worker, cli, job_when

pytestmark = [pytest.mark.slow, pytest.mark.redis]

ROWS = 30
#: A row's time in the imports an operator stops midway: long enough that the rest of the
#: import outlasts a CLI call (a Python start-up, seconds on a loaded machine).
SLOW_ROW_S = 0.3
FAST = {"JOBTRACK_HEARTBEAT_INTERVAL_S": "0.3", "JOBTRACK_FLUSH_INTERVAL_S": "0.05"}


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def world(db: str, redis_url: str, start_worker: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A publisher on ``db``, and a way to start workers writing to it."""
    app = Celery("publisher", broker=redis_url)
    app.conf.broker_connection_retry_on_startup = True
    tracker = jobtrack.install(app, db, reap_in_workers=False)
    runs = tmp_path / "runs"
    runs.mkdir()

    def worker(**kwargs: Any) -> Worker:
        env = {**FAST, "JT_RUN_LOG": str(runs), **kwargs.pop("env", {})}
        return start_worker(db_url=db, env=env, **kwargs)  # type: ignore[no-any-return]

    yield {"app": app, "store": tracker.store, "worker": worker, "runs": runs}
    jobtrack.uninstall()
    tracker.store.close()
    app.close()


def run_log(world: dict[str, Any], job_id: str) -> list[str]:
    path: Path = world["runs"] / job_id
    return path.read_text().splitlines() if path.exists() else []


def import_job(world: dict[str, Any], worker: Worker, **kwargs: Any) -> str:
    sent = world["app"].send_task(
        "wa.long_import", args=["data.csv", ROWS], kwargs=kwargs, queue=worker.queue
    )
    return str(sent.id)


def ok(done: Any) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return str(done.stdout)


def test_pause_a_running_import_then_resume_it_from_its_checkpoint(
    world: dict[str, Any],
) -> None:
    store: Store = world["store"]
    worker = world["worker"](concurrency=1)
    job_id = import_job(world, worker, delay_s=SLOW_ROW_S)
    early = job_when(store, job_id, status=JobStatus.RUNNING)
    wait_for(lambda: store.get_job(job_id).processed_items >= 5, 30, message="5 rows done")
    assert store.get_job(job_id).total_items == ROWS  # planned up front: "5 of 30"
    assert early.stage_count == 3

    assert "pause requested" in ok(cli(worker, "pause", job_id))
    paused = job_when(store, job_id, status=JobStatus.PAUSED)
    assert paused.pause_requested_at is not None and paused.completed_at is None
    assert paused.error_type is None  # not a failure
    stopped_at = paused.checkpoint["row"]
    assert 5 <= stopped_at < ROWS
    # Its worker (one slot) is free: another task runs while the import is paused.
    other = world["app"].send_task("wa.noop", args=[7], queue=worker.queue)
    assert job_when(store, other.id, status=JobStatus.COMPLETED).output_data == 7
    assert store.get_job(job_id).status is JobStatus.PAUSED

    refused = cli(worker, "pause", job_id)
    assert refused.returncode == 0 and "already paused" in refused.stdout
    assert "resumed" in ok(cli(worker, "resume", job_id))
    done = job_when(store, job_id, status=JobStatus.COMPLETED)
    assert done.pause_requested_at is None and done.output_data == ROWS
    assert (done.processed_items, done.failed_items, done.total_items) == (ROWS, 0, ROWS)
    items = store.list_items(job_id, limit=1000)
    assert sorted(i.key for i in items) == sorted(f"row-{n}" for n in range(ROWS))
    assert {i.status.value for i in items} == {"success"}

    # The second run started from the checkpoint: it did not redo the rows before it,
    # and between the two runs every row ran (the row in flight at the stop, at most,
    # twice: it had not reached its checkpoint).
    log = run_log(world, job_id)
    starts = [line for line in log if line.startswith("run ")]
    assert starts == ["run 0 from 0 retry_items=None", f"run 0 from {stopped_at} retry_items=None"]
    second = log[log.index(starts[1]) + 1 :]
    first = log[1 : log.index(starts[1])]
    assert second[0] == f"row-{stopped_at}" and second[-1] == f"row-{ROWS - 1}"
    assert set(first) | set(second) == {f"row-{n}" for n in range(ROWS)}
    assert len(set(first) & set(second)) <= 1

    # The trace tells the story: paused by its worker, resumed by an operator.
    events = store.list_events(job_id)
    runs = [e.status.value for e in events if e.stage is None and e.note is None]
    assert runs.count("running") == 2 and runs[-1] == "completed"
    notes = [e.note for e in events if e.note]
    assert notes == ["pause requested", "paused: stopped at its next check", "resumed"]
    shown = ok(cli(worker, "jobs", "show", job_id))
    assert "paused: stopped at its next check" in shown and "resumed" in shown


def test_a_paused_queued_job_never_runs_its_body(world: dict[str, Any]) -> None:
    store: Store = world["store"]
    # One slot, one prefetched message, acknowledged late: the next one waits in Redis.
    worker = world["worker"](concurrency=1, env={"JT_PREFETCH": "1"})
    gate = world["runs"] / "release-the-slot"
    busy = world["app"].send_task("wa.hold_late", args=[str(gate)], queue=worker.queue)
    job_when(store, busy.id, status=JobStatus.RUNNING)
    job_id = import_job(world, worker)
    job_when(store, job_id, status=JobStatus.PENDING)
    assert ok(cli(worker, "pause", job_id)).strip().endswith("paused")
    assert store.requests.open().get(job_id) is Stop.PAUSE  # what workers read
    gate.touch()  # the slot is free only now: the job is received after the pause
    job_when(store, busy.id, status=JobStatus.COMPLETED)
    # The worker received it and dropped it: its body never ran.
    dropped = wait_for(
        lambda: any(e.note and "dropped" in e.note for e in store.list_events(job_id)),
        30,
        message="the worker drops the paused job",
    )
    assert dropped
    job = store.get_job(job_id)
    assert job.status is JobStatus.PAUSED and job.started_at is None
    assert run_log(world, job_id) == [] and job.processed_items == 0

    assert "resumed" in ok(cli(worker, "resume", job_id))
    done = job_when(store, job_id, status=JobStatus.COMPLETED)
    assert done.processed_items == ROWS
    assert run_log(world, job_id)[0] == "run 0 from 0 retry_items=None"


def test_cancel_stops_a_task_in_a_threads_pool(world: dict[str, Any]) -> None:
    store: Store = world["store"]
    worker = world["worker"](pool="threads", concurrency=2)
    job_id = import_job(world, worker, delay_s=SLOW_ROW_S)
    job_when(store, job_id, status=JobStatus.RUNNING)
    wait_for(lambda: store.get_job(job_id).processed_items >= 3, 30, message="3 rows done")
    assert "cancel requested" in ok(cli(worker, "cancel", job_id))
    job = job_when(store, job_id, status=JobStatus.CANCELLED)
    assert job.error_message == "cancelled: stopped at its next check"
    assert 3 <= job.processed_items < ROWS and job.worker == worker.name
    # The worker goes on taking tasks.
    other = world["app"].send_task("wa.noop", args=[1], queue=worker.queue)
    job_when(store, other.id, status=JobStatus.COMPLETED)
    # A cancelled job cannot be paused or resumed; an unknown one is not found.
    for action in ("pause", "resume"):
        refused = cli(worker, action, job_id)
        assert refused.returncode == 1 and f"cannot {action} job {job_id}" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    missing = cli(worker, "pause", "no-such-job")
    assert missing.returncode == 1 and "no job with id 'no-such-job'" in missing.stderr


def test_retry_only_the_failed_items(world: dict[str, Any]) -> None:
    store: Store = world["store"]
    worker = world["worker"](concurrency=1)
    job_id = import_job(world, worker, bad_rows=[3, 17])
    failed = job_when(store, job_id, status=JobStatus.FAILED)
    # fail_when="any_item_failed": the task returned normally, its items failed it.
    assert failed.error_type == "ItemsFailed"
    assert failed.error_message == "2 of 30 items failed (fail_when='any_item_failed')"
    assert (failed.processed_items, failed.failed_items) == (ROWS, 2)

    assert "retrying its failed items" in ok(cli(worker, "retry", "--failed-items", job_id))
    done = job_when(store, job_id, status=JobStatus.COMPLETED)
    assert (done.processed_items, done.failed_items, done.retries) == (ROWS, 0, 1)
    assert done.error_type is None and done.error_message is None
    assert len(store.list_items(job_id, limit=1000)) == ROWS
    log = run_log(world, job_id)
    second = log.index("run 1 from 30 retry_items=['row-3', 'row-17']")
    assert log[second + 1 :] == ["row-3", "row-17"]  # exactly the failed keys
    notes = [e.note for e in store.list_events(job_id) if e.note]
    assert notes == ["retrying 2 failed items"]
    again = cli(worker, "retry", "--failed-items", job_id)
    assert again.returncode == 1 and "it has no failed items" in again.stderr
