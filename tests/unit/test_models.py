"""The state order and the in-memory merge rules (the store's SQL has the same ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtrack.job import JobSpec, track
from jobtrack.models import (
    TERMINAL,
    JobStatus,
    JobUpdate,
    merge_row,
    paused_in_queue,
    queued_pause_seq,
    resumed_seq,
    rows_in_order,
    state_seq,
    takes,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def upd(status: JobStatus, attempt: int = 0, at: int = 0, **kw: object) -> JobUpdate:
    moment = T0 + timedelta(seconds=at)
    return JobUpdate(
        id="j",
        status=status,
        state_seq=state_seq(status, attempt),
        created_at=moment,
        updated_at=moment,
        **kw,
    )  # type: ignore[arg-type]


def test_terminal_states_outrank_everything() -> None:
    for terminal in TERMINAL:
        for other in set(JobStatus) - TERMINAL:
            assert state_seq(terminal, 0) > state_seq(other, 10_000)


def test_next_attempt_outranks_previous_retry() -> None:
    assert state_seq(JobStatus.RUNNING, 1) > state_seq(JobStatus.RETRYING, 0)
    assert state_seq(JobStatus.RUNNING, 3) > state_seq(JobStatus.LOST, 3)
    assert state_seq(JobStatus.LOST, 3) > state_seq(JobStatus.PENDING, 3)


def test_late_running_does_not_undo_completed() -> None:
    merged = upd(JobStatus.COMPLETED, output_data={"x": 1}, progress_percent=100.0)
    merged.merge(upd(JobStatus.RUNNING, at=5, worker="late", progress_percent=40.0))
    assert merged.status is JobStatus.COMPLETED
    assert merged.worker is None and merged.progress_percent == 100.0


def test_first_terminal_state_is_kept() -> None:
    merged = upd(JobStatus.COMPLETED)
    merged.merge(upd(JobStatus.FAILED, error_type="WorkerLostError"))
    assert merged.status is JobStatus.COMPLETED and merged.error_type is None


def test_first_parent_and_earliest_creation_are_kept() -> None:
    merged = upd(JobStatus.RUNNING, at=10, parent_id="p1")
    merged.merge(upd(JobStatus.PENDING, at=0, parent_id="self"))
    assert merged.parent_id == "p1"
    assert merged.created_at == T0
    assert merged.status is JobStatus.RUNNING


def test_retries_and_heartbeat_take_the_largest() -> None:
    merged = upd(JobStatus.RUNNING, 2, retries=2, heartbeat_at=T0 + timedelta(seconds=9))
    merged.merge(upd(JobStatus.RETRYING, 1, retries=1, heartbeat_at=T0))
    assert merged.retries == 2 and merged.status is JobStatus.RUNNING
    assert merged.heartbeat_at == T0 + timedelta(seconds=9)


def test_pause_order_keys_sit_between_the_attempts_they_wait_for() -> None:
    pending, retrying = state_seq(JobStatus.PENDING, 0), state_seq(JobStatus.RETRYING, 1)
    # Paused in the queue: above a late "pending" / "retrying", below the next "running".
    for seq, next_attempt in ((pending, 0), (retrying, 2)):
        queued = queued_pause_seq(seq)
        assert seq < queued < state_seq(JobStatus.RUNNING, next_attempt)
        assert paused_in_queue(queued)
    # Paused by its worker: ends the attempt, like "retrying"; a resume goes back to
    # "pending" of that attempt, so its "running" takes the row again.
    stopped = state_seq(JobStatus.PAUSED, 3)
    assert state_seq(JobStatus.RUNNING, 3) < stopped < state_seq(JobStatus.RUNNING, 4)
    assert not paused_in_queue(stopped)
    assert resumed_seq(stopped) == state_seq(JobStatus.PENDING, 3)
    assert takes(state_seq(JobStatus.RUNNING, 3), resumed_seq(stopped))


def test_fail_when_policies() -> None:
    anyone, every = JobSpec(fail_when="any_item_failed"), JobSpec(fail_when="all_items_failed")
    assert anyone.failed_by_items(10, 0) is None and every.failed_by_items(10, 9) is None
    assert anyone.failed_by_items(10, 1) == "1 of 10 items failed (fail_when='any_item_failed')"
    assert every.failed_by_items(3, 3) == "3 of 3 items failed (fail_when='all_items_failed')"
    assert JobSpec().failed_by_items(3, 3) is None
    with pytest.raises(ValueError, match="expected one of all_items_failed, any_item_failed"):
        track(fail_when="some_failed")  # type: ignore[arg-type]


def test_ref_is_formatted_from_the_arguments() -> None:
    def run(repo_id: int, sha: str, user: str = "u") -> None: ...

    spec = JobSpec(ref="repo:{repo_id}@{sha}", name="Build {sha}")
    assert spec.describe(run, (42,), {"sha": "9fceb02"})["ref"] == "repo:42@9fceb02"
    # A template the arguments cannot fill gives no ref (not a half-made one).
    assert spec.describe(run, (42,), {})["ref"] is None


def test_rows_of_different_runs_are_kept_apart_in_order() -> None:
    """Rows of two runs are never folded: merged, they are written run by run, oldest
    first, whichever side of a merge holds them (the writer gives a failed batch back
    in front of what it folded since, both possibly holding two runs)."""
    first, second, third = (T0 + timedelta(seconds=n) for n in (1, 2, 3))
    older = upd(JobStatus.RUNNING, sent_at=first).row()
    merge_row(older, upd(JobStatus.COMPLETED, at=1, sent_at=first, output_data=1).row())
    merge_row(older, upd(JobStatus.PENDING, at=2, sent_at=second).row())
    assert [r["status"] for r in rows_in_order(older)] == ["completed", "pending"]
    newer = upd(JobStatus.RUNNING, at=3, sent_at=second, worker="w").row()
    merge_row(newer, upd(JobStatus.PENDING, at=4, sent_at=third).row())
    merge_row(older, newer)
    assert [(r["status"], r["sent_at"]) for r in rows_in_order(older)] == [
        ("completed", first),
        ("running", second),  # the second run's two rows, folded
        ("pending", third),
    ]
    assert rows_in_order(older)[1]["worker"] == "w"
