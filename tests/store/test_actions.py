"""The store's operator-action statements on every backend: the audit trail, the
snapshot of a bulk action's jobs, settling targets once, deleting jobs, replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtrack.errors import JobNotFound
from jobtrack.models import (
    ActionTarget,
    Batch,
    Event,
    Item,
    ItemStatus,
    JobFilter,
    JobStatus,
    JobUpdate,
)
from jobtrack.store import Store
from jobtrack.store.actions import TargetState


def job(store: Store, job_id: str, status: JobStatus, **fields: object) -> None:
    update = JobUpdate.transition(job_id, status, **fields)
    store.write_batch(Batch([update], [Event.of(update)]))


def test_a_snapshot_covers_what_matched_then_and_nothing_later(store: Store) -> None:
    for n in range(5):
        job(store, f"f{n}", JobStatus.FAILED, job_type="import", owner_id=f"o{n % 2}")
    job(store, "c1", JobStatus.COMPLETED, job_type="import")
    action_id = store.actions.record_action(
        "retry",
        actor="ops",
        role="operator",
        where=JobFilter.of(status="failed"),
        bulk=True,
        status="pending",
    )
    assert store.actions.snapshot_targets(action_id, JobFilter.of(status="failed")) == 5
    job(store, "f-late", JobStatus.FAILED, job_type="import")  # arrives after the snapshot
    assert (
        store.actions.snapshot_targets(action_id, JobFilter.of(status="failed")) == 5
    )  # once only
    open_ids = [w.job_id for w in store.actions.open_targets(action_id, limit=100)]
    assert open_ids == sorted(f"f{n}" for n in range(5))
    assert store.actions.get_action(action_id).status == "running"
    assert store.actions.get_action(action_id).matched == 5


def test_an_owner_bound_action_covers_only_its_owner(store: Store) -> None:
    for n in range(4):
        job(store, f"f{n}", JobStatus.FAILED, owner_id=f"o{n % 2}")
    mine = store.actions.record_action(
        "retry", actor="t", role="operator", owner_id="o1", bulk=True, status="pending"
    )
    assert store.actions.snapshot_targets(mine, JobFilter.of(status="failed")) == 2
    assert {w.job.owner_id for w in store.actions.open_targets(mine, limit=10) if w.job} == {"o1"}
    other = store.actions.record_action(
        "retry", actor="t", role="operator", owner_id="o1", bulk=True, status="pending"
    )
    assert store.actions.snapshot_targets(other, JobFilter.of(owner_id="o0")) == 0  # not its owner


def test_targets_settle_once_and_the_counts_follow(store: Store) -> None:
    for n in range(4):
        job(store, f"f{n}", JobStatus.FAILED)
    action_id = store.actions.record_action(
        "retry", actor="ops", role="operator", bulk=True, status="pending"
    )
    store.actions.snapshot_targets(action_id, JobFilter.of(status="failed"))
    store.actions.mark_sending(action_id, [("f0", "new0"), ("f1", "new1")])
    sending = {
        w.job_id: (w.state, w.sends, w.result_id)
        for w in store.actions.open_targets(action_id, limit=9)
    }
    assert sending["f0"] == (TargetState.SENDING, 1, "new0")
    assert sending["f2"] == (TargetState.PENDING, 0, None)
    outcomes = [
        ("f0", TargetState.DONE, None),
        ("f1", TargetState.DONE, None),
        ("f2", TargetState.SKIPPED, "its input was not stored whole"),
    ]
    first = store.actions.settle_targets(action_id, outcomes)
    again = store.actions.settle_targets(action_id, outcomes)  # a resumed run settling the same
    assert (first.done, first.skipped, first.failed) == (2, 1, 0)
    assert (again.done, again.skipped, again.failed) == (2, 1, 0)
    assert [w.job_id for w in store.actions.open_targets(action_id, limit=9)] == ["f3"]
    audit = store.actions.actions_for_job("f2")
    assert [(a.id, t.state, t.outcome) for a, t in audit] == [
        (action_id, "skipped", "its input was not stored whole")
    ]


def test_delete_takes_finished_jobs_with_items_and_events_and_keeps_the_audit(
    store: Store,
) -> None:
    job(store, "done", JobStatus.COMPLETED)
    job(store, "busy", JobStatus.RUNNING)
    at = datetime.now(UTC)
    store.write_batch(Batch(items=[Item("done", "row-1", ItemStatus.ERROR, processed_at=at)]))
    action_id = store.actions.record_action(
        "delete",
        actor="cli",
        role="operator",
        where=JobFilter(ids=("done",)),
        targets=[ActionTarget(0, "done", TargetState.DONE, outcome="deleted")],
    )
    assert store.actions.delete_jobs(["done", "busy", "missing"]) == ["done"]
    assert store.find_job("done") is None
    assert store.list_items("done") == [] and store.list_events("done") == []
    assert store.get_job("busy").status is JobStatus.RUNNING  # a worker may still write it
    assert [a.id for a, _ in store.actions.actions_for_job("done")] == [action_id]  # outlives it


def test_the_audit_trail_lists_newest_first_by_owner_and_job_and_is_pruned(
    store: Store,
) -> None:
    job(store, "j1", JobStatus.FAILED)
    first = store.actions.record_action(
        "retry",
        actor="ops",
        role="operator",
        where=JobFilter(ids=("j1",)),
        targets=[ActionTarget(0, "j1", TargetState.DONE, result_id="j2")],
    )
    second = store.actions.record_action("cancel", actor="tenant", role="operator", owner_id="o1")
    assert [a.id for a in store.actions.list_actions()] == [second, first]
    assert [a.id for a in store.actions.list_actions(owner_id="o1")] == [second]
    assert [a.id for a in store.actions.list_actions(job_id="j1")] == [first]
    assert [a.id for a in store.actions.list_actions(before_id=second)] == [first]
    entry = store.actions.get_action(first)
    assert (entry.actor, entry.filter, entry.done, entry.matched) == ("ops", {"ids": ["j1"]}, 1, 1)
    assert store.actions.prune_actions(before=datetime.now(UTC) - timedelta(days=1)) == 0
    assert store.actions.prune_actions(before=datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert store.actions.list_actions() == [] and store.actions.actions_for_job("j1") == []
    with pytest.raises(JobNotFound):
        store.actions.get_action(first)


def test_count_matching_and_replays(store: Store) -> None:
    job(store, "orig", JobStatus.FAILED, job_type="t")
    job(store, "again", JobStatus.PENDING, job_type="t", replay_of="orig")
    assert store.actions.count_matching(JobFilter.of(job_type="t")) == 2
    assert store.actions.count_matching(JobFilter.of(job_type="t", status="failed")) == 1
    assert store.actions.replays_of("orig") == ["again"]
    assert store.get_job("again").replay_of == "orig"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"colour": "red"}, "unknown filter field(s): colour"),
        ({"status": ""}, "filter field 'status' is empty"),
        ({"job_type": []}, "filter field 'job_type' is empty"),
        ({"status": "exploded"}, "exploded"),
        ({"since": "yesterday"}, "yesterday"),
        ({"job_type": 3}, "takes a string"),
    ],
)
def test_a_filter_from_json_names_what_is_wrong(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        JobFilter.from_json(data)


def test_a_filter_round_trips_through_json() -> None:
    where = JobFilter.of(
        status=["failed", "lost"],
        job_type="import",
        since=datetime(2026, 1, 2, tzinfo=UTC),
        ids=["a", "b"],
        ref="repo:1@*",
    )
    assert JobFilter.from_json(where.to_json()) == where
    assert JobFilter().is_empty() and not where.is_empty()
