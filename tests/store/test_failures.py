"""Handled failures and failure groups, on every backend: ``retried_by``, the ``handled``
filter, the groups' counts, times and hours, and the group key PostgreSQL's trigger
keeps against the one Python works out (SQLite's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobtrack.models import JobFilter, JobStatus, JobUpdate, error_group_of, masked_error
from jobtrack.store import Batch, Store

NOW = datetime.now(UTC).replace(microsecond=0)


def failed(job_id: str, message: str, *, hours_ago: float, **fields: Any) -> JobUpdate:
    at = NOW - timedelta(hours=hours_ago)
    values = {"task_name": "billing.charge", "error_type": "GatewayError", **fields}
    return JobUpdate.transition(
        job_id, JobStatus.FAILED, at=at, completed_at=at, error_message=message, **values
    )


def test_failures_group_by_task_type_and_masked_message(store: Store) -> None:
    store.write_batch(
        Batch(
            [
                failed("a1", "card 4242 declined for 'acme' (req 9f86d081884c7d65)", hours_ago=30),
                failed("a2", "card 17 declined for 'zeta' (req 0a1b2c3d4e5f6a7b)", hours_ago=2.5),
                failed("a3", "card 5 declined for 'acme' (req 1111111111111111)", hours_ago=0.5),
                failed("b1", "card 4242 declined for 'acme'", hours_ago=1, error_type="Timeout"),
                failed("c1", "card 4242 declined for 'acme'", hours_ago=1, task_name="other"),
                JobUpdate.transition("ok", JobStatus.COMPLETED, task_name="billing.charge"),
            ]
        )
    )
    groups = store.failures.groups(now=NOW)
    by_example = {g.example_id: g for g in groups}
    assert sorted(by_example) == ["a3", "b1", "c1"]
    card = by_example["a3"]
    assert card.message == "card <n> declined for '…' (req <id>)"
    assert (
        masked_error("user42 on db-7 after 30s: e5b6b-0") == "<id> on db-<n> after <id>: <id>-<n>"
    )
    assert (card.task_name, card.error_type, card.count) == ("billing.charge", "GatewayError", 3)
    assert card.first_seen == NOW - timedelta(hours=30)
    assert card.last_seen == NOW - timedelta(minutes=30)
    same = "card 1 declined for 'b' (req 2222222222222222)"
    assert card.key == error_group_of("billing.charge", "GatewayError", same)
    # The last 24 hours an hour each, oldest first: 2.5 h ago and 0.5 h ago (30 h: out).
    assert len(card.hourly) == 24 and sum(card.hourly) == 2
    assert card.hourly[-1] == 1 and card.hourly[-3] == 1
    assert groups[0].example_id == "a3"  # the most recently seen first
    members = store.list_jobs(JobFilter(error_group=card.key), limit=10)
    assert sorted(j.id for j in members) == ["a1", "a2", "a3"]
    assert {j.error_group for j in members} == {card.key}
    only = store.failures.groups(JobFilter(task_name="other"), now=NOW)
    assert [g.example_id for g in only] == ["c1"]


def test_a_retried_failure_is_handled(store: Store) -> None:
    store.write_batch(
        Batch([failed(f"f{n}", f"timed out after {n}s", hours_ago=n / 10) for n in range(1, 4)])
    )
    store.write_batch(Batch([JobUpdate.transition("f1-again", JobStatus.PENDING)]))
    store.actions.mark_retried([("f1", "f1-again")])
    assert store.get_job("f1").retried_by == "f1-again"
    unhandled = store.list_jobs(JobFilter(status=(JobStatus.FAILED,), handled=False))
    assert sorted(j.id for j in unhandled) == ["f2", "f3"]
    assert [j.id for j in store.list_jobs(JobFilter(handled=True))] == ["f1"]
    counts = store.count_by_status(["failed"], cap=100, where=JobFilter(handled=False))
    assert counts == {"failed": 2}
    [group] = store.failures.groups(now=NOW)
    assert group.count == 2 and group.example_id == "f2"
    assert JobFilter.from_json(JobFilter(handled=False).to_json()) == JobFilter(handled=False)
    with pytest.raises(ValueError, match="true or false"):
        JobFilter.from_json({"handled": "no"})


def test_a_changed_error_changes_the_group(store: Store) -> None:
    store.write_batch(Batch([failed("e1", "disk 1 full", hours_ago=1)]))
    first = store.get_job("e1").error_group
    store.upsert_job(
        failed("e1", "quota of user 'x' exceeded", hours_ago=1), overwrite=("error_message",)
    )
    changed = store.get_job("e1").error_group
    assert first == error_group_of("billing.charge", "GatewayError", "disk 1 full")
    assert changed == error_group_of("billing.charge", "GatewayError", "quota of user 'y' exceeded")
    assert changed != first


@pytest.mark.postgres
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.text(
            alphabet=st.sampled_from(list("ab fF09xgZ_'\"-.:é\u4e2d\n\\<>%")),
            max_size=60,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_postgresql_groups_errors_as_python_does(pg_store: Store, messages: list[str]) -> None:
    """The trigger's SQL and the Python function mask alike, whatever the text."""
    pg_store.delete_all()
    pg_store.write_batch(Batch([failed(f"p{n}", m, hours_ago=1) for n, m in enumerate(messages)]))
    with pg_store.engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT id, error_group FROM jobs")).all())
    for n, message in enumerate(messages):
        expected = error_group_of("billing.charge", "GatewayError", message)
        assert stored[f"p{n}"] == expected, (message, masked_error(message))


@pytest.fixture
def pg_store(pg_url: str) -> Any:
    store = Store(pg_url)
    store.ensure_schema()
    store.delete_all()
    yield store
    store.delete_all()
    store.close()
