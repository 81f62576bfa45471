"""The record must tell the truth (in-process Celery workers, PostgreSQL).

* ``task.replace()``: the job follows its replacement to its real outcome and output;
* ``fail_job()`` inside the job's own task, then a retry: the retry decides;
* a retried or replaced task is not its own parent;
* heartbeats reach the table during one long blocking call, in both write modes, so
  the reaper leaves a live job alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish

import jobtrack
from jobtrack.control import SENT_HEADER, publish_again, stamp, stamp_time
from jobtrack.job import JobHandle, set_current
from jobtrack.maintenance import reap
from jobtrack.models import Batch, JobStatus, JobUpdate
from jobtrack.store import Store
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres


def make_app() -> Celery:
    app = Celery(f"t{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.update(broker_connection_retry_on_startup=True)
    name = app.main

    @app.task(name=f"{name}.double")
    def double(x: int) -> int:
        return 2 * x

    @app.task(name=f"{name}.broken")
    def broken(x: int) -> int:
        raise LookupError(f"no {x}")

    @app.task(name=f"{name}.checked")
    def checked(x: int) -> int:
        if x < 0:
            raise ValueError(f"{x} is negative")
        return 2 * x

    @app.task(name=f"{name}.resend_self", bind=True)
    def resend_self(self: Any, n: int) -> str:
        if n == 0:  # sends itself again under its own id (not a retry), then returns
            self.apply_async((1,), task_id=self.request.id)
        return f"run {n}"

    @app.task(name=f"{name}.replaced", bind=True)
    def replaced(self: Any, x: int, fail: bool = False) -> Any:
        return self.replace((broken if fail else double).s(x))

    @app.task(name=f"{name}.chained", bind=True)
    def chained(self: Any, x: int) -> Any:
        return self.replace(double.s(x) | double.s())

    @app.task(name=f"{name}.helper_then_retry", bind=True, max_retries=3)
    def helper_then_retry(self: Any) -> str:
        if self.request.retries == 0:
            exc = ConnectionError("upstream down")
            jobtrack.fail_job(self.request.id, exc)  # the hand-written helper pattern
            raise self.retry(exc=exc, countdown=0.05)
        return "second time lucky"

    @app.task(name=f"{name}.helper_then_return", bind=True)
    def helper_then_return(self: Any) -> None:
        jobtrack.fail_job(self.request.id, "the file was empty")

    @app.task(name=f"{name}.login")
    def login(site: str, user: str, password: str, dsn: str = "") -> str:
        return f"{user}@{site}"

    @app.task(name=f"{name}.block")
    def block(seconds: float) -> str:
        time.sleep(seconds)  # one long blocking call: no progress, no item
        return "done"

    return app


@pytest.fixture
def tracked(pg_url: str) -> Iterator[Any]:
    made: list[jobtrack.Tracker] = []

    def install(app: Celery, **settings: Any) -> jobtrack.Tracker:
        tracker = jobtrack.install(app, pg_url, reap_in_workers=False, **settings)
        made.append(tracker)
        return tracker

    yield install
    jobtrack.uninstall()
    for tracker in made:
        tracker.store.close()


def final(store: Store, job_id: str) -> Any:
    jobtrack.flush()
    job = store.find_job(job_id)
    return job if job is not None and job.status.is_terminal else None


def run(app: Celery, store: Store, name: str, *args: Any) -> Any:
    result = app.tasks[f"{app.main}.{name}"].delay(*args)
    return wait_for(lambda: final(store, result.id), 30, message=f"{name} finished")


def test_replace_follows_the_replacement_to_its_outcome(tracked: Any) -> None:
    app = make_app()
    store = tracked(app).store
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        ok = run(app, store, "replaced", 21)
        bad = run(app, store, "replaced", 5, True)
        chain = run(app, store, "chained", 3)
    assert ok.status is JobStatus.COMPLETED and ok.output_data == 42
    assert ok.task_name == f"{app.main}.replaced"  # the job keeps what it was
    assert bad.status is JobStatus.FAILED and bad.error_type == "LookupError"
    assert bad.error_message == "no 5"
    # A chain's last task runs under the job's id: the job ends with the chain's result.
    assert chain.status is JobStatus.COMPLETED and chain.output_data == 12
    for job in (ok, bad, chain):
        assert job.parent_id is None  # not its own parent
        trace = [e.status for e in store.list_events(job.id)]
        assert trace.count(JobStatus.COMPLETED) + trace.count(JobStatus.FAILED) == 1


def test_fail_job_inside_the_task_lets_the_retry_decide(tracked: Any) -> None:
    app = make_app()
    store = tracked(app).store
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        retried = run(app, store, "helper_then_retry")
        returned = run(app, store, "helper_then_return")
    assert retried.status is JobStatus.COMPLETED and retried.retries == 1
    assert retried.output_data == "second time lucky"
    assert retried.parent_id is None  # Celery names the task its own parent on retry
    trace = [(e.status.value, e.attempt) for e in store.list_events(retried.id)]
    assert trace == [
        ("pending", 0),
        ("running", 0),
        ("retrying", 0),
        ("running", 1),
        ("completed", 1),
    ]
    # fail_job() and then a normal return: the author said it failed.
    assert returned.status is JobStatus.FAILED
    assert returned.error_message == "the file was empty"


def test_an_id_published_again_after_its_job_ended_is_its_next_run(tracked: Any) -> None:
    """Celery lets a caller send a task under an id that already ran, and keeps the last
    run's outcome: so does the record. A late write of the earlier run changes nothing."""
    app = make_app()
    store = tracked(app).store
    checked = app.tasks[f"{app.main}.checked"]
    stamps: list[tuple[str, Any]] = []

    def seen(headers: Any = None, **_: Any) -> None:
        stamps.append((headers["id"], headers.get(SENT_HEADER)))

    before_task_publish.connect(seen, weak=False)
    job_id = str(uuid.uuid4())
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            checked.apply_async((-1,), task_id=job_id)
            first = wait_for(lambda: final(store, job_id), 30, message="the first run failed")
            checked.apply_async((21,), task_id=job_id)
            second = wait_for(
                lambda: (job := final(store, job_id)) and job.status is JobStatus.COMPLETED and job,
                30,
                message="the second run completed",
            )
    finally:
        before_task_publish.disconnect(seen)
    assert first.status is JobStatus.FAILED and first.error_type == "ValueError"
    assert [i for i, _ in stamps] == [job_id, job_id]
    assert first.sent_at == stamp_time(stamps[0][1])
    assert second.sent_at == stamp_time(stamps[1][1]) and second.sent_at > first.sent_at
    assert second.output_data == 42 and second.input_data["args"] == [21]
    assert second.error_type is None and second.error_message is None
    assert second.created_at == first.created_at  # one job, two runs
    trace = [e.status for e in store.list_events(job_id)]
    assert trace.index(JobStatus.FAILED) < trace.index(JobStatus.COMPLETED)
    assert trace.count(JobStatus.PENDING) == 2
    # The first run's publisher writing its "pending" late: the job stays as it is.
    store.write_batch(
        Batch([JobUpdate.transition(job_id, JobStatus.PENDING, sent_at=first.sent_at)])
    )
    assert store.get_job(job_id).status is JobStatus.COMPLETED


