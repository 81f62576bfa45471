"""One contract for every store backend: SQLite and PostgreSQL run the same tests."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtrack.errors import DataRefused, JobNotFound, StoreError
from jobtrack.models import (
    Event,
    Item,
    ItemStatus,
    JobFilter,
    JobStatus,
    JobUpdate,
    Stop,
    merge_row,
    rows_in_order,
    state_seq,
    takes,
)
from jobtrack.store import Batch, Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def upd(job_id: str, status: JobStatus, attempt: int = 0, at: float = 0, **kw: Any) -> JobUpdate:
    moment = T0 + timedelta(seconds=at)
    return JobUpdate(
        id=job_id,
        status=status,
        state_seq=state_seq(status, attempt),
        created_at=moment,
        updated_at=moment,
        **kw,
    )


def write(store: Store, *updates: JobUpdate) -> None:
    for u in updates:
        store.write_batch(Batch([u]))


def test_roundtrip_keeps_types_and_utc(store: Store) -> None:
    write(
        store,
        upd(
            "a",
            JobStatus.RUNNING,
            at=1,
            worker="w1",
            pid=42,
            started_at=T0,
            input_data={"args": [1, "x"], "kwargs": {"k": None}},
            priority=3,
        ),
    )
    job = store.get_job("a")
    assert job.status is JobStatus.RUNNING and job.worker == "w1" and job.pid == 42
    assert job.started_at == T0 and job.started_at.tzinfo is not None
    assert job.input_data == {"args": [1, "x"], "kwargs": {"k": None}}
    assert job.created_at == T0 + timedelta(seconds=1)


def test_terminal_never_regresses(store: Store) -> None:
    write(
        store,
        upd("a", JobStatus.COMPLETED, at=5, output_data={"ok": 1}, completed_at=T0),
        upd("a", JobStatus.RUNNING, at=6, worker="late", progress_percent=10.0),
        upd("a", JobStatus.PENDING, at=0, queue="q"),
        upd("a", JobStatus.FAILED, at=7, error_type="WorkerLostError"),
    )
    job = store.get_job("a")
    assert job.status is JobStatus.COMPLETED
    assert job.output_data == {"ok": 1} and job.error_type is None
    assert job.worker is None and job.progress_percent is None
    assert job.queue == "q"  # descriptive fields still fill in
    assert job.created_at == T0  # the earliest creation time wins


def test_retry_ordering_by_attempt_not_arrival(store: Store) -> None:
    # The next attempt starts before the old attempt's "retrying" lands.
    write(
        store,
        upd("r", JobStatus.RUNNING, 0, at=1, retries=0),
        upd("r", JobStatus.RUNNING, 1, at=3, retries=1, worker="w2"),
        upd("r", JobStatus.RETRYING, 0, at=2, retries=1, error_type="ValueError"),
    )
    job = store.get_job("r")
    assert job.status is JobStatus.RUNNING and job.retries == 1 and job.worker == "w2"


def test_lost_goes_back_to_running_on_redelivery(store: Store) -> None:
    write(
        store,
        upd("l", JobStatus.RUNNING, 0),
        upd("l", JobStatus.LOST, 0),
        upd("l", JobStatus.RUNNING, 0, at=9, worker="w2"),
    )
    assert store.get_job("l").status is JobStatus.RUNNING
    assert store.get_job("l").worker == "w2"


def test_first_parent_id_is_kept(store: Store) -> None:
    write(
        store,
        upd("p", JobStatus.PENDING, parent_id="parent"),
        upd("p", JobStatus.RUNNING, 1, parent_id="p"),
    )
    assert store.get_job("p").parent_id == "parent"


def test_items_upsert_and_counters_follow(store: Store) -> None:
    write(store, upd("i", JobStatus.RUNNING))
    rows = [Item("i", f"k{n}", ItemStatus.SUCCESS, processed_at=T0) for n in range(5)]
    rows += [
        Item("i", "k1", ItemStatus.ERROR, processed_at=T0, message="bad", error_code="E1"),
        Item("i", "k9", ItemStatus.SKIPPED, processed_at=T0, after_state={"v": 1}),
    ]
    store.write_batch(Batch(items=rows))
    store.write_batch(Batch(items=rows))  # a replayed batch changes nothing
    job = store.get_job("i")
    assert (job.processed_items, job.failed_items, job.skipped_items) == (6, 1, 1)
    errors = store.list_items("i", status="error")
    assert [(e.key, e.message, e.error_code) for e in errors] == [("k1", "bad", "E1")]
    assert store.list_items("i", status="skipped")[0].after_state == {"v": 1}


def test_events_are_listed_in_order(store: Store) -> None:
    write(store, upd("e", JobStatus.RUNNING))
    store.write_batch(
        Batch(
            events=[
                Event("e", T0 + timedelta(seconds=2), JobStatus.RETRYING, 0, error_type="X"),
                Event("e", T0 + timedelta(seconds=1), JobStatus.RUNNING, 0, worker="w"),
            ]
        )
    )
    assert [e.status for e in store.list_events("e")] == [JobStatus.RUNNING, JobStatus.RETRYING]


def test_list_filters_search_and_stats(store: Store) -> None:
    write(
        store,
        upd(
            "1",
            JobStatus.COMPLETED,
            at=1,
            job_type="import",
            owner_id="u1",
            name="Import a.csv",
            duration_ms=100,
        ),
        upd(
            "2",
            JobStatus.FAILED,
            at=2,
            job_type="import",
            owner_id="u2",
            name="Import b.csv",
            error_message="disk 100% full",
        ),
        upd("3", JobStatus.RUNNING, at=3, job_type="export", owner_id="u1"),
    )

    def ids(limit: int = 50, **where: Any) -> list[str]:
        return [j.id for j in store.list_jobs(JobFilter.of(**where), limit=limit)]

    assert ids() == ["3", "2", "1"]
    assert ids(status="failed", job_type="import") == ["2"]
    assert ids(owner_id="u1", limit=1) == ["3"]
    assert ids(search="100%") == ["2"]  # % is literal
    assert ids(search="b.csv") == ["2"]
    assert ids(since=T0 + timedelta(seconds=2)) == ["3", "2"]
    stats = store.stats()
    assert stats.by_status == {"completed": 1, "failed": 1, "running": 1}
    assert stats.by_type["import"] == {"completed": 1, "failed": 1}
    assert stats.failure_rate == 0.5 and stats.duration_ms_max == 100
    for n in range(1, 101):
        write(store, upd(f"d{n}", JobStatus.COMPLETED, at=10, duration_ms=n * 10))
    spread = store.stats()
    assert (spread.duration_ms_p50, spread.duration_ms_p95, spread.duration_ms_p99) == (
        500,
        950,
        990,
    )  # 101 timings: 100 and 10, 20 … 1000
    with pytest.raises(ValueError):
        JobFilter.of(status="nonsense")


def test_counts_by_status_exact_filtered_and_capped(store: Store) -> None:
    store.write_batch(
        Batch(
            [upd(f"c{n}", JobStatus.COMPLETED, at=n, owner_id=f"u{n % 2}") for n in range(7)]
            + [upd("f", JobStatus.FAILED, owner_id="u1"), upd("r", JobStatus.RUNNING)]
        )
    )
    every = [s.value for s in JobStatus]
    assert store.count_by_status(every) == {"completed": 7, "failed": 1, "running": 1}
    u1 = JobFilter.of(owner_id="u1")
    assert store.count_by_status(every, where=u1) == {"completed": 3, "failed": 1}
    assert store.count_by_status(["completed", "pending"], where=u1) == {"completed": 3}
    # Capped: exact up to the cap, cap + 1 for "more", with the filters still applied.
    assert store.count_by_status(every, cap=3) == {"completed": 4, "failed": 1, "running": 1}
    assert store.count_by_status(every, cap=3, where=u1) == {"completed": 3, "failed": 1}
    nothing = JobFilter.of(search="nothing")
    assert store.count_by_status(["completed"], cap=10, where=nothing) == {}
    assert store.count_by_status([], cap=3) == {}


def test_get_missing_job_raises_lookup_error(store: Store) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get_job("nope")
    assert isinstance(info.value, LookupError)


def test_driver_errors_are_translated() -> None:
    broken = Store("postgresql://root@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(StoreError) as info:
        broken.get_job("x")
    assert info.value.__cause__ is not None
    broken.close()


# -- batching changes no outcome --------------------------------------------------

STATUSES = [
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.RETRYING,
    JobStatus.LOST,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.PAUSED,
]

transition = st.builds(
    lambda status, attempt, at, worker, pct, parent, run, given: upd(
        "h",
        status,
        attempt,
        at=at,
        worker=worker,
        progress_percent=pct,
        parent_id=parent,
        retries=attempt,
        heartbeat_at=T0 + timedelta(seconds=at),
        sent_at=None if run is None else sent(run),
        input_data=given,
    ),
    st.sampled_from(STATUSES),
    st.integers(0, 3),
    st.integers(0, 50),
    st.sampled_from([None, "w1", "w2"]),
    st.one_of(st.none(), st.floats(0, 100)),
    st.sampled_from([None, "pa", "pb"]),
    # The run each transition belongs to: none (an unstamped writer), or one of two.
    st.sampled_from([None, 1, 1, 2]),
    # The input, where the transition records it (a publisher's, or a worker's).
    st.sampled_from([None, None, {"args": [1]}, {"args": [2]}]),
)

COMPARED = (
    "status",
    "progress_percent",
    "parent_id",
    "retries",
    "created_at",
    "heartbeat_at",
    "sent_at",
    "input_data",
)


def expected_status(updates: list[JobUpdate]) -> JobStatus:
    """The state machine, written independently of the SQL: between two stamped runs
    the later one's transitions win and the earlier one's are ignored; within a run
    (or where either has no stamp) the first terminal state reached wins, otherwise the
    highest (attempt, rank), equal keys keeping the last."""
    best, run = updates[0], updates[0].sent_at
    for u in updates[1:]:
        if u.sent_at is not None and run is not None and u.sent_at != run:
            if u.sent_at > run:
                best, run = u, u.sent_at
            continue
        run = run or u.sent_at
        if best.status.is_terminal:
            continue
        if u.state_seq >= best.state_seq:
            best = u
    return best.status


def expected_input(updates: list[JobUpdate]) -> Any:
    """The input, written independently of the SQL: the first one recorded, of the run
    the job follows (a later run starts with none; an earlier run's is never taken)."""
    given, run = updates[0].input_data, updates[0].sent_at
    for u in updates[1:]:
        if u.sent_at is not None and run is not None and u.sent_at != run:
            if u.sent_at > run:
                given, run = u.input_data, u.sent_at
            continue
        run = run or u.sent_at
        given = given if given is not None else u.input_data
    return given


_EXAMPLES = itertools.count()


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(transition, min_size=1, max_size=8), st.integers(1, 8))
def test_batched_equals_one_by_one(store: Store, updates: list[JobUpdate], split: int) -> None:
    # Each example's two jobs have ids of their own (the test's database starts empty):
    # emptying every table per example took a third of the test's time.
    example = next(_EXAMPLES)
    by_one, batched_id = f"h{example}", f"b{example}"
    for u in updates:  # one transaction each, in arrival order
        store.write_batch(Batch([_copy(u, by_one)]))
    one_by_one = store.get_job(by_one)

    # The writer's way: merge in memory, write in (here: two) batches.
    first, rest = updates[:split], updates[split:]
    for chunk in (first, rest):
        if not chunk:
            continue
        merged = _copy(chunk[0], batched_id).row()
        for u in chunk[1:]:
            merge_row(merged, _copy(u, batched_id).row())
        store.write_batch(Batch([merged]))
    batched = store.get_job(batched_id)

    for name in COMPARED:
        assert getattr(batched, name) == getattr(one_by_one, name), name
    assert one_by_one.status is expected_status(updates)
    assert one_by_one.input_data == expected_input(updates)
    # Attempt columns (worker, pid, error …) are exact when a batch is in causal order
    # and not older than the row it meets — what one process produces; docs/design.md
    # explains the limit otherwise.
    stored_seq = max(u.state_seq for u in first)
    if len({u.sent_at for u in updates}) == 1 and (
        not rest
        or (
            takes(rest[0].state_seq, stored_seq)
            and all(a.state_seq <= b.state_seq for a, b in itertools.pairwise(rest))
        )
    ):
        assert batched.worker == one_by_one.worker


