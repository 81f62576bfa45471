"""Workflow trees, time windows, time left and the pace estimate (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobtrack import job as job_module
from jobtrack.insights import MAX_BUCKETS, BadWindow, parse_duration, window
from jobtrack.job import JobHandle
from jobtrack.models import Job, JobStatus, time_left
from jobtrack.settings import Settings
from jobtrack.tracker import Tracker
from jobtrack.workflows import MAX_DEPTH, build_tree, summarize

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def j(
    job_id: str,
    parent: str | None = None,
    group: str | None = None,
    n: int = 0,
    status: JobStatus = JobStatus.COMPLETED,
) -> Job:
    return Job(
        id=job_id,
        status=status,
        parent_id=parent,
        group_id=group,
        created_at=T0 + timedelta(seconds=n),
    )


def test_a_group_under_a_parent_is_one_node_with_its_summary() -> None:
    members = [
        j(f"m{n}", "root", "g", n + 1, JobStatus.FAILED if n < 2 else JobStatus.COMPLETED)
        for n in range(40)
    ]
    members[5] = j("m5", "root", "g", 6, JobStatus.RUNNING)
    tree = build_tree([j("root"), *members, j("after", "m39", n=50)], "root")
    (root,) = tree.top
    assert root.job is not None and root.job.id == "root"
    (group,) = root.children
    assert group.is_group and group.group_id == "g" and len(group.children) == 40
    assert group.summary() == "37 of 40 done, 2 failed, 1 running"
    # The job a member started hangs under that member, and counts in the tree's total.
    assert [c.job.id for c in group.children[-1].children if c.job] == ["after"]
    assert tree.count == 42 and tree.counts()["completed"] == 39


def test_unknown_parents_cycles_and_depth_are_cut_and_said() -> None:
    orphan = j("orphan", "never-recorded", n=1)
    loop = [j("x", "z", n=2), j("y", "x", n=3), j("z", "y", n=4)]
    tree = build_tree([j("root"), orphan, *loop], "x")
    assert [n.job.id for n in tree.top if n.job] == ["root", "orphan", "x"]
    cut = tree.top[2]
    assert cut.cycle and tree.cycles == 1
    assert [n.job.id for n in cut.children if n.job] == ["y"]
    assert sorted(tree.ids()) == ["orphan", "root", "x", "y", "z"]
    # A self-parent is no parent.
    assert [n.job.id for n in build_tree([j("self", "self")], "self").top if n.job] == ["self"]

    chain = [j("c0", n=0)] + [j(f"c{n}", f"c{n - 1}", n=n) for n in range(1, 5000)]
    deep = build_tree(chain, "c0")
    assert deep.hidden == 5000 - MAX_DEPTH
    shown = deep.to_json()  # no recursion anywhere: 5,000 levels would exhaust it
    depth, node = 1, shown["nodes"][0]
    while node["children"]:
        depth, node = depth + 1, node["children"][0]
    assert depth == MAX_DEPTH and node["hidden"] == 5000 - MAX_DEPTH
    assert shown["count"] == 5000


def test_summarize_words() -> None:
    assert summarize({}) == "0 of 0 done"
    assert (
        summarize({"completed": 3, "lost": 1, "pending": 2}) == "3 of 6 done, 1 failed, 2 waiting"
    )


@pytest.mark.parametrize(
    ("since", "every", "message"),
    [
        ("91d", "1d", "between 1s and 90d"),
        ("24h", "30s", "between 1m and 7d"),
        ("24h", "8d", "between 1m and 7d"),
        ("30d", "1m", f"more than {MAX_BUCKETS} buckets"),
        ("soon", "1h", "a duration like 24h"),
        ("24h", "hourly", "a duration like"),
    ],
)
def test_windows_out_of_bounds_say_the_allowed_range(since: str, every: str, message: str) -> None:
    with pytest.raises(BadWindow, match=message):
        window(since, every, now=T0)


def test_a_window_lines_its_buckets_up_with_the_clock() -> None:
    now = T0 + timedelta(hours=5, minutes=17)
    span = window("24h", "1h", now=now)
    assert span.since == T0 - timedelta(hours=19) and span.until == now
    starts = span.starts()
    assert len(starts) == 25 and starts[-1] == T0 + timedelta(hours=5)
    assert parse_duration("90s") == timedelta(seconds=90)


def test_time_left_in_words() -> None:
    running = Job(id="r", status=JobStatus.RUNNING, eta_at=T0 + timedelta(minutes=3))
    assert time_left(running, T0) == "about 3 min left"
    assert time_left(running, T0 + timedelta(minutes=2, seconds=58)) == "finishing"
    assert time_left(Job(id="d", status=JobStatus.COMPLETED, eta_at=T0), T0) is None
    assert time_left(Job(id="n", status=JobStatus.RUNNING), T0) is None


class Clock:
    """Mocked monotonic time (the only thing mocked here)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_follows_the_recent_pace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = Clock()
    monkeypatch.setattr(job_module.time, "monotonic", clock)
    # A database and spool folder of its own: the clock stands still, and a spool file
    # another run left for its database would keep its tracker's close() retrying.
    tracker = Tracker(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            spool_dir=str(tmp_path),
            progress_events=False,
        )
    )
    handle = JobHandle("j", 0, tracker)

    def report(**progress: Any) -> datetime | None:
        handle.progress(**progress)
        update = handle.take_progress()
        assert update is not None
        return update.eta_at

    now = datetime.now(UTC)
    # 1 % a second: no estimate from the first two samples, then 100 - 3 = 97 s left.
    assert report(current=1, total=100) is None
    clock.now += 1
    assert report(current=2, total=100) is None
    clock.now += 1
    eta = report(current=3, total=100)
    assert eta is not None
    assert (eta - now).total_seconds() == pytest.approx(97, abs=2)
    # It speeds up to 10 % a second: after the window moves on, the estimate follows.
    for step in range(4, 10):
        clock.now += 1
        eta = report(current=3 + 10 * (step - 3), total=100)
    assert eta is not None
    assert (eta - datetime.now(UTC)).total_seconds() < 10
    # Without a total there is nothing to estimate.
    other = JobHandle("k", 0, tracker)
    for n in range(5):
        clock.now += 1
        other.progress(current=n)
        update = other.take_progress()
        assert update is None or update.eta_at is None
    tracker.close()