def test_a_task_that_sends_its_own_id_again_is_followed_to_the_new_run(
    tracked: Any,
) -> None:
    """Not a retry (those keep the run's stamp): a new publish of the id, so a new run."""
    app = make_app()
    store = tracked(app).store
    job_id = str(uuid.uuid4())
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        app.tasks[f"{app.main}.resend_self"].apply_async((0,), task_id=job_id)
        job = wait_for(
            lambda: (j := final(store, job_id)) and j.output_data == "run 1" and j,
            30,
            message="the second run's outcome",
        )
    assert job.status is JobStatus.COMPLETED and job.input_data["args"] == [1]
    trace = [e.status for e in store.list_events(job_id)]
    assert trace.count(JobStatus.COMPLETED) == 2


def test_a_retry_goes_on_with_its_runs_stamp(tracked: Any) -> None:
    """A retry is the same run: its message carries the first publish's stamp (so no
    clock of another host can make it look earlier or later than its own run)."""
    app = make_app()
    store = tracked(app).store
    stamps: list[Any] = []

    def seen(headers: Any = None, **_: Any) -> None:
        stamps.append(headers.get(SENT_HEADER))

    before_task_publish.connect(seen, weak=False)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            retried = run(app, store, "helper_then_retry")
    finally:
        before_task_publish.disconnect(seen)
    assert retried.status is JobStatus.COMPLETED and retried.retries == 1
    assert len(stamps) == 2 and stamps[0] == stamps[1]
    assert retried.sent_at == stamp_time(stamps[0])


