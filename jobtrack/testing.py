"""A pytest plugin for testing your own tracked tasks, with no database server.

pytest finds it by itself once jobtrack is installed (an entry point); or name it:
``pytest_plugins = ["jobtrack.testing"]``. Fixtures:

* ``jobs`` installs jobtrack on the test's Celery app (``jobtrack_app``) with a
  temporary SQLite database and synchronous writes, and gives a :class:`Jobs` to read
  back what the tasks recorded. Uninstalled after the test.
* ``jobtrack_app`` is the app to install on: Celery's own ``celery_app`` fixture by
  default (``celery.contrib.pytest``, or pytest-celery's). Override it to return your
  project's app.
* ``jobtrack_database_url`` is the temporary SQLite database (override it to use
  another).

It works with Celery's ``celery_worker`` (tasks run in a worker thread: use
:meth:`Jobs.wait` to wait for a job to finish) and with eager mode
(``task_always_eager``: the job is final when ``apply_async`` returns).

Reading back: ``jobs.get(task_id)`` (or ``jobs.wait(task_id)``) returns a
:class:`RecordedJob` (``jobs.all(**filters)`` a list of them) with the row, its items,
events, stages and checkpoint, and ``expect(...)``, which fails with the whole record
laid out when something differs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .celery import install, uninstall
from .errors import JobNotFound
from .models import Event, Item, Job, JobFilter, stage_spans
from .tracker import Tracker

__all__ = ["Jobs", "RecordedJob", "jobs", "jobtrack_app", "jobtrack_database_url"]

_UNSET: Any = object()


class RecordedJob:
    """What jobtrack recorded of one job, read when this was made."""

    def __init__(self, job: Job, items: list[Item], events: list[Event]) -> None:
        self.job = job
        self.items = items
        self.events = events

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> str:
        return self.job.status.value

    @property
    def progress(self) -> float | None:
        return self.job.progress_percent

    @property
    def checkpoint(self) -> Any:
        return self.job.checkpoint

    @property
    def stages(self) -> list[str]:
        """The stages the job went through, in order (of every attempt)."""
        return [span.name for span in stage_spans(self.events)]

    @property
    def transitions(self) -> list[str]:
        """The statuses of its trace, in order, without the stage changes."""
        return [e.status.value for e in self.events if e.stage is None and e.note is None]

    def item_counts(self) -> dict[str, int]:
        """How many items are in each status ("success", "error", "skipped", "pending")."""
        return dict(Counter(item.status.value for item in self.items))

    def keys(self, status: str | None = None) -> list[str]:
        """The item keys, in the order they were recorded; of one status if given."""
        return [i.key for i in self.items if status is None or i.status.value == status]

    def expect(
        self,
        *,
        status: str | None = None,
        items: dict[str, int] | None = None,
        progress: float | None = None,
        stages: Sequence[str] | None = None,
        checkpoint: Any = _UNSET,
        error: str | None = None,
        output: Any = _UNSET,
        **fields: Any,
    ) -> RecordedJob:
        """Check what was recorded; an AssertionError lists every difference and the
        whole record. ``items`` counts by status (``{"success": 3, "error": 1}``, exact);
        ``error`` is a piece of the error message; other keywords name row fields
        (``job_type="import"``, ``retries=1``). Returns itself, to chain."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        wrong: list[str] = []

        def check(what: str, expected: Any, actual: Any) -> None:
            if expected != actual:
                wrong.append(f"{what}: expected {expected!r}, recorded {actual!r}")

        if status is not None:
            check("status", status, self.status)
        if items is not None:
            check("items", dict(items), self.item_counts())
        if progress is not None:
            check("progress", progress, self.progress)
        if stages is not None:
            check("stages", list(stages), self.stages)
        if checkpoint is not _UNSET:
            check("checkpoint", checkpoint, self.checkpoint)
        if output is not _UNSET:
            check("output", output, self.job.output_data)
        if error is not None and error not in (self.job.error_message or ""):
            wrong.append(
                f"error: expected a message with {error!r}, recorded {self.job.error_message!r}"
            )
        for name, expected in fields.items():
            if not hasattr(self.job, name):
                raise TypeError(f"expect(): a job has no field {name!r}")
            check(name, expected, getattr(self.job, name))
        if wrong:
            raise AssertionError(
                f"job {self.job.id} ({self.job.task_name}) is not as expected:\n  "
                + "\n  ".join(wrong)
                + "\n"
                + self.describe()
            )
        return self

    def describe(self) -> str:
        """The record, laid out for a failure message."""
        job = self.job
        lines = [
            f"recorded: status={self.status} progress={self.progress} retries={job.retries}",
            f"  items: {self.item_counts() or 'none'}"
            + (f"; failed: {self.keys('error')[:10]}" if job.failed_items else ""),
            f"  trace: {' -> '.join(self.transitions) or 'none'}",
        ]
        if self.stages:
            lines.append(f"  stages: {self.stages}")
        if job.checkpoint is not None:
            lines.append(f"  checkpoint: {job.checkpoint!r}")
        if job.error_message or job.error_type:
            lines.append(f"  error: {job.error_type}: {job.error_message}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<RecordedJob {self.job.id} {self.status}>"


class Jobs:
    """Reads back what the tasks of a test recorded (the ``jobs`` fixture)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def get(self, task_id: str) -> RecordedJob:
        """The job of ``task_id`` as recorded now; fails if there is none."""
        __tracebackhide__ = True
        self.tracker.flush()
        try:
            job = self.tracker.store.get_job(task_id)
        except JobNotFound:
            raise AssertionError(f"jobtrack recorded no job with id {task_id!r}") from None
        return self._recorded(job)

    def _recorded(self, job: Job) -> RecordedJob:
        store = self.tracker.store
        return RecordedJob(job, store.list_items(job.id, limit=100_000), store.list_events(job.id))

    def wait(
        self, task_id: str, *, timeout_s: float = 10.0, status: str | None = None
    ) -> RecordedJob:
        """The job of ``task_id`` once it is finished (or in ``status``), polling until
        ``timeout_s``; then fails with what was recorded."""
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout_s
        while True:
            self.tracker.flush()
            job = self.tracker.store.find_job(task_id)
            if job is not None and (
                job.status.value == status if status is not None else job.status.is_terminal
            ):
                return self.get(task_id)
            if time.monotonic() > deadline:
                seen = self.get(task_id).describe() if job is not None else "no job yet"
                wanted = status or "finished"
                raise AssertionError(f"job {task_id} not {wanted} after {timeout_s} s\n{seen}")
            time.sleep(0.02)

    def all(self, **filters: Any) -> list[RecordedJob]:
        """Every job recorded in this test, newest first (``JobFilter`` keywords), each
        a :class:`RecordedJob` as :meth:`get` gives."""
        self.tracker.flush()
        found = self.tracker.store.list_jobs(JobFilter.of(**filters), limit=10_000)
        return [self._recorded(job) for job in found]


@pytest.fixture
def jobtrack_database_url(tmp_path: Path) -> str:
    """A SQLite database of this test's own."""
    return f"sqlite:///{tmp_path / 'jobtrack.db'}"


@pytest.fixture
def jobtrack_app(request: pytest.FixtureRequest) -> Any:
    """The Celery app to track: Celery's ``celery_app`` fixture unless you override this."""
    return request.getfixturevalue("celery_app")


@pytest.fixture
def jobs(jobtrack_app: Any, jobtrack_database_url: str) -> Iterator[Jobs]:
    """jobtrack installed on ``jobtrack_app`` for this test (SQLite, synchronous writes,
    no reaping by the worker); a :class:`Jobs` to read back what was recorded."""
    tracker = install(
        jobtrack_app,
        jobtrack_database_url,
        write_mode="sync",
        reap_in_workers=False,
        flush_interval_s=0.05,
    )
    try:
        yield Jobs(tracker)
    finally:
        uninstall()
        tracker.close()
        tracker.store.close()
