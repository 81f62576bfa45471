"""Lifecycle with an in-process Celery worker (celery.contrib.testing) and eager mode."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.models import JobStatus, JobUpdate, state_seq
from jobtrack.store import Batch, Store
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres


def make_app(**conf: Any) -> Celery:
    app = Celery(f"t{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.update(broker_connection_retry_on_startup=True, **conf)

    @app.task(name=f"{app.main}.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=f"{app.main}.report", bind=True)
    @jobtrack.track(job_type="report", name="Report for {customer}", owner="customer")
    def report(self: Any, customer: str) -> str:
        job = jobtrack.current_job()
        job.progress(50, stage="half")
        job.item("only", status="skipped", message="nothing to do")
        return customer

    @app.task(name=f"{app.main}.fail")
    def fail() -> None:
        raise RuntimeError("it broke")

    return app


def task(app: Celery, name: str) -> Any:
    return app.tasks[f"{app.main}.{name}"]


def finished(store: Store, job_id: str) -> Any:
    jobtrack.flush()
    job = store.find_job(job_id)
    return job if job is not None and job.status.is_terminal else None


def test_threads_pool_lifecycle(installed: Any) -> None:
    app = make_app()
    tracker = installed(app)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        ok = task(app, "report").delay("acme")
        bad = task(app, "fail").delay()
        assert ok.get(timeout=20) == "acme"
        job = wait_for(lambda: finished(tracker.store, ok.id), message="report done")
        failed = wait_for(lambda: finished(tracker.store, bad.id), message="fail done")
    assert job.status is JobStatus.COMPLETED and job.output_data == "acme"
    assert (job.job_type, job.name, job.owner_id) == ("report", "Report for acme", "acme")
    assert job.progress_stage == "half" and job.progress_percent == 100.0
    assert job.skipped_items == 1 and job.processed_items == 1
    assert failed.status is JobStatus.FAILED and failed.error_type == "RuntimeError"
    assert "it broke" in (failed.traceback or "")
    events = [(e.status, e.stage) for e in tracker.store.list_events(ok.id)]
    assert events == [
        (JobStatus.PENDING, None),
        (JobStatus.RUNNING, None),
        (JobStatus.RUNNING, "half"),  # progress(stage=...) entered a stage
        (JobStatus.COMPLETED, None),
    ]


class HeldLock(Exception):
    """Its arguments hold a lock: it cannot be pickled, nor can Exception(*args)."""


class LockLost(Exception):
    """Picklable arguments, an unpicklable attribute: Celery sends Exception(*args)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_an_exception_celery_cannot_pickle_is_recorded_as_raised(installed: Any) -> None:
    """Celery hands the failure signal an ``UnpickleableExceptionWrapper`` (or the
    nearest base class that pickles, ``Exception``) instead of what the task raised:
    the record names the real class and its message, as Celery's own log does."""
    app = make_app()

    @app.task(name=f"{app.main}.held")
    def held() -> None:
        raise HeldLock("cannot take the lock", threading.Lock())

    @app.task(name=f"{app.main}.lost")
    def lost() -> None:
        raise LockLost("the lock went away")

    tracker = installed(app)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        ids = held.delay().id, lost.delay().id
        jobs = [wait_for(lambda i=i: finished(tracker.store, i), message=i) for i in ids]
    assert [(j.status, j.error_type) for j in jobs] == [
        (JobStatus.FAILED, f"{__name__}.HeldLock"),
        (JobStatus.FAILED, f"{__name__}.LockLost"),
    ]
    assert "cannot take the lock" in (jobs[0].error_message or "")
    assert "_thread.lock" in (jobs[0].error_message or "")  # str() of the original
    assert jobs[1].error_message == "the lock went away"


def test_eager_mode_success_and_propagated_failure(installed: Any) -> None:
    app = make_app(task_always_eager=True, task_eager_propagates=True)
    tracker = installed(app, write_mode="sync")
    assert task(app, "add").delay(2, 3).get() == 5
    with pytest.raises(RuntimeError):
        task(app, "fail").delay()
    jobs = {j.task_name: j for j in tracker.store.list_jobs()}
    added = jobs[f"{app.main}.add"]
    assert added.status is JobStatus.COMPLETED and added.output_data == 5
    # postrun arrives with state=None here: never taken for success.
    assert jobs[f"{app.main}.fail"].status is JobStatus.FAILED


