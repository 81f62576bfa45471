"""Workflow trees, per-job logs and time left, with real workers on PostgreSQL: an
in-process worker (chains, groups, chords; logs; a task of known pace) and a prefork
worker subprocess (what a pool child logs and prints, bounded across a retry)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.job import JobHandle, set_current
from jobtrack.logs import LogCapture, install_capture, remove_capture
from jobtrack.models import JobStatus, LogLine
from jobtrack.store import Store
from jobtrack.workflows import build_tree
from tests.conftest import wait_for
from tests.integration.conftest import job_when

pytestmark = pytest.mark.postgres

log = logging.getLogger("tests.shapes")


def make_app() -> Celery:
    app = Celery(f"s{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.update(broker_connection_retry_on_startup=True)
    name = app.main

    @app.task(name=f"{name}.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=f"{name}.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name=f"{name}.fails")
    def fails(x: int) -> int:
        raise ValueError(f"bad {x}")

    @app.task(name=f"{name}.talk")
    def talk(n: int, password: str, *, secret_key: str = "") -> int:
        log.debug("a debug line is never kept")
        log.info("starting %d with password=%s", n, password)
        logging.getLogger("tests.shapes.library").warning("key %s in use", secret_key)
        thread = threading.Thread(target=lambda: log.info("from another thread"))
        thread.start()
        thread.join()
        try:
            raise KeyError("missing")
        except KeyError:
            log.exception("it went wrong")
        for i in range(n):
            log.info("line %d", i)
        return n

    @app.task(name=f"{name}.paced")
    def paced(steps: int, delay_s: float) -> int:
        job = jobtrack.current_job()
        for n in range(steps):
            time.sleep(delay_s)
            job.progress(current=n + 1, total=steps)
        return steps

    return app


def finished(store: Store, *ids: str) -> bool:
    jobtrack.flush()
    found = [store.find_job(i) for i in ids]
    return all(j is not None and j.status.is_terminal for j in found)


def test_chains_groups_and_chords_make_one_tree(installed: Any) -> None:
    app = make_app()
    tracker = installed(app)
    t = app.tasks
    n = app.main
    with start_worker(app, pool="solo", perform_ping_check=False):
        steps = chain(t[f"{n}.add"].s(1, 2), t[f"{n}.add"].s(3), t[f"{n}.add"].s(4))
        chained = steps.apply_async()
        assert chained.get(timeout=20) == 10
        header = [t[f"{n}.add"].s(i, i) for i in range(4)] + [t[f"{n}.fails"].s(9)]
        chorded = chord(group(header), t[f"{n}.total"].s()).apply_async()
        with pytest.raises(Exception, match="bad 9"):
            chorded.get(timeout=20, propagate=True)
        summed = chord(group(t[f"{n}.add"].s(i, 1) for i in range(3)), t[f"{n}.total"].s())
        total = summed.apply_async()
        assert total.get(timeout=20) == 6
        last = chained.id
        wait_for(lambda: finished(tracker.store, last), message="chain done")
        header_ids = [r.id for r in chorded.parent.results]
        wait_for(lambda: finished(tracker.store, *header_ids), message="chord header done")

    store = tracker.store
    found = store.workflows.jobs(last)
    tree = build_tree(found.jobs, last)
    (first,) = tree.top  # the chain: each step under the one before
    assert first.job is not None and first.job.parent_id is None
    depth, node = 1, first
    while node.children:
        (node,) = node.children
        depth += 1
    assert depth == 3 and node.job is not None and node.job.id == last
    assert tree.summary() == "3 of 3 done"
    # The chord's header: its own roots, tied by the group; from any member, the tree
    # is the whole group, collapsed, with its summary.
    chord_tree = build_tree(store.workflows.jobs(header_ids[0]).jobs, header_ids[0])
    groups = [node for node in chord_tree.top if node.is_group]
    assert len(groups) == 1 and len(groups[0].children) == 5
    assert groups[0].summary() == "4 of 5 done, 1 failed"
    shown = chord_tree.to_json()
    # The body never ran (its header failed): it has a row, failed, saying so.
    body = store.get_job(chorded.id)
    assert body.status is JobStatus.FAILED and (body.error_message or "").startswith("never ran")
    assert shown["nodes"][0]["kind"] == "group" and shown["counts"]["failed"] == 2
    assert chord_tree.state() == "failed" and chord_tree.unhandled_failures() == 2
    # A chord's body (its header's group id, recorded under the member that finished
    # last) is drawn under the group, after its members: not under one of them.
    wait_for(lambda: finished(store, total.id), message="chord body done")
    summed_tree = build_tree(store.workflows.jobs(total.id).jobs, total.id)
    (members,) = [node for node in summed_tree.top if node.is_group]
    assert [n.job.id for n in members.then if n.job] == [total.id]
    assert all(not m.children for m in members.children)
    assert members.summary() == "3 of 3 done" and summed_tree.summary() == "4 of 4 done"
    assert summed_tree.state() == "completed" and not members.holds(total.id)
    assert members.children[0].job is not None and members.holds(members.children[0].job.id)
    assert summed_tree.to_json()["nodes"][0]["then"][0]["id"] == total.id
    # The chain's root rolls up its workflow, itself included, as its tree counts it.
    assert store.workflows.rollups([first.job.id]) == {first.job.id: {"completed": 3}}


def test_what_a_task_logs_is_kept_with_its_job(installed: Any) -> None:
    app = make_app()
    tracker = installed(app, job_log_lines=8)
    # A plain logger keeps the level it is given (here INFO; the root's is WARNING).
    log.setLevel(logging.INFO)
    with start_worker(app, pool="solo", perform_ping_check=False):
        result = app.tasks[f"{app.main}.talk"].delay(10, "s3cret-pw", secret_key="K-123456")
        assert result.get(timeout=20) == 10
        job_when(tracker.store, result.id, status=JobStatus.COMPLETED)
        log.info("after the job: not its line")
    lines = wait_for(
        lambda: (
            jobtrack.flush()
            and len(tracker.store.logs.lines(result.id)) == 9
            and tracker.store.logs.lines(result.id)
        ),
        message="log lines written",
    )
    text = [line.message or "" for line in lines]
    assert text[0] == "starting 10 with password=[redacted]"
    assert lines[0].level == "INFO" and lines[0].logger == "tests.shapes"
    assert text[1] == "key [redacted] in use" and lines[1].level == "WARNING"
    assert text[2].startswith("it went wrong\nTraceback") and "KeyError: 'missing'" in text[2]
    assert lines[2].level == "ERROR"
    assert text[3:8] == [f"line {i}" for i in range(5)]
    # Past job_log_lines (8): one line says how many were dropped.
    assert text[8] == "5 more log lines were dropped: a job keeps at most 8 (job_log_lines)"
    assert not any("debug" in t or "another thread" in t or "after the job" in t for t in text)
    assert [line.seq for line in lines] == sorted(line.seq for line in lines)
    log.setLevel(logging.NOTSET)


def test_capture_prints_what_was_printed_before() -> None:
    """Celery's task logger as a worker sets it up (its own handler, no propagation, the
    worker's level): lowered to the capture level, it still prints what it printed."""
    tasks = logging.getLogger("celery.task")
    printed: list[str] = []

    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            printed.append(record.getMessage())

    console = Console()
    saved = (tasks.level, tasks.propagate)
    root = logging.getLogger()
    root_level = root.level
    tasks.addHandler(console)
    tasks.setLevel(logging.WARNING)
    tasks.propagate = False
    task_log = logging.getLogger("celery.task.tests")
    kept: list[LogLine] = []
    try:
        capture = install_capture(kept.append, "INFO", 100)
        assert isinstance(capture, LogCapture)
        assert tasks.level == logging.INFO and console.level == logging.WARNING
        assert root.level == root_level  # the root and its handlers are never changed
        task_log.info("not printed: the console still shows warnings and up")
        task_log.warning("printed")
        assert printed == ["printed"] and kept == []  # no job runs here: nothing kept
        remove_capture()
        assert tasks.level == logging.WARNING and console.level == logging.NOTSET
        assert install_capture(kept.append, "off", 100) is None
        assert not any(isinstance(h, LogCapture) for h in root.handlers + tasks.handlers)
    finally:
        remove_capture()
        tasks.removeHandler(console)
        tasks.setLevel(saved[0])
        tasks.propagate = saved[1]


