"""Searches at any size (``jobtrack.store.searches``): a search's newest page read from a
bounded number of the newest jobs when many match, its index when few do; tab counts
exact when few jobs match and estimated, said so, when many do. The pages on SQLite and
PostgreSQL; the estimates on PostgreSQL (SQLite counts every match)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from jobtrack.models import Batch, Count, JobFilter, JobStatus, JobUpdate
from jobtrack.store import Store
from jobtrack.store.searches import newest_matches

T0 = datetime(2026, 11, 1, tzinfo=UTC)
EVERY = [s.value for s in JobStatus]


def status_of(i: int) -> JobStatus:
    if i % 25 == 0:
        return JobStatus.RUNNING
    if i % 25 == 1:
        return JobStatus.FAILED
    if i % 25 == 2:
        return JobStatus.LOST
    return JobStatus.COMPLETED


def name_of(i: int) -> str:
    if i in (3, 7, 11):  # among the oldest jobs only
        return f"Rebuild index {i}"
    return f"Resize thumbnail {i} for shop {i % 7}" if i % 2 == 0 else f"Import batch {i}"


def made(n: int) -> list[JobUpdate]:
    """``n`` jobs, one second apart (job ``i`` is the ``i``-th oldest): half of them
    hold "thumbnail", three of the oldest "rebuild"."""
    return [
        JobUpdate.transition(
            f"job-{i:05d}",
            status_of(i),
            at=T0 + timedelta(seconds=i),
            name=name_of(i),
            job_type="resize" if i % 3 else "import",
            error_message=f"upstream timed out ({i})" if status_of(i) is JobStatus.FAILED else None,
        )
        for i in range(n)
    ]


def newest(jobs: list[JobUpdate], keep: Callable[[JobUpdate], bool], limit: int) -> list[str]:
    chosen = sorted((u for u in jobs if keep(u)), key=lambda u: u.created_at, reverse=True)
    return [u.id for u in chosen[:limit]]


def holds(search: str) -> Callable[[JobUpdate], bool]:
    def keep(u: JobUpdate) -> bool:
        return search.lower() in f"{u.name}\x1f{u.error_message or ''}".lower()

    return keep


def matches(u: JobUpdate, where: JobFilter) -> bool:
    assert where.search is not None
    return holds(where.search)(u) and (where.status is None or u.status in where.status)


TAB = (JobStatus.FAILED, JobStatus.LOST)


@pytest.mark.parametrize("search", ["thumbnail", "rebuild", "for shop 3", "zebra", "timed out"])
def test_every_page_of_a_search_is_its_newest_matches(store: Store, search: str) -> None:
    jobs = made(1200)
    store.write_batch(Batch(jobs))
    keep = holds(search)
    cases: list[tuple[JobFilter, Callable[[JobUpdate], bool]]] = [
        (JobFilter(search=search), keep),
        (JobFilter(search=search, status=TAB), lambda u: keep(u) and u.status in TAB),
        (JobFilter(search=search, status=tuple(JobStatus)), keep),
        (
            JobFilter(search=search, job_type="resize"),
            lambda u: keep(u) and u.job_type == "resize",
        ),
    ]
    for where, wanted in cases:
        expected = newest(jobs, wanted, 10_000)
        seen: list[str] = []
        before = None
        while True:  # every page by cursor, to the last
            page = store.list_jobs(where, limit=25, before=before)
            seen += [j.id for j in page]
            if len(page) < 25:
                break
            before = (page[-1].created_at, page[-1].id)
        assert seen == expected, where
        offset = [j.id for j in store.list_jobs(where, limit=10, offset=7)]
        assert offset == expected[7:17], where


def test_the_newest_jobs_are_read_up_to_a_bound_then_left_to_the_index(store: Store) -> None:
    """A search many jobs match has its page among the newest few; one the newest jobs
    do not hold (or not a page of) is given up at the bound: None, not a wrong page.
    What the bound did read is still a true start of the answer (a dashboard page
    shows it as such)."""
    jobs = made(400)
    store.write_batch(Batch(jobs))
    by_time = {u.id: u.created_at for u in jobs}
    with store.engine.connect() as conn:

        def page(where: JobFilter, bound: int, need: int = 10) -> list[str] | None:
            ids, complete = newest_matches(conn, where, None, need, scan_rows=bound)
            shown = sorted(ids, key=by_time.__getitem__, reverse=True)[:need]
            wanted = newest(jobs, lambda u: matches(u, where), need)
            assert shown == wanted[: len(shown)], (where, bound)  # a start of it, always
            return shown if complete else None

        common = JobFilter(search="thumbnail")
        assert page(common, 30) == newest(jobs, holds("thumbnail"), 10)
        # Only three of the oldest jobs hold "rebuild": 30 of the newest cannot tell.
        assert page(JobFilter(search="rebuild"), 30) is None
        assert page(JobFilter(search="rebuild"), 500) == newest(jobs, holds("rebuild"), 10)
        # A tab's statuses are read one range each (failed and lost jobs are one in 25
        # each; only failed ones hold "timed out"): 15 lost jobs reach back past the
        # page of 10 failed ones, but 15 failed jobs are no page of 20.
        failed = JobFilter(search="timed out", status=TAB)
        want = newest(jobs, lambda u: holds("timed out")(u) and u.status in TAB, 20)
        assert page(failed, 30) == want[:10]
        assert page(failed, 30, need=20) is None
        assert page(failed, 800, need=20) == want
        # A range stopped short of a page while another found one: the page holds only
        # if every job of it is newer than where the short range stopped.
        for statuses, short, enough in (
            ((JobStatus.COMPLETED, JobStatus.RUNNING), 2 * 4, 2 * 22),
            ((JobStatus.COMPLETED, JobStatus.LOST), 2 * 12, 2 * 400),
        ):
            where = JobFilter(search="thumbnail", status=statuses)
            want = newest(jobs, lambda u, s=statuses: holds("thumbnail")(u) and u.status in s, 10)
            assert page(where, short) is None, statuses
            assert page(where, enough) == want, statuses


def test_tab_counts_under_a_search_are_exact_when_few_jobs_match(store: Store) -> None:
    jobs = made(300)
    store.write_batch(Batch(jobs))
    for search in ("rebuild", "thumbnail", "timed out", "zebra"):
        counts = store.tab_counts(EVERY, cap=10_000, where=JobFilter(search=search))
        expected = {
            s: sum(1 for u in jobs if u.status.value == s and holds(search)(u)) for s in EVERY
        }
        assert counts == {s: Count(n) for s, n in expected.items()}, search
    capped = store.tab_counts(EVERY, cap=5, where=JobFilter())
    assert capped["completed"] == Count(5, exact=False)  # no search: "5+"
    assert capped["paused"] == Count(0)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.delete_all()
    yield store
    store.delete_all()
    store.close()


@pytest.mark.postgres
def test_tab_counts_of_a_common_search_are_estimated_and_say_so(
    pg_store: Store, pg_url: str
) -> None:
    store = pg_store
    jobs = made(1000)
    store.write_batch(Batch(jobs))
    bounds = {"exact_matches": 100, "sample_rows": 50}

    def truth(search: str, status: str) -> int:
        return sum(1 for u in jobs if u.status.value == status and holds(search)(u))

    common = store.tab_counts(EVERY, cap=10_000, where=JobFilter(search="thumbnail"), **bounds)
    # 500 jobs match: more than 100 are read by no status. Completed holds 880 jobs:
    # its newest 50 give its share, times its count.
    completed = common["completed"]
    assert completed.estimated and not completed.exact
    assert abs(completed.n - truth("thumbnail", "completed")) <= 0.1 * 440
    # Running, failed and lost hold 40 jobs each: fewer than the sample, counted.
    for status in ("running", "failed", "lost", "paused"):
        assert common[status] == Count(truth("thumbnail", status)), status
    # Few matches: exact everywhere.
    rare = store.tab_counts(EVERY, cap=10_000, where=JobFilter(search="rebuild"), **bounds)
    assert rare["completed"] == Count(truth("rebuild", "completed")) == Count(3)
    # The same counts with a filter besides the search.
    typed = JobFilter(search="thumbnail", job_type="resize")
    narrowed = store.tab_counts(EVERY, cap=10_000, where=typed, **bounds)
    want = sum(
        1
        for u in jobs
        if u.status is JobStatus.COMPLETED and u.job_type == "resize" and holds("thumbnail")(u)
    )
    assert narrowed["completed"].estimated
    assert abs(narrowed["completed"].n - want) <= 0.15 * want
    # Words the statistics call common, never together: the trigram index is not read
    # for their long lists; the newest jobs say none match, as an estimate.
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
    analyzed = Store(pg_url)  # statistics are read once per five minutes: a new store
    try:
        together = analyzed.tab_counts(
            EVERY, cap=10_000, where=JobFilter(search="thumbnail batch"), **bounds
        )
    finally:
        analyzed.close()
    assert together["completed"] == Count(0, exact=False, estimated=True)
    assert together["running"] == Count(0)  # 40 jobs, fewer than the sample: all read


@pytest.mark.postgres
def test_an_index_read_past_its_time_is_left_for_the_newest_jobs_and_remembered(
    pg_store: Store, pg_url: str
) -> None:
    """A search's index read is given ``probe_s``: one held up (here by another
    session's lock) is stopped, the counts estimated from the newest jobs instead, and
    the read skipped by the next counts of that search for a while."""
    import threading

    import psycopg

    from tests.conftest import wait_for

    store = pg_store
    store.write_batch(Batch(made(300)))
    bounds = {"cap": 10_000, "sample_rows": 50, "probe_s": 0.05}
    rare = JobFilter(search="rebuild")
    found: dict[str, dict[str, Count]] = {}
    holder = psycopg.connect(pg_url, autocommit=False)
    holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # every read waits
    try:
        counting = threading.Thread(
            target=lambda: found.update(first=store.tab_counts(EVERY, where=rare, **bounds))
        )
        counting.start()

        def sampling() -> bool:  # the index read gave up; the newest jobs' read waits
            with psycopg.connect(pg_url, autocommit=True) as watcher:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'jobtrack' AND wait_event_type = 'Lock' AND query LIKE '%UNION ALL%'"
                ).fetchone()
            return bool(row and row[0])

        wait_for(sampling, 10, message="the counts reading the newest jobs")
    finally:
        holder.rollback()
        holder.close()
    counting.join(10)
    assert found["first"]["completed"].estimated  # 264 completed jobs: 50 of them read
    assert found["first"]["running"] == Count(0)  # 12 jobs: all read, none holds it
    again = store.tab_counts(EVERY, where=rare, **bounds)  # the index is free now, but
    assert again["completed"].estimated  # the search's read is skipped for a while
    fresh = Store(pg_url)
    try:
        assert fresh.tab_counts(EVERY, where=rare, **bounds)["completed"] == Count(3)
    finally:
        fresh.close()
