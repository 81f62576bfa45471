"""An attempt that starts and ends between two flushes is one row and one trace entry.

Nobody could have read its ``running`` (it was never written), so the writer folds it
into the outcome's entry (``started_at``); reading the trace, through the store or the
``job_trace`` view, gives every transition back. Once a flush has written the
``running``, the outcome is an entry of its own. On SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import text

from jobtrack import writer as writer_module
from jobtrack.errors import StoreError
from jobtrack.job import JobHandle
from jobtrack.models import (
    TERMINAL_SEQ,
    Batch,
    Item,
    ItemStatus,
    JobStatus,
    JobUpdate,
    merge_row,
    rows_in_order,
    state_seq,
)
from jobtrack.payload import Cleaner
from jobtrack.settings import Settings
from jobtrack.spool import Spool
from jobtrack.store import Store
from jobtrack.writer import (
    _BURST_MAX,
    _FOLD_EVERY,
    _STEP_AGAIN_MAX_S,
    _STEP_AGAIN_MIN_S,
    _STEP_S,
    BufferedWriter,
    SyncWriter,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
C = TypeVar("C", bound=Cleaner)


def quiet_settings(store: Store, tmp_path: Path) -> Settings:
    """Settings whose writer's thread waits an hour, whatever is queued: each test's
    appending thread is the only one folding unless the test itself flushes."""
    return Settings(
        database_url=str(store.engine.url),
        spool_dir=str(tmp_path),
        flush_interval_s=3600.0,
        flush_max_jobs=1_000_000,
        flush_max_items=1_000_000,
    )


def writer_for(store: Store, tmp_path: Path) -> BufferedWriter:
    return BufferedWriter(store, quiet_settings(store, tmp_path))


def cleaning_with(kind: type[C], store: Store, tmp_path: Path) -> tuple[BufferedWriter, C]:
    """A writer (as :func:`writer_for`) whose cleaner is a ``kind``."""
    settings = quiet_settings(store, tmp_path)
    cleaner = kind.for_limits(
        message_chars=settings.max_message_chars,
        traceback_chars=settings.max_traceback_chars,
        name_chars=settings.max_name_chars,
        max_payload_bytes=settings.max_payload_bytes,
    )
    assert isinstance(cleaner, kind)
    return BufferedWriter(store, settings, cleaner), cleaner


def running(job_id: str, attempt: int, at: datetime) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": "running",
        "state_seq": state_seq(JobStatus.RUNNING, attempt),
        "created_at": at,
        "updated_at": at,
        "started_at": at,
        "retries": attempt,
        "worker": "w1",
    }


def outcome(job_id: str, attempt: int, at: datetime, status: JobStatus) -> dict[str, Any]:
    final = status is not JobStatus.RETRYING
    return {
        "id": job_id,
        "status": status.value,
        "state_seq": TERMINAL_SEQ if final else state_seq(status, attempt),
        "created_at": at,
        "updated_at": at,
        "completed_at": at if final else None,
        "retries": attempt if final else attempt + 1,
        "worker": "w1",
    }


def raw_events(store: Store, job_id: str) -> list[tuple[str, int, bool]]:
    with store.engine.connect() as conn:
        return [
            (r.status, r.attempt, r.started_at is not None)
            for r in conn.execute(
                text("SELECT * FROM job_events WHERE job_id = :j ORDER BY at, id"), {"j": job_id}
            )
        ]


def trace_view(store: Store, job_id: str) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        return [
            (r.status, r.attempt)
            for r in conn.execute(
                text("SELECT * FROM job_trace WHERE job_id = :j ORDER BY at, id, step"),
                {"j": job_id},
            )
        ]


def test_a_short_attempt_is_one_row_and_one_entry(store: Store, tmp_path: Path) -> None:
    writer = writer_for(store, tmp_path)
    job_id = f"fold-{uuid.uuid4().hex[:8]}"
    handle = JobHandle(job_id, 0, None)
    writer.update(
        JobUpdate.transition(job_id, JobStatus.PENDING, 0, at=T0 - timedelta(seconds=1)), trace=0
    )
    writer.started(handle, running(job_id, 0, T0))
    writer.ended(handle, outcome(job_id, 0, T0 + timedelta(seconds=1), JobStatus.COMPLETED))
    assert writer.flush()
    assert raw_events(store, job_id) == [("pending", 0, False), ("completed", 0, True)]
    expected = [("pending", 0), ("running", 0), ("completed", 0)]
    assert [(e.status.value, e.attempt) for e in store.list_events(job_id)] == expected
    assert trace_view(store, job_id) == expected
    job = store.get_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.started_at == T0 and job.worker == "w1"


def test_a_running_already_written_stays_an_entry_of_its_own(store: Store, tmp_path: Path) -> None:
    writer = writer_for(store, tmp_path)
    job_id = f"split-{uuid.uuid4().hex[:8]}"
    handle = JobHandle(job_id, 0, None)
    writer.started(handle, running(job_id, 0, T0))
    assert writer.flush()
    assert store.get_job(job_id).status is JobStatus.RUNNING  # seen: not foldable any more
    writer.ended(handle, outcome(job_id, 0, T0 + timedelta(seconds=1), JobStatus.FAILED))
    assert writer.flush()
    assert raw_events(store, job_id) == [("running", 0, False), ("failed", 0, False)]
    assert trace_view(store, job_id) == [("running", 0), ("failed", 0)]


def test_retried_attempts_fold_each_into_its_own_outcome(store: Store, tmp_path: Path) -> None:
    writer = writer_for(store, tmp_path)
    job_id = f"retry-{uuid.uuid4().hex[:8]}"
    first, second = JobHandle(job_id, 0, None), JobHandle(job_id, 1, None)
    writer.started(first, running(job_id, 0, T0))
    writer.ended(first, outcome(job_id, 0, T0 + timedelta(seconds=1), JobStatus.RETRYING))
    writer.started(second, running(job_id, 1, T0 + timedelta(seconds=2)))
    writer.ended(second, outcome(job_id, 1, T0 + timedelta(seconds=3), JobStatus.COMPLETED))
    assert writer.flush()
    assert raw_events(store, job_id) == [("retrying", 0, True), ("completed", 1, True)]
    assert trace_view(store, job_id) == [
        ("running", 0),
        ("retrying", 0),
        ("running", 1),
        ("completed", 1),
    ]
    job = store.get_job(job_id)
    assert (job.status, job.retries) == (JobStatus.COMPLETED, 1)


def test_an_attempt_still_running_at_a_flush_is_written_as_running(
    store: Store, tmp_path: Path
) -> None:
    """A flush while the attempt runs writes its row and its running entry (a heartbeat
    or progress can be read now), whatever else the batch holds."""
    writer = writer_for(store, tmp_path)
    job_id, other = f"long-{uuid.uuid4().hex[:8]}", f"short-{uuid.uuid4().hex[:8]}"
    handle, quick = JobHandle(job_id, 0, None), JobHandle(other, 0, None)
    writer.started(handle, running(job_id, 0, T0))
    writer.started(quick, running(other, 0, T0))
    writer.ended(quick, outcome(other, 0, T0 + timedelta(seconds=1), JobStatus.COMPLETED))
    assert writer.flush()
    assert raw_events(store, job_id) == [("running", 0, False)]
    assert raw_events(store, other) == [("completed", 0, True)]


def count_jobs(store: Store, prefix: str) -> int:
    with store.engine.connect() as conn:
        found = conn.execute(
            text("SELECT COUNT(*) FROM jobs WHERE id LIKE :p"), {"p": f"{prefix}%"}
        ).scalar_one()
    return int(found)


def test_the_thread_that_appends_folds_in_bursts_and_never_waits(
    store: Store, tmp_path: Path
) -> None:
    """Tasks back to back leave the writer's thread little of the interpreter: every
    few hundred job facts, the appending thread folds the queue itself, unless another
    thread is folding or writing (then it goes on at once)."""
    writer = writer_for(store, tmp_path)
    prefix = f"burst-{uuid.uuid4().hex[:8]}"

    def pend(n: int, tag: str) -> None:
        for i in range(n):
            writer.update(JobUpdate.transition(f"{prefix}-{tag}{i}", JobStatus.PENDING, 0, at=T0))

    pend(_FOLD_EVERY - 1, "a")
    assert len(writer._queue) == _FOLD_EVERY - 1  # not yet
    pend(1, "b")
    assert not writer._queue  # folded here, by the appending thread

    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # the writer's thread, folding or writing for a while
        with writer._flush_lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        pend(_FOLD_EVERY, "c")  # a burst is due at the last one, and cannot take the lock
        assert writer._unfolded == 0  # it was due (and went on: a wait folds after 10 s)
        assert len(writer._queue) == _FOLD_EVERY  # the writer is busy: left to it
    finally:
        release.set()
        holder.join(30)
    assert not holder.is_alive()
    assert writer.flush()
    assert count_jobs(store, prefix) == 2 * _FOLD_EVERY


class StepClock:
    """Time as the writer's module sees it: a clock the test moves (``now``, which a
    sleep moves too), and sleeps that are recorded and run ``during_sleep`` (if set) in
    their place."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.during_sleep: Callable[[], None] | None = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.during_sleep is not None:
            self.during_sleep()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_task_thread_steps_aside_while_the_writers_thread_waits_to_run(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks back to back let go of the interpreter only for moments, which a woken
    writer's thread never wins (a GIL convoy): once the writer's wait is over, the
    appending thread sleeps a moment for it. Never while the writer waits its interval;
    when the writer took no turn in the step (waiting for the database, say), the next
    step comes later, twice as late each time up to a bound, and the writer's own
    schedule is left as it is; after its next turn, at once again. Never for a closed
    writer, or for a thread that ended."""
    clock = StepClock()
    monkeypatch.setattr(writer_module, "time", clock)
    writer = writer_for(store, tmp_path)  # its thread waits an hour between flushes
    prefix = f"aside-{uuid.uuid4().hex[:8]}"
    count = iter(range(1_000_000))

    def pend() -> None:
        writer.update(JobUpdate.transition(f"{prefix}-{next(count)}", JobStatus.PENDING, 0, at=T0))

    pend()  # starts the writer's thread, which waits until an hour from now
    wait_for(lambda: writer._due == clock.now + 3600, "the writer's thread to wait")
    waits_until = writer._due
    for _ in range(20):
        pend()
    assert clock.slept == []  # its wait is not over: nobody steps aside

    clock.now = waits_until  # its wait is over (its thread, in fact, still waits)
    pend()
    assert clock.slept == [_STEP_S]
    assert writer._due == waits_until  # the writer's schedule is its own
    delay = _STEP_AGAIN_MIN_S
    for steps in range(2, 9):  # it took no turn: each step later than the last
        clock.now += delay - 1e-6
        pend()
        assert len(clock.slept) == steps - 1  # not yet
        clock.now += 2e-6
        pend()
        assert len(clock.slept) == steps
        delay = min(delay * 2, _STEP_AGAIN_MAX_S)
    assert delay == _STEP_AGAIN_MAX_S

    def writer_runs() -> None:  # the step aside, in which the writer's thread runs
        turns = writer._turns
        writer._wake.set()
        wait_for(lambda: writer._turns >= turns + 2, "the writer's thread to run and wait")

    clock.during_sleep = writer_runs
    clock.now += delay
    pend()
    assert len(clock.slept) == 9
    clock.during_sleep = None
    waits_until = writer._due
    assert waits_until > clock.now  # it flushed and waits its hour again
    pend()
    assert len(clock.slept) == 9
    clock.now = waits_until
    pend()  # its next wait over: at once, and the next step the least delay later
    assert len(clock.slept) == 10
    clock.now += _STEP_AGAIN_MIN_S
    pend()
    assert len(clock.slept) == 11

    thread = writer._thread
    assert thread is not None
    writer.close()
    wait_for(lambda: not thread.is_alive(), "the writer's thread to end")
    writer._due = 0.0  # as if a wake came after the end
    pend()
    assert len(clock.slept) == 11  # no thread left to step aside for
    assert writer.flush()
    assert count_jobs(store, prefix) == next(count)


def test_a_sync_writers_task_thread_never_steps_aside(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In sync mode the task's thread writes each transition itself: whatever the
    buffered writer's thread underneath does, it is not stepped aside for."""
    clock = StepClock()
    monkeypatch.setattr(writer_module, "time", clock)
    writer = SyncWriter(store, quiet_settings(store, tmp_path))
    prefix = f"sync-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        writer.update(JobUpdate.transition(f"{prefix}-{n}", JobStatus.PENDING, 0, at=T0))
        clock.now += 7200  # the thread's every wait long over
    assert clock.slept == []
    assert count_jobs(store, prefix) == 3  # each written before update() returned
    writer.close()


class Ending:
    """A wake event whose wait ends the thread that waits on it."""

    def wait(self, timeout: float | None = None) -> bool:
        raise SystemExit

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


def test_no_step_aside_for_a_writers_thread_that_ended(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A writer's thread that ended without the writer being closed (it never should:
    it is logged) has nobody to step aside for."""
    clock = StepClock()
    monkeypatch.setattr(writer_module, "time", clock)
    writer = writer_for(store, tmp_path)
    writer._wake = Ending()  # type: ignore[assignment]
    job_id = f"ended-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.PENDING, 0, at=T0))
    thread = writer._thread
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive()
    assert "tracking writer thread ended" in caplog.text
    writer._wake_now()  # a wake past the threshold, say
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    assert clock.slept == []
    assert writer.flush()
    assert count_jobs(store, job_id) == 1


def test_a_long_outage_never_ends_the_writers_thread(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a thousand failed tries (hours of an outage) the delay before the next one
    stays bounded, and the thread goes on trying (the interval doubled a thousand times
    does not fit in a float)."""
    writer = writer_for(store, tmp_path)
    job_id = f"outage-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.PENDING, 0, at=T0))
    wait_for(lambda: writer._due != float("inf"), "the writer's thread to wait")

    def unreachable(batch: Batch) -> None:
        raise StoreError("write batch", "the database is gone")

    monkeypatch.setattr(writer.store, "write_batch", unreachable)
    writer._failures = 2000
    turns = writer._turns
    writer._wake.set()
    wait_for(lambda: writer._turns >= turns + 2, "the writer's thread to try and wait")
    thread = writer._thread
    assert thread is not None
    thread.join(1.0)
    assert thread.is_alive()  # waiting for its next try
    assert writer._failures > 2000  # it tried (and may have tried again since)
    monkeypatch.undo()
    assert writer.flush()
    assert count_jobs(store, job_id) == 1


def test_a_burst_folds_a_bounded_number_of_facts(store: Store, tmp_path: Path) -> None:
    """Items and log lines do not make a burst due, but wait in the same queue: a burst
    takes at most a bounded number of facts, the writer's thread the rest."""
    writer = writer_for(store, tmp_path)
    job_id = f"bound-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    items = 2 * _BURST_MAX
    for i in range(items):
        writer.item(Item(job_id, f"k{i}", ItemStatus.SUCCESS, processed_at=T0))
    for _ in range(_FOLD_EVERY - 1):  # one running job's heartbeats, say
        writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    assert len(writer._queue) == 1 + items + _FOLD_EVERY - 1 - _BURST_MAX
    assert writer.flush()
    assert len(store.list_items(job_id, limit=items + 1)) == items


class Burst(Cleaner):
    """A cleaner that, at the first row it cleans, has a burst's worth of job facts
    queued: a fold that would start a burst inside itself."""

    writer: BufferedWriter | None = None

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        writer, self.writer = self.writer, None
        if writer is not None:
            for i in range(_FOLD_EVERY):
                writer.update(JobUpdate.transition(f"{row['id']}-{i}", JobStatus.PENDING, 0))
        return super().row(row)


def test_no_burst_starts_inside_a_fold(store: Store, tmp_path: Path) -> None:
    """The lock a fold holds is the writer's re-entrant one: a burst due inside a fold
    (on the folding thread) would take the queue from under it. It waits instead."""
    writer, burst = cleaning_with(Burst, store, tmp_path)
    job_id = f"inside-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    burst.writer = writer
    assert writer.flush()
    assert len(writer._queue) == _FOLD_EVERY  # what came during the fold waits
    assert writer.flush()
    assert count_jobs(store, f"{job_id}") == 1 + _FOLD_EVERY


class Echoing(Cleaner):
    """A cleaner that, for every item it cleans, has another item queued: a producer
    appending as fast as the fold takes."""

    writer: BufferedWriter | None = None

    def __call__(self, record: object) -> object:
        if isinstance(record, Item) and self.writer is not None:
            echo = Item(record.job_id, f"{record.key}+", ItemStatus.SUCCESS, processed_at=T0)
            self.writer.item(echo)
        return super().__call__(record)


def test_a_fold_takes_what_was_queued_when_it_began(store: Store, tmp_path: Path) -> None:
    """Facts arriving while a fold runs wait for the next one: otherwise a thread that
    appends as fast as the fold takes would keep the flush from ever starting."""
    writer, echoing = cleaning_with(Echoing, store, tmp_path)
    echoing.writer = writer
    job_id = f"echo-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, 0, at=T0))
    writer.item(Item(job_id, "k", ItemStatus.SUCCESS, processed_at=T0))
    assert writer.flush()  # returns: the echo of the item it wrote is queued, not chased
    assert writer._queue and {fact.key for fact in writer._queue} == {"k+"}
    assert [i.key for i in store.list_items(job_id)] == ["k"]


class Raising(Cleaner):
    """A cleaner that raises ``error`` at the next row it cleans."""

    error: BaseException | None = None

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return super().row(row)


def test_a_burst_keeps_its_errors_from_the_task_but_not_its_time_limit(
    store: Store, tmp_path: Path, caplog: Any
) -> None:
    """A fold that fails in a burst is logged and left to the writer's thread, never
    raised into the task; Celery's soft time limit, raised in the task's thread while a
    burst runs, is the task's and goes on to it."""
    writer, raising = cleaning_with(Raising, store, tmp_path)
    prefix = f"raising-{uuid.uuid4().hex[:8]}"

    def pend(n: int, tag: str) -> None:
        for i in range(n):
            writer.update(JobUpdate.transition(f"{prefix}-{tag}{i}", JobStatus.PENDING, 0, at=T0))

    raising.error = ValueError("a cleaner's bug")
    pend(_FOLD_EVERY, "a")  # the burst fails at its first fact: logged, not raised
    assert "tracking fold error" in caplog.text
    raising.error = SoftTimeLimitExceeded()
    with pytest.raises(SoftTimeLimitExceeded):
        pend(_FOLD_EVERY, "b")
    assert writer.flush()
    # Each failed burst lost the fact it was cleaning; the rest are written.
    assert count_jobs(store, prefix) == 2 * _FOLD_EVERY - 2


def test_two_runs_of_a_job_between_two_flushes_are_written_run_by_run(
    store: Store, tmp_path: Path
) -> None:
    """A job ended, was published again under its id and began again, all before one
    flush (a worker that took the new message at once): the rows of the two runs do
    not fold into one; the second run takes the job, the trace keeps both."""
    writer = writer_for(store, tmp_path)
    job_id = f"again-{uuid.uuid4().hex[:8]}"
    runs = (T0, T0 + timedelta(seconds=5))
    for n, stamp in enumerate(runs):
        handle = JobHandle(job_id, 0, None)
        handle.sent_at = stamp
        pending = JobUpdate.transition(job_id, JobStatus.PENDING, 0, at=stamp, sent_at=stamp)
        writer.update(pending, trace=0)
        # The run's own rows come without a stamp: the writer puts the handle's on them.
        writer.started(handle, running(job_id, 0, stamp + timedelta(seconds=1)))
        ended = JobStatus.FAILED if n == 0 else JobStatus.COMPLETED
        row = outcome(job_id, 0, stamp + timedelta(seconds=2), ended)
        writer.ended(handle, {**row, "output_data": n or None})
    assert writer.flush()
    job = store.get_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.sent_at == runs[1]
    assert job.output_data == 1 and job.started_at == runs[1] + timedelta(seconds=1)
    assert [(e.status.value, e.attempt) for e in store.list_events(job_id)] == [
        ("pending", 0),
        ("running", 0),
        ("failed", 0),
        ("pending", 0),
        ("running", 0),
        ("completed", 0),
    ]


def test_the_writer_stamps_a_runs_rows_with_its_handles_stamp(store: Store, tmp_path: Path) -> None:
    writer = writer_for(store, tmp_path)
    job_id = f"stamped-{uuid.uuid4().hex[:8]}"
    handle = JobHandle(job_id, 0, None)
    handle.sent_at = T0 - timedelta(seconds=1)
    writer.started(handle, running(job_id, 0, T0))
    assert writer.flush()
    assert store.get_job(job_id).sent_at == handle.sent_at
    writer.ended(handle, outcome(job_id, 0, T0 + timedelta(seconds=1), JobStatus.COMPLETED))
    assert writer._queue[-1]["sent_at"] == handle.sent_at  # the outcome's row too
    assert writer.flush()
    assert store.get_job(job_id).status is JobStatus.COMPLETED


def test_a_spooled_batch_keeps_the_runs_of_a_job_apart(store: Store, tmp_path: Path) -> None:
    job_id = f"spooled-{uuid.uuid4().hex[:8]}"
    first = outcome(job_id, 0, T0, JobStatus.FAILED) | {"sent_at": T0}
    later = T0 + timedelta(seconds=5)
    second = running(job_id, 0, later) | {"sent_at": later}
    merged = dict(first)
    merge_row(merged, second)
    path = Spool(tmp_path / "spool", str(store.engine.url)).write(Batch([merged]))
    read = Spool.read(path)
    assert [rows_in_order(r) for r in read.updates] == [rows_in_order(merged)]
    store.write_batch(read)
    job = store.get_job(job_id)
    assert job.status is JobStatus.RUNNING and job.sent_at == later and job.error_type is None


def test_an_earlier_runs_rows_are_cleaned_with_the_row_that_keeps_them(
    store: Store, tmp_path: Path
) -> None:
    """A spooled or refused batch is cleaned again before it is written: the rows of an
    earlier run it keeps are cleaned too."""
    writer = writer_for(store, tmp_path)
    job_id = f"dirty-{uuid.uuid4().hex[:8]}"
    first = outcome(job_id, 0, T0, JobStatus.FAILED) | {"sent_at": T0, "error_message": "a\x00b"}
    later = T0 + timedelta(seconds=5)
    merged = dict(first)
    merge_row(merged, running(job_id, 0, later) | {"sent_at": later})
    for clean in (writer.clean, writer.clean.deep):
        again = clean(
            {**merged, "_before": dict(merged["_before"])}  # a copy of each, to clean
        )
        assert "\x00" not in rows_in_order(again)[0]["error_message"]