def _copy(u: JobUpdate, job_id: str) -> JobUpdate:
    return dataclasses.replace(u, id=job_id)


def test_mark_lost_only_takes_silent_running_jobs(store: Store) -> None:
    old, fresh = T0, T0 + timedelta(seconds=100)
    write(
        store,
        upd("silent", JobStatus.RUNNING, 1, heartbeat_at=old, retries=1, worker="w"),
        upd("alive", JobStatus.RUNNING, heartbeat_at=fresh),
        upd("done", JobStatus.COMPLETED, heartbeat_at=old),
        upd("waiting", JobStatus.PENDING),
    )
    lost = store.upkeep.mark_lost(heartbeat_before=T0 + timedelta(seconds=50))
    assert lost == ["silent"]
    job = store.get_job("silent")
    assert job.status is JobStatus.LOST and job.error_type == "WorkerLost"
    # The list row says what happened, not "queued 2 minutes ago" with no error.
    assert job.error_message == ("lost: no heartbeat from worker w since 2026-01-01T00:00:00+00:00")
    assert [e.status for e in store.list_events("silent")] == [JobStatus.LOST]
    assert store.list_events("silent")[0].error_message == job.error_message
    assert {j.id: j.status for j in store.list_jobs()}["done"] is JobStatus.COMPLETED
    # Redelivery (same attempt) takes it back to running; a second reap finds nothing new.
    write(store, upd("silent", JobStatus.RUNNING, 1, at=200, heartbeat_at=fresh, retries=1))
    assert store.get_job("silent").status is JobStatus.RUNNING
    assert store.upkeep.mark_lost(heartbeat_before=T0 + timedelta(seconds=50)) == []


