"""The store's alert statements on every backend: what each kind of rule finds, scopes
by glob, reported jobs never found again, stuck by unchanged progress, rates, and the
life of a delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobtrack.models import Batch, Event, JobStatus, JobUpdate, Scope
from jobtrack.store import Store

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)
EVERY = Scope()


def job(store: Store, job_id: str, status: JobStatus, **fields: object) -> None:
    update = JobUpdate.transition(job_id, status, **fields)
    store.write_batch(Batch([update], [Event.of(update)]))


def ids(jobs: list[object]) -> list[str]:
    return [j.id for j in jobs]  # type: ignore[attr-defined]


def test_each_kind_finds_its_jobs_in_scope_and_never_twice(store: Store) -> None:
    at = NOW - timedelta(minutes=5)
    job(store, "f1", JobStatus.FAILED, at=at, completed_at=at, job_type="import.csv")
    job(store, "f2", JobStatus.FAILED, at=at, completed_at=at, job_type="export")
    job(
        store,
        "f-old",
        JobStatus.FAILED,
        at=at,
        completed_at=NOW - timedelta(days=2),
        job_type="import.csv",
    )
    job(store, "l1", JobStatus.LOST, at=at, job_type="import.csv")
    job(
        store,
        "slow",
        JobStatus.RUNNING,
        at=at,
        started_at=NOW - timedelta(minutes=40),
        task_name="app.big",
    )
    long_ago = NOW - timedelta(days=2)  # still running: slow now, whatever the lookback
    job(store, "ancient", JobStatus.RUNNING, at=long_ago, started_at=long_ago, task_name="app.big")
    job(
        store,
        "fast",
        JobStatus.RUNNING,
        at=at,
        started_at=NOW - timedelta(minutes=1),
        task_name="app.big",
    )
    job(store, "waiting", JobStatus.PENDING, at=NOW - timedelta(minutes=30), queue="bulk")
    job(
        store,
        "later",
        JobStatus.PENDING,
        at=NOW - timedelta(minutes=30),
        queue="bulk",
        eta=NOW + timedelta(hours=1),
    )
    imports = Scope(job_types=("import*",))

    def find(rule: str, kind: str, scope: Scope = EVERY, **kw: object) -> list[str]:
        return ids(store.alerts.alert_candidates(rule, kind, scope, since=HOUR_AGO, **kw))  # type: ignore[arg-type]

    assert find("r1", "failed", imports) == ["f1"]  # f-old is before the lookback
    assert find("r1", "failed") == ["f1", "f2"]
    assert find("r2", "lost", imports) == ["l1"]
    old = NOW - timedelta(minutes=30)
    assert find("r3", "slow", Scope(task_names=("app.?ig",)), older_than=old) == ["ancient", "slow"]
    assert find(
        "r4", "queued", Scope(queues=("bulk",)), older_than=NOW - timedelta(minutes=10)
    ) == ["waiting"]
    store.alerts.record_alert(
        "r1", "firing", "1 failed", {"count": 1}, channels=["c"], job_ids=["f1"], now=NOW
    )
    assert find("r1", "failed") == ["f2"]  # reported once, never again
    assert find("r5", "failed") == ["f1", "f2"]  # another rule reports it too


def test_item_failure_rate_and_the_failure_rate(store: Store) -> None:
    done = NOW - timedelta(minutes=3)
    job(store, "bad", JobStatus.COMPLETED, at=done, completed_at=done)
    job(store, "good", JobStatus.COMPLETED, at=done, completed_at=done)
    store.set_counts("bad", processed=200, failed=30)  # 15 %
    store.set_counts("good", processed=200, failed=2)  # 1 %
    found = store.alerts.alert_candidates(
        "items", "item_failure_rate", Scope(), since=HOUR_AGO, threshold=5.0, min_items=100
    )
    assert ids(found) == ["bad"]
    for n in range(3):
        job(store, f"x{n}", JobStatus.FAILED, at=done, completed_at=done, job_type="sync")
    job(store, "y", JobStatus.COMPLETED, at=done, completed_at=done, job_type="sync")
    assert store.alerts.finished_counts(Scope(job_types=("sync",)), since=HOUR_AGO) == (1, 3)
    assert store.alerts.finished_counts(Scope(), since=NOW - timedelta(minutes=1)) == (0, 0)


def test_a_job_is_stuck_when_its_progress_stands_still(store: Store) -> None:
    job(
        store,
        "moving",
        JobStatus.RUNNING,
        at=NOW,
        started_at=NOW,
        heartbeat_at=NOW,
        progress_percent=10.0,
    )
    job(
        store,
        "still",
        JobStatus.RUNNING,
        at=NOW,
        started_at=NOW,
        heartbeat_at=NOW,
        progress_percent=10.0,
    )

    def stuck(at: datetime) -> list[str]:
        return ids(store.alerts.stuck_jobs("stuck", Scope(), now=at, after_s=600))

    assert stuck(NOW) == []  # first seen now
    later = NOW + timedelta(minutes=6)
    job(store, "moving", JobStatus.RUNNING, at=later, heartbeat_at=later, progress_percent=40.0)
    job(store, "still", JobStatus.RUNNING, at=later, heartbeat_at=later)  # beats, no progress
    assert stuck(later) == []
    much_later = NOW + timedelta(minutes=11)
    job(store, "moving", JobStatus.RUNNING, at=much_later, heartbeat_at=much_later)
    job(store, "still", JobStatus.RUNNING, at=much_later, heartbeat_at=much_later)
    assert stuck(much_later) == ["still"]  # 11 min unchanged; moving changed 5 min ago
    job(store, "still", JobStatus.COMPLETED, at=much_later, completed_at=much_later)
    assert stuck(much_later) == []


def test_a_delivery_is_pending_until_sent_retried_or_given_up(store: Store) -> None:
    alert_id = store.alerts.record_alert(
        "rate",
        "firing",
        "sync failing: 40%",
        {"count": 10},
        channels=["hook", "mail"],
        now=NOW,
        firing=True,
        value=40.0,
    )
    due = store.alerts.due_deliveries(now=NOW)
    assert [(d.channel, d.status, d.alert_id) for d in due] == [
        ("hook", "pending", alert_id),
        ("mail", "pending", alert_id),
    ]
    hook, mail = due
    store.alerts.delivery_sent(hook.id, now=NOW)
    store.alerts.delivery_failed(
        mail.id, "email mail: ConnectionRefusedError", next_attempt_at=NOW + timedelta(seconds=30)
    )
    assert store.alerts.due_deliveries(now=NOW) == []
    (again,) = store.alerts.due_deliveries(now=NOW + timedelta(seconds=31))
    assert (again.id, again.attempts, again.last_error) == (
        mail.id,
        1,
        "email mail: ConnectionRefusedError",
    )
    store.alerts.delivery_failed(mail.id, "still down", next_attempt_at=None)
    assert store.alerts.due_deliveries(now=NOW + timedelta(days=1)) == []
    shown = {d.channel: (d.status, d.attempts) for d in store.alerts.recent_deliveries()}
    assert shown == {"hook": ("sent", 1), "mail": ("failed", 2)}
    state = store.alerts.alert_states()["rate"]
    assert (state.firing, state.value, state.last_sent_at) == (True, 40.0, NOW)
    store.alerts.note_rule_value("rate", 3.0, now=NOW + timedelta(minutes=1))
    assert store.alerts.alert_states()["rate"].firing is True  # only a message changes it
    assert store.alerts.prune_alerts(before=NOW + timedelta(seconds=1)) == 1
    assert store.alerts.recent_deliveries() == []
