"""The per-task path's shortcuts give exactly what the general code gives.

The input and result documents are made by a fast path when every value is plain (the
walker of ``to_json`` would keep each as it is), rows are merged in memory by the same
rules as the store's SQL, and nothing the per-task path leaves waiting for a flush is an
object the garbage collector has to look at. Each shortcut is checked here against the
general code it replaces, on values hypothesis makes up, hostile ones included.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from celery import Celery
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobtrack import job as job_module
from jobtrack.job import JobHandle, _bind
from jobtrack.models import (
    CANCEL_REQUESTED_SEQ,
    TERMINAL_SEQ,
    Event,
    Item,
    ItemStatus,
    JobStatus,
    JobUpdate,
    merge_row,
    recorded_item,
    state_seq,
    unfold_events,
)
from jobtrack.payload import NOT_FLAT, Packed, flat_json, pack, to_json, unpack
from jobtrack.plans import TaskPlan
from jobtrack.settings import Settings
from jobtrack.tracker import Tracker

KEYS = Settings(database_url="sqlite://").redact_keys
MAX = 64 * 1024

#: Values a task may take or return: plain ones, and ones the walker changes (NUL, lone
#: surrogates, passwords in URLs, huge or non-finite numbers, bytes, sets, nesting).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["a\x00b", "lone \ud800", "postgresql://u:pw@h/db", "ok", "é", "x" * 9000, "\\ \" ' \n"]
    ),
)
values = st.recursive(
    st.one_of(scalars, st.binary(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(KEYS)), inner, max_size=4),
    ),
    max_leaves=8,
)
keyword_names = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["password", "token"]))


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_flat_json_is_the_walker_or_steps_aside(value: Any) -> None:
    fast = flat_json(value, MAX, KEYS)
    if fast is not NOT_FLAT:
        assert fast == to_json(value, MAX, KEYS)
        assert orjson.dumps(fast) == orjson.dumps(to_json(value, MAX, KEYS))


def _plan(fn: Any) -> TaskPlan:
    app = Celery("plans", broker="memory://")
    task = app.task(name="plans.t", shared=False)(fn)
    return TaskPlan("plans.t", task, Settings(database_url="sqlite://"), 1024)


def _two(first: Any, password: Any = None, *rest: Any, **more: Any) -> None:
    raise NotImplementedError


@settings(max_examples=400, deadline=None)
@given(args=st.lists(values, max_size=4), kwargs=st.dictionaries(keyword_names, values, max_size=3))
def test_recorded_input_is_the_walkers_document(args: list[Any], kwargs: dict[str, Any]) -> None:
    """What the general path would store: the document to_json makes of the arguments
    (a secret passed by position redacted), whichever path made it."""
    plan = _plan(_two)
    got = plan.input(args, kwargs, None, None)
    shown = ["[redacted]" if n == 1 else value for n, value in enumerate(args)]
    expected = to_json({"args": shown, "kwargs": dict(kwargs)}, MAX, KEYS)
    assert unpack(got) == expected


def test_arguments_the_caller_hid_are_recorded_as_shown() -> None:
    plan = _plan(_two)
    hidden = plan.input([1, "secret"], {}, "(<hidden>)", "{}")
    assert unpack(hidden) == {"argsrepr": "(<hidden>)", "kwargsrepr": "{}"}


def test_a_worker_sees_a_tuple_published_as_a_list_and_takes_it_as_not_hidden() -> None:
    """Celery's argsrepr is made from the publisher's tuple; the worker has the
    arguments as a list (JSON has no tuples): that is not the caller hiding them."""
    plan = _plan(_two)
    recorded = plan.input([1, "a"], {}, "(1, 'a')", "{}")
    assert unpack(recorded) == {"args": [1, "[redacted]"], "kwargs": {}}


def test_a_publisher_without_the_task_leaves_positional_input_to_the_worker() -> None:
    plan = TaskPlan("unknown.task", None, Settings(database_url="sqlite://"), 1024)
    assert plan.input([1], {}, None, None) is None
    assert unpack(plan.input([], {"a": 1}, None, None)) == {"args": [], "kwargs": {"a": 1}}


def _signature(a: Any, b: Any = 2, *, c: Any = 3) -> None:
    raise NotImplementedError


@settings(max_examples=200, deadline=None)
@given(
    args=st.lists(st.integers(), max_size=4),
    kwargs=st.dictionaries(st.sampled_from(["a", "b", "c", "zzz"]), st.integers(), max_size=3),
)
def test_binding_by_name_is_inspects(args: list[int], kwargs: dict[str, int]) -> None:
    """The plan binds without inspect when it can; the answer is bind_partial's (just the
    keyword arguments when the call does not fit)."""
    assert _plan(_signature).bind(args, kwargs) == _bind(_signature, args, kwargs)
    assert _plan(_two).bind(args, kwargs) == _bind(_two, args, kwargs)


times = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 1, 2), timezones=st.just(UTC)
)
statuses = st.sampled_from(list(JobStatus))


@st.composite
def updates(draw: Any) -> JobUpdate:
    status = draw(statuses)
    update = JobUpdate.transition(
        "j",
        status,
        draw(st.integers(0, 3)),
        at=draw(times),
        worker=draw(st.sampled_from([None, "w1", "w2"])),
    )
    update.error_type = draw(st.sampled_from([None, "E"]))
    update.progress_percent = draw(st.sampled_from([None, 10.0, 90.0]))
    update.task_name = draw(st.sampled_from([None, "t1", "t2"]))
    update.heartbeat_at = draw(st.one_of(st.none(), times))
    if draw(st.booleans()):
        update.state_seq = CANCEL_REQUESTED_SEQ
        update.status = JobStatus.CANCELLED
    return update


def _by_the_rules(older: JobUpdate, newer: JobUpdate) -> dict[str, Any]:
    """The merge written out column group by column group, as docs/design.md states it."""
    wins = newer.state_seq > older.state_seq or (
        newer.state_seq == older.state_seq and newer.state_seq < TERMINAL_SEQ
    )
    out = older.row()
    if older.state_seq < TERMINAL_SEQ and newer.progress_percent is not None:
        out["progress_percent"] = newer.progress_percent
    if wins:
        for name in ("worker", "error_type"):
            value = getattr(newer, name)
            if value is not None or (
                name == "error_type" and older.state_seq == CANCEL_REQUESTED_SEQ
            ):
                out[name] = value
        out["status"], out["state_seq"] = newer.status.value, newer.state_seq
    if out.get("task_name") is None and newer.task_name is not None:
        out["task_name"] = newer.task_name
    for name, pick in (("heartbeat_at", max), ("updated_at", max), ("created_at", min)):
        given = [v for v in (out.get(name), getattr(newer, name)) if v is not None]
        if given:
            out[name] = pick(given)
    return {k: v for k, v in out.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(older=updates(), newer=updates())
def test_rows_merge_by_the_stated_rules(older: JobUpdate, newer: JobUpdate) -> None:
    row = older.row()
    merge_row(row, newer.row())
    assert {k: v for k, v in row.items() if v is not None} == _by_the_rules(older, newer)


def test_a_folded_attempt_reads_back_as_its_running_and_its_outcome() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(seconds=2)
    stage = Event("j", start + timedelta(seconds=1), JobStatus.RUNNING, 0, stage="parse")
    folded = Event("j", end, JobStatus.COMPLETED, 0, worker="w", started_at=start)
    pending = Event("j", start - timedelta(seconds=1), JobStatus.PENDING, 0)
    trace = unfold_events([pending, stage, folded])
    assert [(e.status, e.at, e.stage) for e in trace] == [
        (JobStatus.PENDING, pending.at, None),
        (JobStatus.RUNNING, start, None),
        (JobStatus.RUNNING, stage.at, "parse"),
        (JobStatus.COMPLETED, end, None),
    ]
    assert trace[1].worker == "w" and all(e.started_at is None for e in trace)


def test_documents_in_rows_are_invisible_to_the_collector() -> None:
    """The per-task path keeps rows until the next flush: dicts of plain values and
    packed documents, never containers the collector tracks (they would make it scan
    the whole process more often)."""
    document = pack({"args": [1, [2, {"k": "v"}]], "kwargs": {"a": None}})
    assert type(document) is Packed
    row = {"id": "j", "status": "running", "state_seq": state_seq(JobStatus.RUNNING, 0)}
    row.update(created_at=datetime.now(UTC), input_data=document, output_data=pack(5))
    assert not gc.is_tracked(row) and not gc.is_tracked(document)
    assert unpack(document) == {"args": [1, [2, {"k": "v"}]], "kwargs": {"a": None}}
    assert pack(None) is None and pack("s") == "s"


@settings(max_examples=50, deadline=None)
@given(
    key=st.text(max_size=20),
    status=st.sampled_from(list(ItemStatus)),
    message=st.one_of(st.none(), st.text(max_size=20)),
    error_code=st.one_of(st.none(), st.text(max_size=5)),
    before=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers())),
    after=st.one_of(st.none(), st.lists(st.integers(), max_size=3)),
)
def test_an_item_built_for_the_hot_path_is_the_item_the_class_builds(
    key: str,
    status: ItemStatus,
    message: str | None,
    error_code: str | None,
    before: Any,
    after: Any,
) -> None:
    at = datetime(2026, 12, 7, tzinfo=UTC)
    fast = recorded_item("job-1", key, status, at, message, error_code, before, after)
    built = Item(
        job_id="job-1",
        key=key,
        status=status,
        message=message,
        error_code=error_code,
        before_state=before,
        after_state=after,
        processed_at=at,
    )
    assert fast == built and repr(fast) == repr(built)
    assert vars(fast) == {field.name: getattr(built, field.name) for field in fields(Item)}
    with pytest.raises(FrozenInstanceError):
        fast.key = "changed"  # type: ignore[misc]


def test_an_items_status_is_a_member_or_its_value_and_its_fields_reach_their_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = Tracker(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            spool_dir=str(tmp_path / "spool"),
            flush_interval_s=3600,
        )
    )
    try:
        tracker.writer.update(JobUpdate.transition("items", JobStatus.RUNNING))
        handle = JobHandle("items", 0, tracker)
        given = {"a": "success", "b": ItemStatus.SKIPPED, "c": "Success", "d": ["error"]}
        for key, status in given.items():
            handle.item(key, status)  # type: ignore[arg-type]
        # Every field through job.item() to its column (none taken for another).
        handle.item("e", "error", message="bad row", error_code="E42", before={"n": 1}, after=[2])
        assert tracker.flush()
        stored = {item.key: item for item in tracker.store.list_items("items")}
    finally:
        tracker.close()
    assert {key: item.status for key, item in stored.items()} == {
        "a": ItemStatus.SUCCESS,
        "b": ItemStatus.SKIPPED,
        "c": ItemStatus.ERROR,
        "d": ItemStatus.ERROR,
        "e": ItemStatus.ERROR,
    }
    full = stored["e"]
    assert (full.message, full.error_code, full.before_state, full.after_state) == (
        "bad row",
        "E42",
        {"n": 1},
        [2],
    )
    assert full.processed_at is not None and stored["a"].message is None
    refused = [r.getMessage() for r in caplog.records if "is not one of" in r.getMessage()]
    assert len(refused) == 2


@pytest.fixture(scope="module")
def quiet_tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    """A tracker whose writer waits an hour between flushes: progress stays in memory.
    The jobs the tests below report on have rows, so their stage entries are written."""
    folder = tmp_path_factory.mktemp("progress")
    tracker = Tracker(
        Settings(
            database_url=f"sqlite:///{folder / 'jobs.db'}",
            spool_dir=str(folder / "spool"),
            flush_interval_s=3600,
            progress_interval_s=2.0,
        )
    )
    for job_id in ("progress", "announced"):
        tracker.writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING))
    yield tracker
    assert tracker.flush()  # the stage entries of both jobs, written
    tracker.close()


def _progress_as_documented(
    calls: list[tuple[Any, int | None, Any, str | None, str | None]],
) -> tuple[Any, ...] | None:
    """What progress() keeps, by its documented rules, written plainly: a percent, or
    ``current`` of ``total``, clamped to 0-100; each value kept until a call gives it."""
    latest: tuple[Any, ...] | None = None
    for percent, current, total, stage, message in calls:
        if percent is None and current is not None and total:
            percent = 100.0 * current / total
        if percent is not None:
            percent = min(max(float(percent), 0.0), 100.0)
        given = (percent, None if total is None else int(total), stage, message)
        latest = tuple(
            new if new is not None or latest is None else old
            for new, old in zip(given, latest or given, strict=True)
        )
    return latest


@settings(max_examples=300, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.booleans(),
                st.floats(allow_nan=True, allow_infinity=True),
                st.integers(min_value=-500, max_value=500),
            ),
            st.one_of(st.none(), st.integers(min_value=-10, max_value=2000)),
            st.one_of(
                st.none(),
                st.integers(min_value=0, max_value=1000),
                st.floats(min_value=0.0, max_value=1000.0),
            ),
            st.sampled_from([None, "load", "parse"]),
            st.one_of(st.none(), st.text(max_size=10)),
        ),
        min_size=1,
        max_size=6,
    )
)
@example(calls=[(100.5, None, None, None, None)])
@example(calls=[(-0.5, None, None, "load", "a"), (None, 1001, 1000, None, None)])
@example(calls=[(float("nan"), None, None, None, None), (-0.0, None, 7.5, None, None)])
@example(calls=[(True, None, None, None, None)])
def test_progress_keeps_what_its_rules_say(
    quiet_tracker: Tracker,
    calls: list[tuple[Any, int | None, Any, str | None, str | None]],
) -> None:
    """The percent clamped (NaN kept as NaN, -0.0 as given), the total a whole number,
    each value kept until a later call gives it: compared by repr, so NaN, the sign of
    zero and int against float count."""
    handle = JobHandle("progress", 0, quiet_tracker)
    for percent, current, total, stage, message in calls:
        handle.progress(percent, current=current, total=total, stage=stage, message=message)
    assert repr(handle._latest) == repr(_progress_as_documented(calls))


def test_progress_is_announced_at_most_every_interval(
    quiet_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower's progress events: the first call announces, then nothing until the
    interval has passed since the last announcement, which carries the latest values.
    The clock is job.py's alone (the writer's thread keeps the real one); the steps are
    exact binary fractions of the interval, so "one interval later" is exact."""
    interval = quiet_tracker.settings.progress_interval_s
    now = [10_000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(job_module, "time", clock)
    sent: list[tuple[float | None, str | None, str | None]] = []
    handle = JobHandle("announced", 0, quiet_tracker)
    handle.on_progress = lambda percent, stage, message: sent.append((percent, stage, message))
    handle.progress(10, stage="load", message="first")
    now[0] += interval * 0.5
    handle.progress(20)
    now[0] += interval * 0.25
    handle.progress(30, message="third")
    assert sent == [(10.0, "load", "first")]
    now[0] += interval * 0.25  # exactly one interval after the first announcement
    handle.progress(40)
    now[0] += interval * 0.75
    handle.progress(50)
    assert sent == [(10.0, "load", "first"), (40.0, "load", "third")]
    now[0] += interval * 0.25
    handle.progress(60)
    assert sent[-1] == (60.0, "load", "third") and len(sent) == 3