def test_prune_removes_old_finished_jobs_with_items_and_events(store: Store) -> None:
    old, recent = T0, T0 + timedelta(days=60)
    for n in range(7):
        write(store, upd(f"old-{n}", JobStatus.COMPLETED, completed_at=old))
    write(
        store,
        upd("old-failed", JobStatus.FAILED, completed_at=old),
        upd("new", JobStatus.COMPLETED, at=1, completed_at=recent),
        upd("running", JobStatus.RUNNING),
    )
    store.write_batch(
        Batch(
            items=[Item("old-0", "k", ItemStatus.SUCCESS, processed_at=T0)],
            events=[Event("old-0", T0, JobStatus.COMPLETED, 0)],
        )
    )
    removed = store.prune(
        finished_before=T0 + timedelta(days=30), statuses=["completed"], batch_size=3
    )
    assert removed == 7
    assert sorted(j.id for j in store.list_jobs()) == ["new", "old-failed", "running"]
    assert store.list_items("old-0") == [] and store.list_events("old-0") == []
    assert store.prune(finished_before=T0 + timedelta(days=30), statuses=[]) == 0


def test_changes_are_announced_or_found_by_polling(store: Store) -> None:
    """PostgreSQL notifies listeners of the ids each committed write changed (a rolled
    back one announces nothing); every backend finds recent changes by polling."""
    listener = store.listen_changes()
    assert (listener is None) == (store.dialect != "postgresql")
    write(store, upd("a", JobStatus.RUNNING, at=1))
    store.write_batch(
        Batch(
            [upd("b", JobStatus.PENDING), upd("c,d", JobStatus.PENDING)],
            items=[Item(job_id="a", key="k", status=ItemStatus.SUCCESS, processed_at=T0)],
        )
    )
    with pytest.raises(StoreError):  # an item of a job that is not there: rolled back
        store.write_batch(
            Batch(
                [],
                items=[Item(job_id="ghost", key="k", status=ItemStatus.SUCCESS, processed_at=T0)],
            )
        )
    store.set_counts("b", total=5)
    if listener is not None:
        seen: set[str] = set()
        for _ in range(50):  # a bounded wait for the three notifications
            got = listener.wait(0.1)
            assert got is not None
            seen |= got
            if seen >= {"a", "b", "c,d"}:
                break
        assert seen == {"a", "b", "c,d"}
        listener.close()
    versions = dict(store.recent_changes(since=T0))
    assert set(versions) == {"a", "b", "c,d"}
    write(store, upd("a", JobStatus.COMPLETED, at=2))
    assert dict(store.recent_changes(since=T0))["a"] != versions["a"]
    assert store.recent_changes(since=T0 + timedelta(seconds=3)) == []