def test_watch_and_show_say_the_time_left() -> None:
    from rich.console import Console

    from jobtrack.views import job_detail, progress_table

    soon = datetime.now(UTC) + timedelta(minutes=3, seconds=10)
    running = Job(
        id="r1", status=JobStatus.RUNNING, name="Import", progress_percent=40.0, eta_at=soon
    )
    console = Console(width=120, record=True)
    console.print(progress_table([running], "jobs"))
    for part in job_detail(running, [], []):
        console.print(part)
    out = console.export_text()
    assert "3 min" in out and "about 3 min left" in out
    quiet = Console(width=120, record=True)
    quiet.print(progress_table([Job(id="r2", status=JobStatus.RUNNING)], "jobs"))
    assert " left " not in quiet.export_text()


def test_a_fulltext_query_holds_only_the_searchs_whole_words() -> None:
    """MySQL's FULLTEXT index is asked only for words every match holds whole: inside
    the search, between separators, of a size InnoDB indexes, not a stopword."""
    from jobtrack.store.common import fulltext_words

    assert fulltext_words("m db-3 timed o") == "+timed"
    assert fulltext_words("Import orders of acme") == "+orders"  # "of": a stopword
    assert fulltext_words("t 12 of shop 1") == "+shop"
    assert fulltext_words("orders") is None  # may be part of a longer word
    assert fulltext_words("a my_orders b") is None  # "_" joins words there
    assert fulltext_words("x é orders y") == "+orders"
    assert fulltext_words("x éorders y") is None  # a letter beyond ASCII joins too
