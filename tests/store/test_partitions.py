"""Partitioned job tables (PostgreSQL): conversion, a job crossing a period boundary,
creation races at the boundary, and retention by dropping whole periods.

Each test gets a database of its own (converting the shared one would change every other
test's tables). Only the clock is mocked: the store's, which picks a new job's period.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

import jobtrack.store as store_module
from jobtrack.cli import main
from jobtrack.errors import NotSupported
from jobtrack.models import (
    Event,
    Item,
    ItemStatus,
    JobFilter,
    JobStatus,
    JobUpdate,
    LogLine,
    error_group_of,
    state_seq,
)
from jobtrack.schema import RLS_TABLES
from jobtrack.store import Batch, Store
from tests.conftest import fresh_pg_database
from tests.store import test_contract as contract
from tests.store.test_scale import every_page

JAN = datetime(2026, 1, 10, tzinfo=UTC)
BOUNDARY = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 15, tzinfo=UTC)


@pytest.fixture
def own_db() -> Iterator[str]:
    """A database of the test's own: converting the shared one would change every
    other test's tables."""
    with fresh_pg_database("jobtrack_part") as url:
        yield url


class Clock:
    """The store's clock, set by the test (per thread: two writers may live on either
    side of a boundary)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._at = datetime.now(UTC)

    def __call__(self, at: datetime, *, this_thread: bool = False) -> None:
        if this_thread:
            self._local.at = at
        else:
            self._at = at

    def now(self) -> datetime:
        at: datetime = getattr(self._local, "at", self._at)
        return at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(store_module, "utcnow", made.now)
    return made


@pytest.fixture
def parted(own_db: str, clock: Clock) -> Iterator[Store]:
    """An empty store partitioned by month since January 2026 (partitions to March)."""
    clock(JAN)
    store = Store(own_db)
    store.ensure_schema()
    store.partition("month", now=JAN)
    yield store
    store.close()


def upd(job_id: str, status: JobStatus, at: datetime, attempt: int = 0, **kw: Any) -> JobUpdate:
    return JobUpdate(
        id=job_id,
        status=status,
        state_seq=state_seq(status, attempt),
        created_at=at,
        updated_at=at,
        **kw,
    )


def placed(store: Store, table: str) -> dict[str, set[str]]:
    """Which partition holds each job's rows of ``table``."""
    key = "id" if table == "jobs" else "job_id"
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {key}, tableoid::regclass::text FROM {table}")).all()
    found: dict[str, set[str]] = {}
    for job_id, partition in rows:
        found.setdefault(job_id, set()).add(partition)
    return found


@pytest.fixture
def plain(own_db: str) -> Iterator[Store]:
    store = Store(own_db)
    store.ensure_schema()
    yield store
    store.close()


def test_conversion_keeps_every_row_security_and_search(plain: Store, clock: Clock) -> None:
    clock(MAR)
    store = plain
    for n, at in enumerate((JAN, JAN + timedelta(days=31), MAR)):
        job_id = f"job-{n}"
        store.write_batch(
            Batch(
                [upd(job_id, JobStatus.RUNNING, at, name=f"import {n}", error_message=None)],
                events=[Event(job_id, at, JobStatus.RUNNING, 0)],
                items=[
                    Item(job_id, f"k{i}", ItemStatus.SUCCESS, processed_at=at) for i in range(3)
                ],
                logs=[LogLine(job_id, at, "INFO", "app", f"line of {n}")],
            )
        )
    store.row_security(True)
    top_item = max(i.id for i in store.list_items("job-0"))
    before = {j.id: j for j in store.list_jobs(limit=10)}

    made = store.partition("month", now=MAR)

    assert store.partitioned() == "month"
    starts = [p.start for p in made]
    assert starts[:5] == [date(2026, m, 1) for m in (1, 2, 3, 4, 5)] and starts[-1] is None
    after = {j.id: j for j in store.list_jobs(limit=10)}
    assert after == before  # every column of every job, unchanged
    for table in ("jobs", "job_items", "job_events", "job_logs"):
        assert placed(store, table) == {
            "job-0": {f"{table}_p20260101"},
            "job-1": {f"{table}_p20260201"},
            "job-2": {f"{table}_p20260301"},
        }
    assert store.row_security() == dict.fromkeys(RLS_TABLES, True)
    with store.engine.connect() as conn:
        policies = conn.execute(text("SELECT tablename FROM pg_policies")).scalars().all()
        indexes = dict(
            conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs_p20260101'"
                )
            ).all()
        )
    assert sorted(policies) == sorted(RLS_TABLES)
    assert len(indexes) >= 15  # the key and every index of jobs, on each partition
    made_as = " ".join(indexes.values())  # the three search indexes among them
    assert all(s in made_as for s in ("gin_trgm_ops", "regexp_split_to_array", "pattern_ops"))
    assert "retried_by IS NULL" in made_as  # the failure groups' index
    # The failure group's trigger went along: a job failing now gets its group.
    failed = upd("job-2", JobStatus.FAILED, MAR, error_type="OSError", error_message="disk 3")
    store.write_batch(Batch([failed]))
    with store.engine.connect() as conn:
        group = conn.execute(text("SELECT error_group FROM jobs WHERE id = 'job-2'")).scalar()
    assert group is not None and group == error_group_of(None, "OSError", "disk 7")
    # Ids go on from where they were; search and the id prefix still answer.
    store.write_batch(Batch(items=[Item("job-0", "k9", ItemStatus.SUCCESS, processed_at=MAR)]))
    assert max(i.id for i in store.list_items("job-0")) > top_item
    assert [j.id for j in store.list_jobs(JobFilter(search="import 1"))] == ["job-1"]
    assert store.get_job("job-0").processed_items == 4
    assert store.partition("month") == store.partitions()  # asked again: nothing to do