def test_cancel_request_is_kept_and_a_real_outcome_outranks_it(store: Store) -> None:
    write(
        store,
        upd("q", JobStatus.PENDING),
        upd("r", JobStatus.RUNNING, at=1),
        upd("d", JobStatus.COMPLETED, at=1),
    )
    assert store.requests.cancel("q", "revoked before it ran") is JobStatus.CANCELLED
    assert store.requests.cancel("r", "asked") is JobStatus.RUNNING
    with pytest.raises(JobNotFound):
        store.requests.cancel("nobody", "x")
    assert store.requests.open() == {"q": Stop.CANCEL, "r": Stop.CANCEL}
    queued = store.get_job("q")
    assert queued.cancel_requested_at is not None and queued.error_type == "Revoked"
    # A late "running" of the cancelled job cannot undo the cancel ...
    write(store, upd("q", JobStatus.RUNNING, at=5, worker="w"))
    assert store.get_job("q").status is JobStatus.CANCELLED
    # ... but if the task ran anyway, its real outcome replaces it, and the row keeps
    # the request's time (the cancel's reason is not left as the completed job's error).
    write(store, upd("q", JobStatus.COMPLETED, at=6, output_data={"ran": True}))
    job = store.get_job("q")
    assert job.status is JobStatus.COMPLETED and job.output_data == {"ran": True}
    assert job.cancel_requested_at == queued.cancel_requested_at
    assert job.error_type is None and job.error_message is None
    # A worker's own revoke report is final as usual; finished jobs leave the open set.
    write(store, upd("r", JobStatus.CANCELLED, at=7, error_type="Revoked"))
    assert store.requests.open() == {}
    # Cancelling a finished job changes nothing but the request time.
    assert store.requests.cancel("d", "late") is JobStatus.COMPLETED


def sent(seconds: float) -> datetime:
    """A run's stamp: when its message was published."""
    return T0 + timedelta(seconds=seconds)


