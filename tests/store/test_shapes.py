"""Store contract for workflows, per-job logs and trends, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtrack.errors import JobNotFound
from jobtrack.models import (
    Batch,
    Event,
    Item,
    ItemStatus,
    JobFilter,
    JobStatus,
    JobUpdate,
    LogLine,
)
from jobtrack.store import Store
from jobtrack.store.insights import percentile

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def job(
    job_id: str,
    status: JobStatus = JobStatus.COMPLETED,
    *,
    root: str | None = None,
    parent: str | None = None,
    group: str | None = None,
    at: datetime = T0,
    **fields: object,
) -> JobUpdate:
    return JobUpdate.transition(
        job_id,
        status,
        at=at,
        root_id=root or job_id,
        parent_id=parent,
        group_id=group,
        task_name="app.step",
        **fields,
    )


def test_a_workflow_is_gathered_through_roots_and_groups(store: Store) -> None:
    # A chord as Celery records it: each header task is its own root, tied only by the
    # group; the body's root and parent are the header task that finished last.
    header = [job(f"h{n}", group="g1") for n in range(3)]
    body = job("body", JobStatus.RUNNING, root="h2", parent="h2")
    after = job("after", JobStatus.PENDING, root="h2", parent="body")
    unrelated = job("other", group="g2")
    store.write_batch(Batch([*header, body, after, unrelated]))
    for start in ("after", "h0", "body"):
        found = store.workflows.jobs(start)
        assert sorted(j.id for j in found.jobs) == ["after", "body", "h0", "h1", "h2"]
        assert not found.truncated
    limited = store.workflows.jobs("after", limit=2)
    assert limited.truncated and len(limited.jobs) == 2
    assert limited.jobs[0].id == "after"  # the asked-for job is always kept
    with pytest.raises(JobNotFound):
        store.workflows.jobs("nope")


def test_owner_scope_and_rollups_and_the_workflow_filter(store: Store) -> None:
    store.write_batch(
        Batch(
            [
                job("root", JobStatus.RUNNING, owner_id="a"),
                job("c1", root="root", parent="root", owner_id="a"),
                job("c2", JobStatus.FAILED, root="root", parent="root", owner_id="b"),
                job("c3", JobStatus.RUNNING, root="root", parent="c1", owner_id="a"),
                job("alone"),
            ]
        )
    )
    assert sorted(j.id for j in store.workflows.jobs("c3", owner_id="a").jobs) == [
        "c1",
        "c3",
        "root",
    ]
    with pytest.raises(JobNotFound):
        store.workflows.jobs("c2", owner_id="a")
    # The root's workflow by Celery's root_id, the root included (as its tree counts).
    assert store.workflows.rollups(["root", "alone", "c1"]) == {
        "root": {"completed": 1, "failed": 1, "running": 2}
    }
    assert store.workflows.rollups(["root"], owner_id="a") == {
        "root": {"completed": 1, "running": 2}
    }
    listed = store.list_jobs(JobFilter(workflow="root"))
    assert sorted(j.id for j in listed) == ["c1", "c2", "c3", "root"]
    assert store.actions.count_matching(JobFilter(workflow="root", status=(JobStatus.FAILED,))) == 1


def test_log_lines_are_kept_in_order_paged_and_pruned_with_the_job(store: Store) -> None:
    store.write_batch(Batch([job("j1"), job("j2")]))
    lines = [LogLine("j1", T0 + timedelta(seconds=n), "INFO", "app", f"line {n}") for n in range(5)]
    store.write_batch(Batch(logs=[*lines[:3], LogLine("j2", T0, "ERROR", None, "other")]))
    store.write_batch(Batch(logs=lines[3:]))
    kept = store.logs.lines("j1")
    assert [line.message for line in kept] == [f"line {n}" for n in range(5)]
    assert [line.seq for line in kept] == sorted(line.seq for line in kept)
    assert all(line.at.tzinfo is not None for line in kept)
    after = store.logs.lines("j1", after=kept[1].seq, limit=2)
    assert [line.message for line in after] == ["line 2", "line 3"]
    assert [line.message for line in store.logs.lines("j1", limit=2, last=True)] == [
        "line 3",
        "line 4",
    ]
    assert store.logs.count("j1") == 5 and store.logs.count("j2") == 1
    assert store.prune(finished_before=T0 + timedelta(days=1), statuses=["completed"]) == 2
    assert store.logs.count("j1") == 0 and store.logs.count("j2") == 0


def test_trends_per_task_and_bucket_match_on_every_backend(store: Store) -> None:
    # Bucket 0 (12:00-13:00): a.task 4 completed (run 100..400 ms) and 1 failed; bucket 2:
    # 2 completed. b.task: one completed job in bucket 1. Waits: 1 s each for a.task.
    updates = [
        job(
            f"a{n}",
            at=T0,
            started_at=T0 + timedelta(seconds=1),
            completed_at=T0 + timedelta(minutes=10 + n),
            duration_ms=100 * (n + 1),
        )
        for n in range(4)
    ]
    updates.append(
        job("af", JobStatus.FAILED, completed_at=T0 + timedelta(minutes=30), duration_ms=900)
    )
    updates += [
        job(f"a2{n}", completed_at=T0 + timedelta(hours=2, minutes=n), duration_ms=50)
        for n in range(2)
    ]
    updates.append(job("b0", completed_at=T0 + timedelta(hours=1, minutes=5), duration_ms=7))
    updates.append(job("running", JobStatus.RUNNING))  # not finished: never counted
    updates.append(job("old", completed_at=T0 - timedelta(hours=1), duration_ms=1))
    for u in updates:
        u.task_name = "b.task" if u.id == "b0" else "a.task"
    store.write_batch(Batch(updates))
    found = store.insights.trends(since=T0, until=T0 + timedelta(hours=3), bucket_s=3600)
    by = {(t.key, t.start): t for t in found}
    first = by[("a.task", T0)]
    assert (first.completed, first.failed) == (4, 1)
    assert first.failure_rate == pytest.approx(0.2)
    assert first.run_p50_ms == pytest.approx(percentile([100, 200, 300, 400, 900], 0.5))
    assert first.run_p95_ms == pytest.approx(percentile([100, 200, 300, 400, 900], 0.95))
    assert first.wait_p50_ms == pytest.approx(1000.0)
    assert ("a.task", T0 + timedelta(hours=1)) not in by  # no job finished in it
    assert by[("a.task", T0 + timedelta(hours=2))].completed == 2
    total = by[("a.task", None)]
    assert (total.completed, total.failed) == (6, 1)
    assert by[("b.task", None)].completed == 1
    assert [t.key for t in found] == sorted(t.key for t in found)
    only_b = store.insights.trends(
        since=T0, until=T0 + timedelta(hours=3), bucket_s=3600, key="b.task"
    )
    assert {t.key for t in only_b} == {"b.task"}


def test_queue_wait_counts_from_the_attempts_publish_or_resume(store: Store) -> None:
    """Wait is from the last time the job was queued (its publish, its resume, a retry
    of its failed items) to the start that ran it: the time it sat paused, or finished
    before its items were retried, is not waiting. The operator moves are the store's
    own; the worker's writes are what a worker writes."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)

    def publish(job_id: str) -> None:
        queued = JobUpdate.transition(job_id, JobStatus.PENDING, at=hour_ago, task_name="w.task")
        store.write_batch(Batch([queued], [Event.of(queued)]))

    def run(job_id: str, attempt: int, start: datetime) -> None:
        running = JobUpdate.transition(
            job_id, JobStatus.RUNNING, attempt, at=start, started_at=start
        )
        end = start + timedelta(seconds=1)
        done = JobUpdate.transition(job_id, JobStatus.COMPLETED, attempt, at=end, completed_at=end)
        for update in (running, done):
            store.write_batch(Batch([update], [Event.of(update, attempt)]))

    def queued_again(job_id: str, note: str) -> datetime:
        (event,) = [e for e in store.list_events(job_id) if e.note == note]
        return event.at

    # Published an hour ago, started 1 s later.
    publish("plain")
    run("plain", 0, hour_ago + timedelta(seconds=1))
    # Published an hour ago, paused in the queue, resumed, started 2 s after the resume.
    publish("paused")
    assert store.requests.pause("paused") is JobStatus.PAUSED
    assert store.requests.resume("paused", can_publish=True).action == "lifted"
    run("paused", 0, queued_again("paused", "resumed") + timedelta(seconds=2))
    # Ran an hour ago with a failed item; its failed items retried now, started 3 s later.
    publish("items")
    run("items", 0, hour_ago + timedelta(seconds=1))
    store.write_batch(Batch(items=[Item("items", "k1", ItemStatus.ERROR, processed_at=hour_ago)]))
    attempt, _ = store.requests.reopen_for_items("items")
    run("items", attempt, queued_again("items", "retrying 1 failed items") + timedelta(seconds=3))
    found = store.insights.trends(
        since=hour_ago, until=datetime.now(UTC) + timedelta(minutes=1), bucket_s=7200
    )
    total = next(t for t in found if t.key == "w.task" and t.start is None)
    assert total.completed == 3
    assert total.wait_p50_ms == pytest.approx(2000.0, abs=1)
    assert total.wait_p95_ms == pytest.approx(percentile([1000.0, 2000.0, 3000.0], 0.95), abs=1)


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([10.0], 0.95) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([0.0, 100.0], 0.95) == pytest.approx(95.0)