def test_a_job_crossing_the_boundary_stays_in_its_partition(parted: Store, clock: Clock) -> None:
    late = BOUNDARY - timedelta(seconds=30)
    clock(late)
    parted.write_batch(Batch([upd("a", JobStatus.PENDING, late, name="crossing")]))
    clock(BOUNDARY + timedelta(seconds=30))
    after = BOUNDARY + timedelta(seconds=30)
    parted.write_batch(
        Batch(
            [upd("a", JobStatus.RUNNING, after, worker="w1"), upd("b", JobStatus.PENDING, after)],
            events=[Event("a", after, JobStatus.RUNNING, 0)],
            items=[Item("a", "k", ItemStatus.SUCCESS, processed_at=after)],
            logs=[LogLine("a", after, "INFO", "app", "working")],
        )
    )
    parted.upsert_job(upd("a", JobStatus.COMPLETED, after, completed_at=after))
    assert not parted.create_job(upd("a", JobStatus.PENDING, after))  # one row, found

    job = parted.get_job("a")
    assert job.status is JobStatus.COMPLETED and job.worker == "w1" and job.processed_items == 1
    for table in ("jobs", "job_items", "job_events", "job_logs"):
        assert placed(parted, table)["a"] == {f"{table}_p20260101"}, table
    assert placed(parted, "jobs")["b"] == {"jobs_p20260201"}