def test_a_later_run_takes_a_finished_job_and_the_earlier_runs_late_writes_take_nothing(
    store: Store,
) -> None:
    first, second = sent(0), sent(10)
    write(
        store,
        upd("j", JobStatus.PENDING, sent_at=first, input_data={"args": [-1]}, task_name="t"),
        upd("j", JobStatus.RUNNING, at=1, sent_at=first, worker="w1", progress_percent=40.0),
    )
    assert store.requests.pause("j") is JobStatus.RUNNING  # asked, then it failed anyway
    write(
        store,
        upd(
            "j",
            JobStatus.FAILED,
            at=2,
            sent_at=first,
            worker="w1",
            completed_at=sent(2),
            duration_ms=1000,
            error_type="ValueError",
            error_message="negative",
            checkpoint={"at": 3},
        ),
    )
    store.actions.mark_retried([("j", "j-retry")])  # an operator retried it as a new job
    ended = store.get_job("j")
    assert ended.status is JobStatus.FAILED and ended.pause_requested_at is not None
    assert ended.retried_by == "j-retry"
    # Published again under its id: the new run's "pending" takes the finished job, and
    # nothing of the first run's outcome, progress or requests is left on the row.
    write(store, upd("j", JobStatus.PENDING, at=10, sent_at=second, input_data={"args": [21]}))
    job = store.get_job("j")
    assert job.status is JobStatus.PENDING and job.sent_at == second
    assert (job.error_type, job.error_message, job.completed_at, job.duration_ms) == (
        None,
        None,
        None,
        None,
    )
    assert (job.worker, job.progress_percent, job.checkpoint, job.pause_requested_at) == (
        None,
        None,
        None,
        None,
    )
    assert job.retried_by is None  # if this run fails, nobody has handled it yet
    assert job.input_data == {"args": [21]} and job.task_name == "t"
    assert job.created_at == T0  # the job's, not the run's
    # The first run's late writes (a publisher's late "pending", a spooled outcome
    # replayed) take nothing from the second run, not even its order key.
    write(
        store,
        upd("j", JobStatus.PENDING, sent_at=first, input_data={"args": [-1]}),
        upd("j", JobStatus.FAILED, at=2, sent_at=first, error_type="ValueError", retries=3),
    )
    job = store.get_job("j")
    assert job.status is JobStatus.PENDING and job.error_type is None and job.retries == 0
    assert job.input_data == {"args": [21]} and job.sent_at == second
    # The second run goes on as any run does, to its own outcome.
    write(
        store,
        upd("j", JobStatus.RUNNING, at=11, sent_at=second, worker="w2"),
        upd("j", JobStatus.PENDING, at=10, sent_at=second),  # its own late pending
        upd("j", JobStatus.COMPLETED, at=12, sent_at=second, output_data=42),
    )
    job = store.get_job("j")
    assert job.status is JobStatus.COMPLETED and job.output_data == 42 and job.worker == "w2"
    assert job.error_type is None and job.sent_at == second


def test_a_new_runs_input_is_its_own_whichever_of_its_rows_lands_first(store: Store) -> None:
    write(store, upd("n", JobStatus.COMPLETED, sent_at=sent(0), input_data={"args": [1]}))
    # The new run's worker got there before its publisher: its "running" has no input
    # (the publisher records it), and the earlier run's input must not stay.
    write(store, upd("n", JobStatus.RUNNING, at=5, sent_at=sent(4)))
    assert store.get_job("n").input_data is None
    # The earlier run's publisher, late too: its input does not fill the new run's.
    write(store, upd("n", JobStatus.PENDING, sent_at=sent(0), input_data={"args": [1]}))
    assert store.get_job("n").input_data is None
    write(store, upd("n", JobStatus.PENDING, at=4, sent_at=sent(4), input_data={"args": [2]}))
    job = store.get_job("n")
    assert job.status is JobStatus.RUNNING and job.input_data == {"args": [2]}


def test_a_job_revoked_then_sent_again_under_its_id_follows_the_new_run(store: Store) -> None:
    write(store, upd("v", JobStatus.PENDING, sent_at=sent(0)))
    assert store.requests.cancel("v", "revoked before it ran") is JobStatus.CANCELLED
    write(store, upd("v", JobStatus.PENDING, at=5, sent_at=sent(5)))
    job = store.get_job("v")
    assert job.status is JobStatus.PENDING
    assert (job.cancel_requested_at, job.error_type, job.error_message) == (None, None, None)
    assert store.requests.open() == {}  # the new run is not asked to stop
    write(
        store,
        upd("v", JobStatus.RUNNING, at=6, sent_at=sent(5)),
        upd("v", JobStatus.COMPLETED, at=7, sent_at=sent(5), output_data="ran"),
        # The first run's revoke, reported late by a worker's main process (no stamp):
        # a final state already reached is kept, as for any late report.
        upd("v", JobStatus.CANCELLED, at=8, error_type="Revoked"),
    )
    job = store.get_job("v")
    assert job.status is JobStatus.COMPLETED and job.output_data == "ran"


