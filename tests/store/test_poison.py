"""One bad value must never stop tracking (on SQLite and PostgreSQL alike).

Values reach the writer from task arguments, names, owners, messages, item keys and
errors. The writer cleans them on the way in; what the database still refuses (a row
that refers to a job that is not there, a document the database cannot hold) is found
by halving the batch, tried once more deep-cleaned, and set aside in the dead-letter
folder. Nothing refused ever blocks the rows around it, or the rows after it, and a
spool file with such rows in it does not block the files behind it.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtrack.models import Batch, Event, Item, ItemStatus, JobStatus, JobUpdate
from jobtrack.settings import Settings
from jobtrack.spool import Spool
from jobtrack.store import Store
from jobtrack.writer import BufferedWriter, SyncWriter

NOW = datetime(2026, 1, 1, tzinfo=UTC)

#: Text a task's arguments can carry into names, owners, stages, messages and keys.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "\x00",
            "nul\x00inside",
            "lone \ud800 surrogate",
            "\udfff",
            "\u202etxt.exe",
            "x" * 300,
            "y" * 70_000,
            "ok",
        ]
    ),
)
#: Documents a caller might hand over without going through jobtrack's JSON cleaning.
odd_json = st.one_of(
    st.none(),
    st.sampled_from(
        [
            {"a": "\x00"},
            {"n": float("nan")},
            {"inf": float("inf")},
            {"s": {1, 2}},
            ["\ud800"],
            {"deep": [[[[["x"]]]]]},
            {1: "int key"},
            b"\xff\xfe raw bytes",
        ]
    ),
    st.dictionaries(st.text(max_size=5), hostile_text, max_size=3),
)


@st.composite
def hostile_update(draw: Any) -> JobUpdate:
    job_id = draw(st.sampled_from(["j1", "j2", "j\x003", "x" * 300, "j4"]))
    return JobUpdate.transition(
        job_id,
        draw(st.sampled_from(list(JobStatus))),
        draw(st.integers(0, 3)),
        at=NOW,
        name=draw(hostile_text),
        owner_id=draw(hostile_text),
        queue=draw(hostile_text),
        progress_stage=draw(hostile_text),
        progress_message=draw(hostile_text),
        error_type=draw(hostile_text),
        error_message=draw(hostile_text),
        priority=draw(st.one_of(st.none(), st.integers(-(2**70), 2**70))),
        progress_percent=draw(st.one_of(st.none(), st.floats(allow_nan=True))),
        input_data=draw(odd_json),
        metadata=draw(odd_json),
    )


@st.composite
def hostile_item(draw: Any) -> Item:
    # "ghost" has no row: the database refuses its items (a foreign key).
    return Item(
        job_id=draw(st.sampled_from(["j1", "j2", "ghost"])),
        key=draw(hostile_text),
        status=ItemStatus.ERROR,
        message=draw(hostile_text),
        error_code=draw(hostile_text),
        after_state=draw(odd_json),
        processed_at=NOW,
    )


def make_writer(store: Store, spool: Path, mode: str = "buffered") -> Any:
    cls = SyncWriter if mode == "sync" else BufferedWriter
    return cls(
        store,
        Settings(database_url=str(store.engine.url), spool_dir=str(spool), flush_interval_s=3600),
    )


def clean_job_is_recorded(writer: Any, store: Store) -> None:
    job_id = f"clean-{uuid.uuid4().hex[:8]}"
    writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, at=NOW, worker="w"))
    assert writer.flush() is True
    assert store.get_job(job_id).status is JobStatus.RUNNING


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    updates=st.lists(hostile_update(), min_size=1, max_size=5),
    items=st.lists(hostile_item(), max_size=4),
)
def test_hostile_batches_never_stop_later_clean_jobs(
    store: Store, tmp_path: Path, updates: list[JobUpdate], items: list[Item]
) -> None:
    spool = tmp_path / uuid.uuid4().hex
    writer = make_writer(store, spool)
    for update in updates:
        writer.update(update, Event.of(update))
    for item in items:
        writer.item(item)
    assert writer.flush() is True  # settled: written, or set aside, never stuck
    assert writer.pending() == 0
    clean_job_is_recorded(writer, store)
    dead = Spool(spool, str(store.engine.url)).dead_letters()
    # Only what the database cannot take even cleaned is set aside: items of jobs that
    # have no row.
    recorded = {writer.clean(u).id for u in updates}
    assert sum(d.items for d in dead) == sum(1 for i in items if i.job_id not in recorded)
    assert all(d.jobs == 0 for d in dead)
    for update in updates:  # every job was recorded, in its cleaned form
        job_id = writer.clean(update).id
        job = store.get_job(job_id)
        assert job.name is None or (len(job.name) <= 500 and "\x00" not in job.name)
        assert job.owner_id is None or len(job.owner_id) <= 255
    store.delete_all()


def test_a_refused_row_is_isolated_and_the_rest_written(store: Store, tmp_path: Path) -> None:
    writer = make_writer(store, tmp_path)
    ids = [f"ok-{n}" for n in range(9)]
    for job_id in ids:
        writer.update(JobUpdate.transition(job_id, JobStatus.RUNNING, at=NOW))
        writer.item(Item(job_id, "row-1", ItemStatus.SUCCESS, processed_at=NOW))
    writer.item(Item("ghost", "row-1", ItemStatus.SUCCESS, processed_at=NOW))
    assert writer.flush() is True
    assert all(store.get_job(j).processed_items == 1 for j in ids)
    dead = Spool(tmp_path, str(store.engine.url)).dead_letters()
    assert [(d.jobs, d.items) for d in dead] == [(0, 1)]
    assert "ghost" in dead[0].path.read_text() and dead[0].reason


@pytest.mark.parametrize("mode", ["buffered", "sync"])
def test_one_poisoned_value_in_each_field_of_a_helper_write(
    store: Store, tmp_path: Path, mode: str
) -> None:
    """The issue's case: a name and owner built from an argument holding NUL (and one of
    2 MB): the name stored cleaned and bounded, the owner not at all (mended, it could be
    another owner's), and the next job is recorded."""
    writer = make_writer(store, tmp_path, mode)
    update = JobUpdate.transition(
        "poison",
        JobStatus.RUNNING,
        at=NOW,
        name="Report /tmp/a\x00b" + "z" * 2_000_000,
        owner_id="user\x00",
        progress_stage="st\x00ge",
    )
    writer.update(update, Event.of(update))
    writer.item(
        Item("poison", "key\x00" + "k" * 1000, ItemStatus.ERROR, message="m\x00", processed_at=NOW)
    )
    assert writer.flush() is True
    job = store.get_job("poison")
    assert job.name is not None and job.name.startswith("Report /tmp/a\ufffdb")
    assert len(job.name) <= 500 and job.owner_id is None
    (item,) = store.list_items("poison")
    assert item.key.startswith("key\ufffd") and len(item.key) <= 500
    clean_job_is_recorded(writer, store)
    writer.close()


def test_a_poisoned_spool_file_does_not_block_the_files_behind_it(
    store: Store, tmp_path: Path
) -> None:
    """Spool files written before values were cleaned (or by hand) may hold anything: the
    replay settles each file like a batch, and an unreadable file is moved aside."""
    url = str(store.engine.url)
    spool = Spool(tmp_path, url)
    raw = JobUpdate.transition(
        "from-spool", JobStatus.COMPLETED, at=NOW, name="bad\x00name", owner_id="o" * 400
    )
    spool.write(Batch([raw], items=[Item("ghost", "k", ItemStatus.SUCCESS, processed_at=NOW)]))
    (tmp_path / f"{spool.key}-00000000000000000001-{os.getpid()}.jsonl").write_text("{no")
    spool.write(Batch([JobUpdate.transition("behind", JobStatus.COMPLETED, at=NOW)]))
    writer = make_writer(store, tmp_path)
    writer._failures = 1  # as after a failed write: the next flush looks at the spool
    assert writer.flush() is True
    assert store.get_job("from-spool").name == "bad\ufffdname"
    assert store.get_job("behind").status is JobStatus.COMPLETED
    assert list(tmp_path.glob("*.jsonl")) == []
    reasons = sorted(d.reason.split(":")[0] for d in spool.dead_letters())
    assert len(reasons) == 2 and any("unreadable" in r for r in reasons)
    clean_job_is_recorded(writer, store)