def test_a_unique_start_of_an_id_names_its_job(store: Store) -> None:
    from jobtrack.errors import AmbiguousJobId

    ids = ["a74a6b49-1111", "a74a6b49-2222", "a74b0000-3333", "A74C0000-4444", "abc"]
    ids += [f"bbbb-{n}" for n in range(6)]
    store.write_batch(Batch([job(i, owner_id="o2" if i.endswith("2222") else "o1") for i in ids]))
    assert store.resolve_id("a74a6b49-1111") == "a74a6b49-1111"  # whole
    assert store.resolve_id("a74b") == "a74b0000-3333"  # the only one starting so
    assert store.resolve_id("abc") == "abc"  # a whole id, shorter than any prefix
    with pytest.raises(AmbiguousJobId, match="'a74a6b49' is the start of 2 job ids") as info:
        store.resolve_id("a74a6b49")
    assert info.value.matches == ["a74a6b49-1111", "a74a6b49-2222"]
    with pytest.raises(AmbiguousJobId, match="the start of 5 or more job ids") as info:
        store.resolve_id("bbbb")
    assert info.value.matches == [f"bbbb-{n}" for n in range(5)]
    assert store.resolve_id("a74a6b49", owner_id="o1") == "a74a6b49-1111"  # o2's unseen
    # Case counts; fewer than 4 characters is no start of an id.
    for missing in ("a74c", "zzzz", "a74", "a74a6b49-1111x", "A74A"):
        with pytest.raises(JobNotFound):
            store.resolve_id(missing)
    with pytest.raises(JobNotFound):
        store.resolve_id("a74a6b49-2222", owner_id="o1")
    assert store.resolve_id("A74C") == "A74C0000-4444"