def test_a_row_without_a_stamp_is_never_taken_by_a_run(store: Store) -> None:
    # Written by a worker of an older version (or an operator): no stamp. The stamped
    # late "pending" of the publish it came from must not undo its outcome.
    write(store, upd("o", JobStatus.COMPLETED, at=5, output_data=1))
    write(store, upd("o", JobStatus.PENDING, sent_at=sent(1)))
    job = store.get_job("o")
    assert job.status is JobStatus.COMPLETED and job.output_data == 1
    assert job.sent_at == sent(1)  # known from now on: a later publish is a new run
    write(store, upd("o", JobStatus.PENDING, at=9, sent_at=sent(9)))
    assert store.get_job("o").status is JobStatus.PENDING
    # Rows without a stamp merge by the order key whatever run the row follows: an
    # operator's cancel of the new run's job, and a final outcome, hold as ever.
    assert store.requests.cancel("o", "not wanted") is JobStatus.CANCELLED
    write(store, upd("o", JobStatus.RUNNING, at=10, sent_at=sent(9)))
    assert store.get_job("o").status is JobStatus.CANCELLED


def test_rows_of_two_runs_in_one_batch_are_written_run_by_run(store: Store) -> None:
    """The writer's batch: a run ended and the next began between two flushes."""
    first = [
        upd("b", JobStatus.RUNNING, at=1, sent_at=sent(0), worker="w1"),
        upd("b", JobStatus.COMPLETED, at=2, sent_at=sent(0), output_data=1),
    ]
    second = [
        upd("b", JobStatus.PENDING, at=3, sent_at=sent(3)),
        upd("b", JobStatus.RUNNING, at=4, sent_at=sent(3), worker="w2"),
    ]
    rows = [u.row() for u in first + second]
    merged = rows[0]
    for row in rows[1:]:
        merge_row(merged, row)
    assert [r["status"] for r in rows_in_order(merged)] == ["completed", "running"]
    store.write_batch(Batch([merged]))
    job = store.get_job("b")
    assert job.status is JobStatus.RUNNING and job.worker == "w2" and job.output_data is None
    assert job.sent_at == sent(3)


def test_lease_has_one_holder_until_it_expires(store: Store) -> None:
    assert store.leases.take("reap", "a", 60)
    assert store.leases.take("reap", "a", 60)  # the holder renews
    assert not store.leases.take("reap", "b", 60)
    assert store.leases.take("other", "b", 60)
    assert store.leases.take("gone", "a", -1)  # already expired
    assert store.leases.take("gone", "b", 60)


def test_refused_data_is_told_apart_from_an_unreachable_database(store: Store) -> None:
    """An item of a job that is not there is refused data (DataRefused); after any
    failed transaction the next write works (no state survives the rollback)."""
    for _ in range(2):
        with pytest.raises(DataRefused):
            store.write_batch(
                Batch(
                    [upd("ok", JobStatus.PENDING)],
                    items=[Item("ghost", "k", ItemStatus.SUCCESS, processed_at=T0)],
                )
            )
        write(store, upd("after", JobStatus.RUNNING, at=1))
        assert store.get_job("after").status is JobStatus.RUNNING
    assert store.find_job("ok") is None  # the refused batch was rolled back whole
    unreachable = Store(
        "postgresql://nobody@127.0.0.1:9/none", connect_timeout_s=1, create_tables=False
    )
    with pytest.raises(StoreError) as caught:
        unreachable.write_batch(Batch([upd("x", JobStatus.PENDING)]))
    assert not isinstance(caught.value, DataRefused)
    unreachable.close()


@pytest.mark.parametrize("value", ["nul\x00inside", "lone \ud800 surrogate", "x" * 300])
def test_uncleaned_text_is_refused_data_on_postgresql(store: Store, value: str) -> None:
    """What the writer's cleaner guards against: a value the database (or the driver)
    cannot take fails the batch as refused data, never as an outage, on the COPY path
    too; the connection is fine for the next write."""
    bad = upd("bad", JobStatus.PENDING, owner_id=value)
    refused = {
        "postgresql": True,
        # SQLite stores NUL and long text as given
        "sqlite": "\ud800" in value,
        # MySQL in strict mode refuses text too long for its column; NUL is text there
        "mysql": "\x00" not in value,
        "mariadb": "\x00" not in value,
    }
    if refused[store.dialect]:
        with pytest.raises(DataRefused):
            store.write_batch(Batch([bad]))
    else:
        store.write_batch(Batch([bad]))
    write(store, upd("next", JobStatus.PENDING))
    assert store.get_job("next").status is JobStatus.PENDING


