"""Terminal views of jobs (Rich), shared by the CLI and the demo."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.progress_bar import ProgressBar
from rich.table import Table

from .models import Job

__all__ = ["ago", "items_text", "progress_table", "styled_status"]


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


def progress_table(jobs: list[Job], title: str) -> Table:
    """Jobs with a progress bar each (``watch`` and the demo)."""
    table = Table(title=title, expand=True)
    for column in ("job", "status", "progress", "items", "stage", "started", "error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            job.name or job.task_name or job.id,
            styled_status(job),
            ProgressBar(total=100, completed=job.progress_percent or 0.0, width=20),
            items_text(job),
            job.progress_stage or "",
            ago(job.started_at),
            job.error_type or "",
        )
    return table


def items_text(job: Job) -> str:
    if not job.processed_items and not job.total_items:
        return ""
    total = f"/{job.total_items}" if job.total_items else ""
    return f"{job.processed_items}{total} ({job.failed_items} failed)"