def test_time_left_follows_a_known_pace(installed: Any) -> None:
    app = make_app()
    tracker = installed(app, progress_events=False)
    steps, delay_s = 30, 0.1  # 3 s of work at an even pace
    with start_worker(app, pool="solo", perform_ping_check=False):
        result = app.tasks[f"{app.main}.paced"].delay(steps, delay_s)
        seen = wait_for(
            lambda: (
                jobtrack.flush()
                and (job := tracker.store.find_job(result.id)) is not None
                and job.status is JobStatus.RUNNING
                and job.eta_at is not None
                and 40 <= (job.progress_percent or 0) <= 70
                and job
            ),
            message="a running job with an estimate, half done",
            interval_s=0.02,
        )
        assert result.get(timeout=20) == steps
    done = job_when(tracker.store, result.id, status=JobStatus.COMPLETED)
    left = (done.completed_at - seen.updated_at).total_seconds()
    error = abs((seen.eta_at - done.completed_at).total_seconds())
    assert error <= 0.5 + 0.3 * left, (seen.eta_at, done.completed_at, left)


def test_no_estimate_without_a_total_or_before_enough_updates(installed: Any) -> None:
    app = make_app()
    tracker = installed(app, progress_events=False)

    @app.task(name=f"{app.main}.counting")
    def counting(n: int) -> int:
        job = jobtrack.current_job()
        for i in range(n):
            job.progress(current=i + 1)  # no total
            time.sleep(0.05)
        return n

    with start_worker(app, pool="solo", perform_ping_check=False):
        open_ended = counting.delay(20)
        assert open_ended.get(timeout=20) == 20
        first = app.tasks[f"{app.main}.paced"].delay(1, 0.0)
        assert first.get(timeout=20) == 1
    store = tracker.store
    assert job_when(store, open_ended.id, status=JobStatus.COMPLETED).eta_at is None
    assert job_when(store, first.id, status=JobStatus.COMPLETED).eta_at is None