def test_values_the_columns_cannot_hold_are_refused_data(store: Store) -> None:
    """A number out of its column's range, or a document that is not JSON, written
    uncleaned: refused data where the database refuses it (MySQL and MariaDB in the
    strict mode the store sets, whatever error class the driver gives them: the range,
    and MariaDB's json_valid check), never an outage. PostgreSQL refuses the number (its
    JSON encoder writes NaN as null); SQLite holds both."""
    mysql = store.dialect in ("mysql", "mariadb")
    for bad, refused in (
        (upd("big", JobStatus.RUNNING, pid=2**40), store.dialect != "sqlite"),
        (upd("nan", JobStatus.RUNNING, metadata={"n": float("nan")}), mysql),
    ):
        if refused:
            with pytest.raises(DataRefused):
                store.write_batch(Batch([bad]))
        else:
            store.write_batch(Batch([bad]))
    write(store, upd("next", JobStatus.PENDING))
    assert store.get_job("next").status is JobStatus.PENDING


def notes(store: Store, job_id: str) -> list[str]:
    return [e.note for e in store.list_events(job_id) if e.note]


def test_pause_in_the_queue_and_resume_lifts_it(store: Store) -> None:
    write(store, upd("q", JobStatus.PENDING))
    assert store.requests.pause("q") is JobStatus.PAUSED
    job = store.get_job("q")
    assert job.status is JobStatus.PAUSED and job.pause_requested_at is not None
    assert store.requests.open() == {"q": Stop.PAUSE}
    assert store.requests.stops(["q", "other"]) == {"q": Stop.PAUSE}
    assert store.requests.pause("q") is JobStatus.PAUSED  # asking again changes nothing
    write(store, upd("q", JobStatus.PENDING, at=1))  # a late "pending" cannot undo it
    assert store.get_job("q").status is JobStatus.PAUSED
    done = store.requests.resume("q", can_publish=False)  # its message is still queued
    assert (done.action, done.status) == ("lifted", JobStatus.PENDING)
    job = store.get_job("q")
    assert job.status is JobStatus.PENDING and job.pause_requested_at is None
    assert store.requests.open() == {} and store.requests.stops(["q"]) == {}
    assert notes(store, "q") == ["paused in the queue", "resumed"]
    write(store, upd("q", JobStatus.RUNNING, at=2))
    assert store.get_job("q").status is JobStatus.RUNNING


def test_a_worker_paused_job_resumes_in_its_attempt_and_runs_again(store: Store) -> None:
    write(store, upd("r", JobStatus.RUNNING, 1, retries=1))
    assert store.requests.pause("r") is JobStatus.RUNNING  # asked; the task meets it later
    assert store.get_job("r").pause_requested_at is not None
    assert store.requests.stops(["r"]) == {"r": Stop.PAUSE}
    write(store, upd("r", JobStatus.RUNNING, 1, at=1, progress_percent=40.0))  # heartbeat
    write(store, upd("r", JobStatus.PAUSED, 1, at=2, retries=1))  # its worker stopped it
    assert store.get_job("r").status is JobStatus.PAUSED
    write(store, upd("r", JobStatus.RUNNING, 1, at=3))  # a late beat of that attempt
    assert store.get_job("r").status is JobStatus.PAUSED
    refused = store.requests.resume("r", can_publish=False)  # its input was not stored whole
    assert refused.action == "refused" and store.get_job("r").status is JobStatus.PAUSED
    done = store.requests.resume("r", can_publish=True)
    assert (done.action, done.attempt) == ("publish", 1)
    assert store.get_job("r").status is JobStatus.PENDING
    write(store, upd("r", JobStatus.RUNNING, 1, at=4))  # the resumed run, same attempt
    write(store, upd("r", JobStatus.COMPLETED, 1, at=5))
    job = store.get_job("r")
    assert job.status is JobStatus.COMPLETED and job.progress_percent == 40.0
    assert notes(store, "r") == ["pause requested", "resumed"]
    # Nothing to resume now; pausing a finished job changes nothing.
    assert store.requests.resume("r", can_publish=True).action == "none"
    assert store.requests.pause("r") is JobStatus.COMPLETED
    with pytest.raises(JobNotFound):
        store.requests.pause("nobody")
    with pytest.raises(JobNotFound):
        store.requests.resume("nobody", can_publish=True)