class _Warnings(logging.Handler):
    """The warnings a logger gives, kept on the logger itself: an earlier in-process
    worker of this module reconfigured logging (the root at ERROR, its own handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_an_owner_id_is_recorded_whole_or_not_at_all(installed: Any) -> None:
    """Cut to the column's 255 characters, or with a NUL mended, an owner id could become
    another owner's (a tenant's): the job is recorded with no owner instead, and a
    warning says why. One that fits is kept exactly; the task is never affected."""
    app = make_app(task_always_eager=True)
    tracker = installed(app, write_mode="sync")
    warnings, logger = _Warnings(), jobtrack.tracker.log  # the helpers' logger
    logger.addHandler(warnings)
    level = logger.level
    logger.setLevel(logging.WARNING)  # an earlier worker left the root at ERROR
    try:
        fits = "b" * 255
        given = ["a" * 300, "a" * 300 + "z", "acme\x00", "\ud800", fits]
        results = [task(app, "report").delay(owner) for owner in given]
        assert [r.get() for r in results] == given
        recorded = [tracker.store.get_job(r.id).owner_id for r in results]
        assert recorded == [None, None, None, None, fits]
        # The synchronous helper: the same rule, and a refused owner never clears a good one.
        jobtrack.upsert_job("helper-long-owner", owner_id="c" * 300)
        assert tracker.store.get_job("helper-long-owner").owner_id is None
        jobtrack.upsert_job("helper-kept", owner_id="acme")
        jobtrack.upsert_job("helper-kept", owner_id="c" * 300, name="renamed")
        kept = tracker.store.get_job("helper-kept")
        assert (kept.owner_id, kept.name) == ("acme", "renamed")
        jobtrack.upsert_job("helper-number", owner_id=42)  # type: ignore[arg-type]
        jobtrack.upsert_job("helper-star", owner_id="*")  # "every owner" is no one owner
        assert tracker.store.get_job("helper-number").owner_id == "42"
        assert tracker.store.get_job("helper-star").owner_id is None
    finally:
        logger.removeHandler(warnings)
        logger.setLevel(level)
    refused = [m for m in warnings.messages if m.startswith("owner id not recorded")]
    assert len(refused) == 7, warnings.messages


def test_kill_switch_records_nothing_and_tasks_still_work(
    installed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBTRACK_ENABLED", "0")
    app = make_app(task_always_eager=True)
    tracker = installed(app)
    before = tracker.store.count_jobs()
    assert task(app, "report").delay("x").get() == "x"  # current_job() is a no-op here
    jobtrack.upsert_job("kill-switch-job", name="ignored")
    assert tracker.store.count_jobs() == before


def test_only_decorated_tasks_when_track_all_is_off(installed: Any) -> None:
    app = make_app(task_always_eager=True)
    tracker = installed(app, track_all=False, write_mode="sync")
    plain = task(app, "add").delay(1, 1)
    decorated = task(app, "report").delay("beta")
    assert tracker.store.find_job(plain.id) is None
    assert tracker.store.get_job(decorated.id).status is JobStatus.COMPLETED


def test_unreachable_database_never_breaks_the_task(
    installed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(task_always_eager=True)
    tracker = jobtrack.install(
        app, "postgresql://root@127.0.0.1:1/nowhere", write_mode="sync", connect_timeout_s=1
    )
    with caplog.at_level(logging.WARNING, logger="jobtrack"):
        assert task(app, "report").delay("gamma").get() == "gamma"
        assert task(app, "report").delay("delta").get() == "delta"
    failures = [r for r in caplog.records if "unreachable" in r.getMessage()]
    # The outage is logged once, when it starts; later writes go straight to the
    # background retry, not to the dead database, so the task does not wait on it again.
    assert len(failures) == 1 and getattr(failures[0], "job_id", None)
    assert tracker.flush() is False  # still unreachable: the records are kept
    assert tracker.writer._buffer.pending() > 0  # type: ignore[attr-defined]


def test_helpers_outside_and_inside_tasks(installed: Any) -> None:
    app = make_app()
    tracker = installed(app)
    job_id = str(uuid.uuid4())
    # A web request creates the row first, answers 202 with the id, then dispatches.
    jobtrack.upsert_job(job_id, job_type="export", name="Export June", owner_id="u1")
    assert jobtrack.get_job(job_id).status is JobStatus.PENDING
    with start_worker(app, pool="solo", perform_ping_check=False):
        task(app, "add").apply_async((1, 2), task_id=job_id).get(timeout=20)
        job = wait_for(lambda: finished(tracker.store, job_id), message="export done")
    assert (job.job_type, job.name, job.owner_id) == ("export", "Export June", "u1")
    assert job.output_data == 3

    other = str(uuid.uuid4())
    jobtrack.upsert_job(other, job_type="sync")
    jobtrack.complete_job(other, {"rows": 10}, processed=10, failed=0, total=10)
    jobtrack.fail_job(other, ValueError("too late"))  # a finished job keeps its state
    done = jobtrack.get_job(other)
    assert done.status is JobStatus.COMPLETED and done.output_data == {"rows": 10}
    assert (done.processed_items, done.total_items) == (10, 10)
    third = str(uuid.uuid4())
    jobtrack.fail_job(third, ValueError("bad file"))
    assert jobtrack.get_job(third).error_type == "ValueError"
    with pytest.raises(jobtrack.JobNotFound):
        jobtrack.get_job(str(uuid.uuid4()))
    with pytest.raises(jobtrack.NoCurrentJob):
        jobtrack.current_job()


@pytest.mark.parametrize("mode", ["sync", "buffered"])
def test_sync_and_buffered_reach_the_same_rows(installed: Any, mode: str) -> None:
    app = make_app()
    tracker = installed(app, write_mode=mode)
    ids = []
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        for n in range(10):
            ids.append(task(app, "report").delay(f"c{n}").id)
            ids.append(task(app, "fail").delay().id)
        rows = wait_for(
            lambda: (
                all(finished(tracker.store, i) for i in ids)
                and [tracker.store.get_job(i) for i in ids]
            ),
            message="all finished",
        )
    summary = [(r.status, r.name, r.skipped_items, r.progress_percent, r.error_type) for r in rows]
    assert summary == [
        (JobStatus.COMPLETED, f"Report for c{n}", 1, 100.0, None)
        if k == 0
        else (JobStatus.FAILED, None, 0, None, "RuntimeError")
        for n in range(10)
        for k in range(2)
    ]


def test_argsrepr_is_honoured_and_huge_values_are_bounded(installed: Any) -> None:
    app = make_app()

    @app.task(name=f"{app.main}.huge", bind=True)
    def huge(self: Any, secret: str) -> str:
        job = jobtrack.current_job()
        job.progress(10, stage="s" * 10_000, message="m\x00" * 1_000_000)
        return "r" * (3 * 1024 * 1024)

    tracker = installed(app)
    with start_worker(app, pool="solo", perform_ping_check=False):
        hidden = task(app, "add").apply_async((1, 2), argsrepr="(<hidden>)", kwargsrepr="{}")
        big = huge.delay("hunter2")
        assert len(big.get(timeout=20)) == 3 * 1024 * 1024  # the task's result is whole
        hidden.get(timeout=20)
        wait_for(lambda: finished(tracker.store, big.id) and finished(tracker.store, hidden.id))
    assert tracker.store.get_job(hidden.id).input_data == {
        "argsrepr": "(<hidden>)",
        "kwargsrepr": "{}",
    }
    job = tracker.store.get_job(big.id)
    assert len(job.output_data) < 64 * 1024 and job.output_data.endswith("[truncated]")
    assert len(job.progress_stage or "") <= 255
    assert len(job.progress_message or "") <= 4000 and "\x00" not in job.progress_message


def test_reaper_republishes_lost_jobs_within_max_retries(installed: Any) -> None:
    app = make_app()
    tracker = installed(app, reap_republish=True, write_mode="sync")
    old = datetime.now(UTC) - timedelta(hours=1)

    def lost_row(job_id: str, retries: int) -> None:
        tracker.store.write_batch(
            Batch(
                [
                    JobUpdate(
                        id=job_id,
                        status=JobStatus.RUNNING,
                        state_seq=state_seq(JobStatus.RUNNING, retries),
                        created_at=old,
                        updated_at=old,
                        heartbeat_at=old,
                        retries=retries,
                        max_retries=3,
                        task_name=f"{app.main}.add",
                        queue="celery",
                        input_data={"args": [2, 3], "kwargs": {}},
                    )
                ]
            )
        )

    again, exhausted = str(uuid.uuid4()), str(uuid.uuid4())
    lost_row(again, 0)
    lost_row(exhausted, 3)
    with start_worker(app, pool="solo", perform_ping_check=False):
        assert app.tasks["jobtrack.reap"].apply(kwargs={"lost_after_s": 60}).get() == 2
        job = wait_for(lambda: finished(tracker.store, again), message="re-run done")
    assert job.status is JobStatus.COMPLETED and job.output_data == 5 and job.retries == 1
    trace = [(e.status.value, e.attempt) for e in tracker.store.list_events(again)]
    assert trace == [("lost", 0), ("running", 1), ("completed", 1)]
    failed = tracker.store.get_job(exhausted)
    assert failed.status is JobStatus.FAILED and "max_retries=3" in (failed.error_message or "")


def test_a_worker_that_requires_its_database_stops_at_once_saying_why(tmp_path: Any) -> None:
    """``celery worker`` on an unreachable tracking database: by default it warns and
    spools; with ``JOBTRACK_REQUIRE_DATABASE=1`` it stops before taking any task, exit
    status not 0, the reason on its output (a crash loop, not a silent spool)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "JT_BROKER": "memory://",
        "JOBTRACK_DATABASE_URL": "postgresql://root@127.0.0.1:1/nowhere",
        "JOBTRACK_CONNECT_TIMEOUT_S": "1",
        "JOBTRACK_REQUIRE_DATABASE": "1",
    }
    worker = ["celery", "-A", "tests.apps.worker_app", "worker", "-P", "solo", "-l", "WARNING"]
    done = subprocess.run(
        [sys.executable, "-m", *worker, "--without-gossip", "--without-mingle"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "require_database is set and the tracking database" in said
    assert "postgresql://root@127.0.0.1:1/nowhere cannot be used" in said
    assert "ready." not in said


def test_a_required_database_must_be_at_this_jobtracks_revision(tmp_path: Any) -> None:
    """Reachable but behind (create_tables off, no ``db upgrade`` run): the worker's
    first read stops it, naming the command; once upgraded it starts."""
    from alembic import command
    from sqlalchemy import create_engine

    from jobtrack.maintenance import WorkerUpkeep
    from jobtrack.migrate import alembic_config
    from jobtrack.settings import Settings
    from jobtrack.tracker import Tracker

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0010")
    engine.dispose()
    settings = Settings(database_url=url, create_tables=False, require_database=True)
    tracker = Tracker(settings)
    try:
        with pytest.raises(SystemExit, match=r"at revision 0010, .* run jobtrack db upgrade"):
            WorkerUpkeep(None, tracker).load_requests()
        tracker.store.ensure_schema()  # what jobtrack db upgrade does
        assert WorkerUpkeep(None, tracker).load_requests() is True
    finally:
        tracker.close()
        tracker.store.close()


def test_a_publish_that_fails_leaves_no_row(installed: Any) -> None:
    """The pending row is made before the message is serialized and written only once
    it is sent: an argument the serializer refuses raises to the caller, and no row
    claims a message that was never sent (the next publish of the thread is recorded)."""
    from kombu.exceptions import EncodeError

    app = make_app()
    tracker = installed(app, flush_interval_s=3600)
    add = task(app, "add")
    refused, sent = f"refused-{uuid.uuid4().hex[:6]}", f"sent-{uuid.uuid4().hex[:6]}"
    with pytest.raises(EncodeError):
        add.apply_async((object(), 1), task_id=refused)
    add.apply_async((1, 2), task_id=sent)
    assert tracker.flush()
    assert tracker.store.find_job(refused) is None
    job = tracker.store.get_job(sent)
    assert job.status is JobStatus.PENDING and job.input_data == {"args": [1, 2], "kwargs": {}}


def test_work_that_never_ran_because_upstream_failed_has_a_row(installed: Any) -> None:
    """A failed chain member leaves the rest of the chain unrun, a failed chord header
    member its body: Celery stores FAILURE for each; each has a row saying so."""
    from celery import chain, chord

    app = make_app()
    tracker = installed(app)
    add, fail = task(app, "add"), task(app, "fail")
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        flow = chain(add.si(1, 2), fail.si(), add.si(3, 4), add.si(5, 6)).apply_async()
        header = chord([add.si(1, 1), fail.si()], add.s(7))
        joined = header.apply_async()
        later = [flow.id, flow.parent.id]  # the last two members, never published
        for job_id in [*later, joined.id]:
            wait_for(lambda j=job_id: finished(tracker.store, j), message=f"{job_id} recorded")
        upstream = flow.parent.parent.id  # the member that failed
        assert finished(tracker.store, upstream).status is JobStatus.FAILED
    for job_id in later:
        job = tracker.store.get_job(job_id)
        assert job.status is JobStatus.FAILED and job.task_name == f"{app.main}.add"
        assert job.error_message is not None
        assert job.error_message.startswith(f"never ran: {upstream} failed (RuntimeError")
        assert job.started_at is None and job.parent_id == upstream
    body = tracker.store.get_job(joined.id)
    assert body.status is JobStatus.FAILED and body.error_type == "celery.exceptions.ChordError"
    assert body.error_message is not None and "never ran" in body.error_message


def test_a_task_run_inside_another_gives_the_outer_job_back(installed: Any) -> None:
    """``other.apply()`` inside a task runs that task in-process: its job is recorded,
    and the outer job is the current one again when it ends, and is recorded too."""
    app = make_app()
    tracker = installed(app)
    add = task(app, "add")

    @app.task(name=f"{app.main}.outer")
    def outer() -> int:
        inner = add.apply((2, 3)).get()
        jobtrack.current_job().progress(50, stage="after the inner task")
        return int(inner) * 10

    result = outer.apply()
    assert result.get() == 50
    job = wait_for(lambda: finished(tracker.store, result.id), message="outer done")
    assert job.status is JobStatus.COMPLETED and job.output_data == 50
    assert job.progress_stage == "after the inner task"
    inner_jobs = tracker.list_jobs(task_name=f"{app.main}.add")
    assert [(j.status, j.output_data) for j in inner_jobs] == [(JobStatus.COMPLETED, 5)]