@pytest.mark.slow
@pytest.mark.redis
def test_a_pool_child_keeps_its_lines_bounded_across_a_retry(
    publisher: Any, start_worker: Any
) -> None:
    app, store = publisher
    # One pool child: the retry runs where the first attempt's lines were buffered. At
    # -l WARNING the worker prints no INFO line; its tasks' INFO lines are kept anyway.
    worker = start_worker(
        concurrency=1,
        loglevel="WARNING",
        env={"JOBTRACK_JOB_LOG_LINES": "25", "JOBTRACK_FLUSH_INTERVAL_S": "0.1"},
    )
    result = app.send_task(
        "wa.chatty", args=[15, "tok-98765"], kwargs={"fail_times": 1}, queue=worker.queue
    )
    job_when(store, result.id, timeout_s=60, status=JobStatus.COMPLETED, retries=1)
    lines = wait_for(
        lambda: (found := store.logs.lines(result.id)) and len(found) >= 26 and found,
        message="both attempts' lines",
    )
    text = [line.message or "" for line in lines]
    # print() comes through Celery's stdout redirect; the token is masked.
    assert text[0] == "printed by attempt 0" and lines[0].logger == "celery.redirected"
    assert text[1] == "attempt 0 line 0 token=[redacted]"
    # Attempt 0 kept 16 lines; attempt 1 counts from them: 9 more, then the dropped line.
    assert len(lines) == 26
    assert text[16] == "printed by attempt 1"
    assert text[24] == "attempt 1 line 7 token=[redacted]"
    assert text[25].startswith("7 more log lines were dropped")
    assert not any("never kept" in t or "succeeded in" in t for t in text)
    assert "tok-98765" not in " ".join(text)
    printed = worker.log()
    assert "printed by attempt 0" in printed  # print() goes to the log, at WARNING
    assert "line 0 token" not in printed and "succeeded in" not in printed


def test_the_writers_own_lines_are_not_the_jobs() -> None:
    """A burst folds on a task's thread: what the writer logs there (its own trouble)
    is the worker's to show, not a line of whichever job runs."""
    kept: list[LogLine] = []
    capture = install_capture(kept.append, "INFO", 100)
    assert capture is not None
    # Both records reach the handler whatever level an earlier worker left on the root.
    loggers = [logging.getLogger("tests.shapes.job"), logging.getLogger("jobtrack.writer")]
    levels = [logger.level for logger in loggers]
    set_current(JobHandle("own-lines", 0, None))
    capture.start("own-lines")
    try:
        for logger in loggers:
            logger.setLevel(logging.INFO)
        loggers[0].warning("the job's line")
        loggers[1].warning("tracking fold error")
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        capture.finish("own-lines")
        set_current(None)
        remove_capture()
    assert [line.message for line in kept] == ["the job's line"]