def test_pause_of_a_retrying_job_waits_for_its_next_attempt(store: Store) -> None:
    write(store, upd("t", JobStatus.RETRYING, 1, retries=2))
    assert store.requests.pause("t") is JobStatus.PAUSED
    write(store, upd("t", JobStatus.RETRYING, 1, at=1))  # a late retry report
    assert store.get_job("t").status is JobStatus.PAUSED
    # A worker that runs the next attempt anyway shows it running (until it stops).
    write(store, upd("t", JobStatus.RUNNING, 2, at=2, retries=2))
    assert store.get_job("t").status is JobStatus.RUNNING
    # Withdrawing a request not met yet leaves it running.
    assert store.requests.resume("t", can_publish=True).action == "withdrawn"
    assert store.get_job("t").pause_requested_at is None
    assert notes(store, "t") == ["paused in the queue", "pause request withdrawn"]


def test_a_paused_job_can_be_cancelled(store: Store) -> None:
    write(store, upd("p", JobStatus.RUNNING), upd("p", JobStatus.PAUSED, at=1))
    assert store.requests.cancel("p", "cancelled while paused") is JobStatus.CANCELLED
    # Still open until a worker reports: one that meets its message skips it.
    assert store.requests.open() == {"p": Stop.CANCEL}


def test_reopen_for_items_runs_the_failed_items_again(store: Store) -> None:
    write(
        store,
        upd("i", JobStatus.RUNNING),
        upd("i", JobStatus.FAILED, at=1, error_type="ItemsFailed", error_message="2 failed"),
    )
    rows = [
        Item("i", f"k{n}", ItemStatus.ERROR if n >= 3 else ItemStatus.SUCCESS, processed_at=T0)
        for n in range(5)
    ]
    store.write_batch(Batch(items=rows))
    assert store.requests.failed_item_keys("i") == ["k3", "k4"]
    assert store.requests.reopen_for_items("i") == (1, 2)
    job = store.get_job("i")
    assert (job.status, job.retries, job.error_type, job.completed_at) == (
        JobStatus.PENDING,
        1,
        None,
        None,
    )
    assert notes(store, "i") == ["retrying 2 failed items"]
    write(store, upd("i", JobStatus.RUNNING, 1, at=2, retries=1))
    store.write_batch(Batch(items=[Item("i", "k3", ItemStatus.SUCCESS, processed_at=T0)]))
    write(store, upd("i", JobStatus.COMPLETED, 1, at=3, retries=1))
    job = store.get_job("i")
    assert job.status is JobStatus.COMPLETED
    assert (job.processed_items, job.failed_items) == (5, 1)  # k3 replaced its failed row
    with pytest.raises(ValueError, match="only a finished job"):
        write(store, upd("run", JobStatus.RUNNING))
        store.requests.reopen_for_items("run")
    write(store, upd("clean", JobStatus.COMPLETED))
    with pytest.raises(ValueError, match="no failed items"):
        store.requests.reopen_for_items("clean")
    with pytest.raises(JobNotFound):
        store.requests.reopen_for_items("nobody")


def test_planned_items_count_as_pending_and_never_replace_an_outcome(store: Store) -> None:
    write(store, upd("p", JobStatus.RUNNING))
    planned = [Item("p", f"k{n}", ItemStatus.PENDING, processed_at=T0) for n in range(4)]
    store.write_batch(Batch(items=planned))
    assert store.get_job("p").processed_items == 0
    store.write_batch(Batch(items=[Item("p", "k0", ItemStatus.ERROR, processed_at=T0)]))
    store.write_batch(Batch(items=planned))  # planned again: k0 keeps its outcome
    job = store.get_job("p")
    assert (job.processed_items, job.failed_items) == (1, 1)
    assert [i.key for i in store.list_items("p", status="pending")] == ["k1", "k2", "k3"]


def test_ref_finds_jobs_exactly_or_by_prefix(store: Store) -> None:
    refs = ["repo:42@abc", "repo:42@def", "repo:420@abc", "REPO:42@x", "repo:4_@z", None]
    for n, ref in enumerate(refs):
        write(store, upd(f"r{n}", JobStatus.PENDING, at=n, ref=ref))

    def ids(ref: str) -> list[str]:
        return [j.id for j in store.list_jobs(JobFilter(ref=ref))]

    assert ids("repo:42@abc") == ["r0"]
    assert ids("repo:42@*") == ["r1", "r0"]  # newest first; not repo:420, not REPO:42
    assert ids("repo:4_@*") == ["r4"]  # LIKE's wildcards are plain characters here
    assert ids("repo:4*") == ["r4", "r2", "r1", "r0"]
    assert ids("repo:42") == [] and ids("*") == ["r4", "r3", "r2", "r1", "r0"]
    assert store.list_jobs(JobFilter(ref="repo:42@*"), limit=1)[0].ref == "repo:42@def"
