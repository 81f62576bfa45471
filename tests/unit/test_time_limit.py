"""Celery's soft time limit is raised into the task's thread wherever that thread is,
inside tracking's own code too: a handle call, a log line being kept, a step aside for
the writer. Tracking keeps its own errors from the task; this one it lets go on to the
task, which may be written to clean up when it comes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from jobtrack.job import JobHandle, set_current
from jobtrack.logs import install_capture, remove_capture
from jobtrack.settings import Settings
from jobtrack.tracker import Tracker

ERRORS = [
    pytest.param(SoftTimeLimitExceeded(), True, id="soft-time-limit"),
    pytest.param(ValueError("a bug in tracking"), False, id="tracking-error"),
]


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    """A tracker of its own database and spool folder: what a test leaves unwritten is
    written at its end, or spooled where no other test looks."""
    tracker = Tracker(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            spool_dir=str(tmp_path / "spool"),
            progress_events=False,
        )
    )
    yield tracker
    tracker.close()


def raising(error: BaseException) -> Callable[..., None]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    return fail


def outcome(call: Callable[[], None]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # what reached the task
        return exc
    return None


@pytest.mark.parametrize(("error", "goes_on"), ERRORS)
def test_a_handle_call_lets_the_tasks_time_limit_go_on(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, error: BaseException, goes_on: bool
) -> None:
    handle = JobHandle("limited", 0, tracker, stages=("fetch", "load"))
    monkeypatch.setattr(tracker.writer, "event", raising(error))
    monkeypatch.setattr(tracker.writer, "item", raising(error))
    monkeypatch.setattr(tracker.store, "write_batch", raising(error))
    calls = {
        "a new stage (its trace entry)": lambda: handle.progress(stage="fetch"),
        "an item": lambda: handle.item("row-1", "success"),
        "planned items": lambda: handle.plan_items(["row-2", "row-3"]),
        "a checkpoint (its commit)": lambda: handle.checkpoint({"offset": 10}),
    }
    for what, call in calls.items():
        reached = outcome(call)
        if goes_on:
            assert reached is error, what
        else:
            assert reached is None, what  # logged, kept from the task
    # The checkpoint its commit could not make is kept for the next flush, either way.
    assert tracker.writer.pending() >= 1


@pytest.mark.parametrize(("error", "goes_on"), ERRORS)
def test_a_kept_log_line_lets_the_tasks_time_limit_go_on(
    error: BaseException, goes_on: bool
) -> None:
    capture = install_capture(raising(error), "INFO", 100)
    assert capture is not None
    handle = JobHandle("logging", 0, None)
    capture.start(handle.job_id)
    set_current(handle)
    # The record as the task's logger hands it to the capture (whatever levels the
    # process's logging has been given meanwhile).
    record = logging.LogRecord("billing.import", logging.WARNING, __file__, 1, "row 7", None, None)
    try:
        reached = outcome(lambda: capture.handle(record))
    finally:
        set_current(None)
        capture.finish(handle.job_id)
        remove_capture()
    assert reached is (error if goes_on else None)
