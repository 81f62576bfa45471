"""Terminal views: one line per job at 80 and 120 columns, ids whole; honest items and
error columns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from rich.console import Console

from jobtrack.models import Job, JobStatus
from jobtrack.views import error_text, items_text, job_list_table, progress_table

NOW = datetime.now(UTC)


def jobs() -> list[Job]:
    return [
        Job(
            id=str(uuid.uuid4()),
            status=JobStatus.RUNNING,
            name="Import " + "x" * 80,
            progress_percent=40.0,
            total_items=25,
            processed_items=10,
            created_at=NOW,
            started_at=NOW,
            progress_stage="parsing a very long stage name",
        ),
        Job(
            id=str(uuid.uuid4()),
            status=JobStatus.COMPLETED,
            name="Sync inventory",
            error_type="TimeoutError",
            error_message="the supplier was slow " * 5,
            progress_percent=100.0,
            total_items=25,
            created_at=NOW,
            started_at=NOW,
        ),
        Job(
            id=str(uuid.uuid4()),
            status=JobStatus.FAILED,
            task_name="shop.charge",
            error_type="ValueError",
            error_message="card declined",
            created_at=NOW,
        ),
    ]


def rendered(table: object, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 120])
def test_each_job_is_one_line_with_its_whole_id(width: int) -> None:
    found = jobs()
    for table in (job_list_table(found, width), progress_table(found, "jobs")):
        lines = rendered(table, width)
        assert all(len(line) <= width for line in lines)
        for job in found:
            key = (
                job.id if table.columns[0].header == "id" else (job.name or job.task_name or "")[:6]
            )
            assert sum(key in line for line in lines) == 1, (key, lines)


def test_items_and_errors_say_what_happened() -> None:
    running, completed, failed = jobs()
    assert items_text(running) == "10/25 (0 failed)"
    # progress(current, total) alone, no items recorded: nothing to count once done.
    assert items_text(completed) == ""
    assert error_text(completed).startswith("earlier attempt: TimeoutError")
    assert error_text(failed) == "ValueError: card declined"