def test_writers_on_either_side_of_the_boundary_make_one_row(
    parted: Store, own_db: str, clock: Clock
) -> None:
    other = Store(own_db)
    ids = [f"race-{n}" for n in range(40)]
    gate = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(store: Store, at: datetime, status: JobStatus) -> None:
        clock(at, this_thread=True)
        try:
            for job_id in ids:
                gate.wait(timeout=10)
                store.write_batch(Batch([upd(job_id, status, at)]))
        except BaseException as exc:  # the test fails below, with the error
            errors.append(exc)
            gate.abort()

    threads = [
        threading.Thread(
            target=writer, args=(parted, BOUNDARY - timedelta(seconds=1), JobStatus.PENDING)
        ),
        threading.Thread(
            target=writer, args=(other, BOUNDARY + timedelta(seconds=1), JobStatus.RUNNING)
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    other.close()
    assert not errors
    rows = placed(parted, "jobs")
    assert all(len(rows[job_id]) == 1 for job_id in ids), rows
    assert {parted.get_job(job_id).status for job_id in ids} == {JobStatus.RUNNING}


def test_prune_drops_whole_periods_and_keeps_what_must_stay(parted: Store, clock: Clock) -> None:
    clock(JAN)
    done = JAN + timedelta(hours=1)
    parted.write_batch(
        Batch(
            [
                upd("old", JobStatus.COMPLETED, JAN, completed_at=done),
                upd("open", JobStatus.RUNNING, JAN),
                upd("late", JobStatus.COMPLETED, JAN, completed_at=MAR - timedelta(days=1)),
                upd("failed", JobStatus.FAILED, JAN, completed_at=done),
                upd("lost-old", JobStatus.LOST, JAN),  # no completed_at: updated_at counts
                dataclasses.replace(
                    upd("lost-late", JobStatus.LOST, JAN), updated_at=MAR - timedelta(days=1)
                ),
            ],
            items=[Item(j, "k", ItemStatus.SUCCESS, processed_at=JAN) for j in ("old", "open")],
            events=[Event(j, JAN, JobStatus.RUNNING, 0) for j in ("old", "open")],
        )
    )
    clock(MAR)
    parted.write_batch(Batch([upd("new", JobStatus.COMPLETED, MAR, completed_at=MAR)]))

    # Completed and lost jobs kept 20 days, failed 30: January ended before every cutoff.
    cutoffs = {
        "completed": MAR - timedelta(days=20),
        "failed": MAR - timedelta(days=30),
        "lost": MAR - timedelta(days=20),
    }
    dropped, gone = parted.drop_partitions(cutoffs, now=MAR)

    assert (dropped, gone) == (1, 3)  # January (old, failed, lost-old); February too late
    assert {parted.find_job(j) for j in ("old", "failed", "lost-old")} == {None}
    assert parted.get_job("lost-late").status is JobStatus.LOST
    assert parted.list_items("old") == [] and parted.list_events("old") == []
    # Still running, or finished within its retention: moved to March, whole.
    assert parted.get_job("open").status is JobStatus.RUNNING
    assert [i.key for i in parted.list_items("open")] == ["k"]
    assert len(parted.list_events("open")) == 1
    assert parted.find_job("late") is not None and parted.find_job("new") is not None
    assert placed(parted, "jobs")["open"] == {"jobs_p20260301"}
    assert placed(parted, "job_items")["open"] == {"job_items_p20260301"}
    assert parted.partitions()[0].start == date(2026, 2, 1)
    assert parted.drop_partitions(cutoffs, now=MAR) == (0, 0)


def test_rows_ahead_of_their_partition_are_moved_into_it(parted: Store, clock: Clock) -> None:
    july = datetime(2026, 7, 4, tzinfo=UTC)  # partitions reach March: July goes to default
    clock(july)
    parted.write_batch(
        Batch(
            [upd("ahead", JobStatus.RUNNING, july)],
            items=[Item("ahead", "k", ItemStatus.SUCCESS, processed_at=july)],
        )
    )
    assert placed(parted, "jobs")["ahead"] == {"jobs_pdefault"}

    made = parted.ensure_partitions(now=july)

    assert made == ["jobs_p20260701", "jobs_p20260801", "jobs_p20260901"]
    assert placed(parted, "jobs")["ahead"] == {"jobs_p20260701"}
    assert placed(parted, "job_items")["ahead"] == {"job_items_p20260701"}
    assert parted.get_job("ahead").processed_items == 1
    assert parted.ensure_partitions(now=july) == []


CONTRACT = [
    contract.test_roundtrip_keeps_types_and_utc,
    contract.test_terminal_never_regresses,
    contract.test_retry_ordering_by_attempt_not_arrival,
    contract.test_lost_goes_back_to_running_on_redelivery,
    contract.test_first_parent_id_is_kept,
    contract.test_items_upsert_and_counters_follow,
    contract.test_events_are_listed_in_order,
    contract.test_list_filters_search_and_stats,
    contract.test_counts_by_status_exact_filtered_and_capped,
    contract.test_mark_lost_only_takes_silent_running_jobs,
    contract.test_cancel_request_is_kept_and_a_real_outcome_outranks_it,
    contract.test_pause_in_the_queue_and_resume_lifts_it,
    contract.test_reopen_for_items_runs_the_failed_items_again,
    contract.test_planned_items_count_as_pending_and_never_replace_an_outcome,
    contract.test_ref_finds_jobs_exactly_or_by_prefix,
]


@pytest.mark.parametrize("case", CONTRACT, ids=lambda f: f.__name__.removeprefix("test_"))
def test_the_store_contract_holds_on_partitioned_tables(
    case: Callable[[Store], None], plain: Store
) -> None:
    plain.partition("month")
    case(plain)


def test_the_cli_converts_and_lists(own_db: str) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["--database-url", own_db, "db", "partition"])
    assert shown.exit_code == 0, shown.output
    assert "not partitioned" in shown.output
    made = runner.invoke(main, ["--database-url", own_db, "db", "partition", "--by", "day"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(main, ["--database-url", own_db, "db", "partition", "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"period": "day"' in listed.output and "jobs_pdefault" in listed.output
    other = runner.invoke(main, ["--database-url", own_db, "db", "partition", "--by", "month"])
    assert isinstance(other.exception, NotSupported)  # the console script prints it
    assert "partitioned by day already" in str(other.exception)


def test_a_common_words_page_is_looked_for_in_the_newest_partitions_first(own_db: str) -> None:
    """On a partitioned table the newest slice comes from the partitions' own
    ``created_at`` statistics (the parent has none): every page is still the page the
    trigram path reads."""
    from jobtrack.store.common import SearchWords

    store = Store(own_db)
    store.ensure_schema()
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, task_name, name, status, state_seq, created_at, "
                "updated_at) SELECT 'g-' || g, 't', 'Import batch ' || g || ' of customer ' "
                "|| (g % 50), 'completed', 0, now() - make_interval(secs => g * 30), now() "
                "FROM generate_series(1, 25000) AS g"
            )
        )
    store.partition("day")
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
    days = len([p for p in store.partitions() if p.start is not None])
    assert days >= 9  # 25,000 jobs 30 s apart: nine days
    picker = SearchWords()
    with store.engine.connect() as conn:
        assert picker.word(conn, " customer 8\x1f") == "8"
        since = picker.newest_since(conn, "8", 11)
        assert since is not None
        assert since > datetime.now(UTC) - timedelta(days=2)  # in the newest partitions
        assert len(every_page(store, conn, JobFilter(search=" customer 8\x1f"))) == 500
    store.close()