def test_jobtracks_own_publish_of_a_job_again_goes_on_with_its_run(tracked: Any) -> None:
    """Resume, a retry of failed items and the reaper's republish send a job again under
    its id: its run goes on (the stamp it had), whatever the publishing host's clock."""
    app = make_app()
    store = tracked(app).store
    job_id, first = str(uuid.uuid4()), datetime(2026, 1, 1, tzinfo=UTC)
    name = f"{app.main}.checked"
    lost = JobUpdate.transition(job_id, JobStatus.LOST, 0, sent_at=first, task_name=name)
    store.write_batch(Batch([lost]))
    stamps: list[Any] = []

    def seen(headers: Any = None, **_: Any) -> None:
        stamps.append(headers.get(SENT_HEADER))

    before_task_publish.connect(seen, weak=False)
    try:
        publish_again(app, store.get_job(job_id), ([3], {}), 1)
    finally:
        before_task_publish.disconnect(seen)
    jobtrack.flush()
    assert stamps == [stamp(first)]
    job = store.get_job(job_id)
    assert job.status is JobStatus.RETRYING and job.retries == 1 and job.sent_at == first


def test_what_a_run_writes_from_inside_its_task_is_that_runs(tracked: Any) -> None:
    """fail_job() and complete_job() called by the job's own task carry the run's stamp,
    and a checkpoint left by an earlier run is not the new run's to resume from."""
    app = make_app()
    tracker = tracked(app)
    store = tracker.store
    first, second = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    failing, completing = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (failing, completing):
        handle = JobHandle(job_id, 0, tracker)
        handle.sent_at = second
        set_current(handle)
        try:
            if job_id == failing:
                jobtrack.fail_job(job_id, "the file was empty")
            else:
                jobtrack.complete_job(job_id, "done")
        finally:
            set_current(None)
    jobtrack.flush()
    assert store.get_job(failing).sent_at == second
    assert store.get_job(completing).sent_at == second
    # Its task "returned" here: the job ends as its run would end it (not left running
    # for the next test's reaper to find).
    store.write_batch(Batch([JobUpdate.transition(failing, JobStatus.FAILED, sent_at=second)]))

    resumed = str(uuid.uuid4())
    store.write_batch(
        Batch(
            [JobUpdate.transition(resumed, JobStatus.FAILED, sent_at=first, checkpoint={"at": 7})]
        )
    )
    same_run, new_run = JobHandle(resumed, 1, tracker), JobHandle(resumed, 0, tracker)
    same_run.sent_at, new_run.sent_at = first, second
    assert same_run.last_checkpoint == {"at": 7}
    assert new_run.last_checkpoint is None


@pytest.mark.parametrize("mode", ["buffered", "sync"])
def test_heartbeats_during_one_long_blocking_call(tracked: Any, mode: str) -> None:
    """A task inside one blocking call still beats, in either write mode, so the reaper
    (lost after 1.5 s here) never takes the live 4 s task for lost."""
    app = make_app()
    store = tracked(app, write_mode=mode, heartbeat_interval_s=0.3).store
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
        result = app.tasks[f"{app.main}.block"].delay(4)
        job = wait_for(
            lambda: (j := store.find_job(result.id)) and j.status is JobStatus.RUNNING and j,
            10,
            message="running",
        )
        beats = set()
        while not result.ready():
            assert reap(store, 1.5) == []
            beat = store.get_job(result.id).heartbeat_at
            if beat is not None:
                beats.add(beat)
            time.sleep(0.2)
        done = wait_for(lambda: final(store, result.id), 10, message="done")
    assert done.status is JobStatus.COMPLETED and job.started_at is not None
    assert len(beats) >= 5  # the heartbeat moved all along, not only at the start


def test_secrets_passed_by_position_or_inside_urls_are_redacted(tracked: Any) -> None:
    app = make_app()
    store = tracked(app).store
    stranger = Celery("stranger", broker="memory://")  # publishes by name only
    stranger.conf.broker_connection_retry_on_startup = True
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False):
        known = run(
            app,
            store,
            "login",
            "acme",
            "admin",
            "hunter2",
            "postgresql://admin:s3cret@db.internal/acme",
        )
        by_name = stranger.send_task(f"{app.main}.login", args=["acme", "root", "toor"])
        unknown = wait_for(lambda: final(store, by_name.id), 30, message="by name")
    assert known.input_data == {
        "args": ["acme", "admin", "[redacted]", "postgresql://admin:[redacted]@db.internal/acme"],
        "kwargs": {},
    }
    # Published by name from another app: the positions still match the task's names.
    assert unknown.input_data == {"args": ["acme", "root", "[redacted]"], "kwargs": {}}
    assert "hunter2" not in str(store.list_jobs()) and "s3cret" not in str(store.list_jobs())
