"""Terminal views of jobs (Rich), shared by the CLI and the demo."""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.progress_bar import ProgressBar
from rich.table import Table

from .models import Job, JobStatus

__all__ = ["ago", "error_text", "items_text", "job_list_table", "progress_table",
           "styled_status"]


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def styled_status(job: Job) -> str:
    color = {"completed": "green", "failed": "red", "running": "cyan", "retrying": "yellow",
             "lost": "red", "cancelled": "magenta"}.get(job.status.value, "white")
    return f"[{color}]{job.status.value}[/]"


def error_text(job: Job, max_chars: int = 60) -> str:
    """The row's error, marked when it is from an earlier attempt of a job that went on
    to finish well (a completed job that retried keeps why it retried)."""
    if not job.error_type and not job.error_message:
        return ""
    text = (job.error_type or "Error") + (f": {job.error_message[:max_chars]}"
                                          if job.error_message else "")
    return f"earlier attempt: {text}" if job.status is JobStatus.COMPLETED else text


def job_list_table(jobs: list[Job], width: int = 120) -> Table:
    """``jobs ls``: one line per job, ids whole; below 110 columns the progress, items
    and created columns give way to the name and the error."""
    wide = width >= 110
    id_width = max((len(j.id) for j in jobs), default=2)
    # What the id, status (and the wide columns) take, with two spaces between columns.
    fixed = id_width + 9 + (8 + 16 + 8 if wide else 0) + 2 * (6 if wide else 3)
    room = max(width - fixed, 20)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=id_width)
    table.add_column("name / task", overflow="ellipsis", no_wrap=True,
                     max_width=room * 3 // 5)
    table.add_column("status", no_wrap=True, min_width=9)
    if wide:
        table.add_column("progress", no_wrap=True, justify="right", min_width=8)
        table.add_column("items", no_wrap=True, max_width=16, overflow="ellipsis")
        table.add_column("created", no_wrap=True, min_width=8)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=room * 2 // 5)
    for job in jobs:
        extra = (f"{job.progress_percent:.0f}%" if job.progress_percent is not None else "",
                 items_text(job), ago(job.created_at)) if wide else ()
        table.add_row(job.id, job.name or job.task_name or "", styled_status(job), *extra,
                      error_text(job))
    return table


def progress_table(jobs: list[Job], title: str) -> Table:
    """Jobs with a progress bar each (``watch`` and the demo); one line each from 80
    columns on."""
    table = Table(title=title, expand=True)
    table.add_column("job", overflow="ellipsis", no_wrap=True, ratio=3)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("items", no_wrap=True)
    table.add_column("stage", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("started", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, ratio=2)
    for job in jobs:
        table.add_row(
            job.name or job.task_name or job.id,
            styled_status(job),
            ProgressBar(total=100, completed=job.progress_percent or 0.0, width=10),
            items_text(job),
            job.progress_stage or "",
            ago(job.started_at),
            error_text(job, 30),
        )
    return table


def items_text(job: Job) -> str:
    """"12/25 (1 failed)"; nothing for a finished job that recorded no items (its
    total came from ``progress(current, total)`` alone)."""
    if not job.processed_items and (not job.total_items or job.status.is_terminal):
        return ""
    total = f"/{job.total_items}" if job.total_items else ""
    return f"{job.processed_items}{total} ({job.failed_items} failed)"
