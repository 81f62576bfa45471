"""Terminal views of jobs (Rich), shared by the CLI and the demo."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from rich import box
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree as RichTree

from .fleet import Survey
from .insights import Report
from .models import (
    Action,
    Event,
    FailureGroup,
    Item,
    Job,
    JobStatus,
    LogLine,
    Stats,
    stage_spans,
    time_left,
)
from .spool import DeadLetter
from .workflows import MAX_DEPTH, Node, Tree

__all__ = [
    "actions_table",
    "ago",
    "dead_letters_table",
    "error_text",
    "failures_table",
    "items_table",
    "items_text",
    "job_detail",
    "job_list_table",
    "log_lines",
    "progress_table",
    "queues_view",
    "stats_view",
    "styled_status",
    "tree_view",
    "trends_view",
    "workers_view",
]


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def styled_status(job: Job) -> str:
    color = {
        "completed": "green",
        "failed": "red",
        "running": "cyan",
        "retrying": "yellow",
        "lost": "red",
        "cancelled": "magenta",
        "paused": "blue",
    }.get(job.status.value, "white")
    return f"[{color}]{job.status.value}[/]"


def error_text(job: Job, max_chars: int = 60) -> str:
    """The row's error, marked when it is from an earlier attempt of a job that went on
    to finish well (a completed job that retried keeps why it retried)."""
    if not job.error_type and not job.error_message:
        return ""
    text = (job.error_type or "Error") + (
        f": {job.error_message[:max_chars]}" if job.error_message else ""
    )
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
    table.add_column("name / task", overflow="ellipsis", no_wrap=True, max_width=room * 3 // 5)
    table.add_column("status", no_wrap=True, min_width=9)
    if wide:
        table.add_column("progress", no_wrap=True, justify="right", min_width=8)
        table.add_column("items", no_wrap=True, max_width=16, overflow="ellipsis")
        table.add_column("created", no_wrap=True, min_width=8)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=room * 2 // 5)
    for job in jobs:
        extra = (
            (
                f"{job.progress_percent:.0f}%" if job.progress_percent is not None else "",
                items_text(job),
                ago(job.created_at),
            )
            if wide
            else ()
        )
        status = styled_status(job) + (" [dim]retried[/]" if job.retried_by else "")
        table.add_row(job.id, job.name or job.task_name or "", status, *extra, error_text(job))
    return table


def _hourly(counts: tuple[int, ...]) -> str:
    """A failure group's hours as a line of block characters (oldest first)."""
    marks = " ▁▂▃▄▅▆▇█"
    top = max(counts, default=0)
    return "".join(marks[0 if not n else max(1, round(8 * n / top))] for n in counts)


def failures_table(groups: list[FailureGroup]) -> Table:
    """``failures ls``: each failure group, the most recently seen first: its count,
    when last and first seen, its last 24 hours, the error, the task and its key (fits
    80 columns with the key whole)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("jobs", justify="right", no_wrap=True)
    table.add_column("last/first", no_wrap=True)
    table.add_column("last 24 h", no_wrap=True)
    table.add_column("failure (task · key)", overflow="fold", min_width=34)
    for g in groups:
        error = (g.error_type or "Error") + (f": {g.message}" if g.message else "")
        table.add_row(
            f"{g.count:,}",
            f"{ago(g.last_seen)}\n[dim]{ago(g.first_seen)}[/]",
            _hourly(g.hourly),
            f"{escape(error[:200])}\n[dim]{escape(g.task_name or '')} · {g.key or '-'}[/]",
        )
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
    now = datetime.now(UTC)
    left = {job.id: time_left(job, now) for job in jobs}
    if any(left.values()):  # a column only when some job has an estimate
        table.add_column("left", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, ratio=2)
    for job in jobs:
        estimate = (left[job.id] or "").removeprefix("about ").removesuffix(" left")
        table.add_row(
            job.name or job.task_name or job.id,
            styled_status(job),
            ProgressBar(total=100, completed=job.progress_percent or 0.0, width=10),
            items_text(job),
            job.progress_stage or "",
            ago(job.started_at),
            *([estimate] if any(left.values()) else []),
            error_text(job, 30),
        )
    return table


def items_text(job: Job) -> str:
    """ "12/25 (1 failed)"; nothing for a finished job that recorded no items (its
    total came from ``progress(current, total)`` alone)."""
    if not job.processed_items and (not job.total_items or job.status.is_terminal):
        return ""
    total = f"/{job.total_items}" if job.total_items else ""
    return f"{job.processed_items}{total} ({job.failed_items} failed)"


def job_detail(job: Job, events: list[Event], failing: list[Item]) -> list[Table]:
    """``jobs show``: the row, the trace, the first failing items."""
    table = Table(show_header=False, title=f"job {job.id}")
    left = time_left(job, datetime.now(UTC))
    if left:
        table.add_row("time left", left)
    for field in dataclasses.fields(job):
        value = getattr(job, field.name)
        if value is None or field.name == "traceback":
            continue
        table.add_row(
            field.name,
            styled_status(job)
            if field.name == "status"
            else json.dumps(value, default=str, ensure_ascii=False)
            if isinstance(value, (dict, list))
            else str(value),
        )
    parts = [table]
    if events:
        trace = Table(title="attempts and transitions (attempt 0 is the first run)")
        for column in ("at", "status", "attempt", "worker", "note or error"):
            trace.add_column(column)
        for e in events:
            trace.add_row(
                e.at.isoformat(timespec="milliseconds"),
                e.status.value + (f" (stage {e.stage})" if e.stage else ""),
                str(e.attempt),
                e.worker or "",
                " ".join(p for p in (e.note, e.error_type, e.error_message) if p),
            )
        parts.append(trace)
    spans = stage_spans(events)
    if spans:
        stages = Table(title="stages")
        for column in ("stage", "attempt", "started", "took"):
            stages.add_column(column)
        for span in spans:
            took = "(in it now)" if span.duration_ms is None else f"{span.duration_ms} ms"
            stages.add_row(
                span.name, str(span.attempt), span.started_at.isoformat(timespec="seconds"), took
            )
        parts.append(stages)
    if failing:
        items = Table(title="first failing items")
        for column in ("key", "error_code", "message"):
            items.add_column(column)
        for i in failing:
            items.add_row(i.key, i.error_code or "", i.message or "")
        parts.append(items)
    return parts


def items_table(items: list[Item]) -> Table:
    """``jobs items``."""
    table = Table()
    for column in ("key", "status", "error_code", "message"):
        table.add_column(column)
    for i in items:
        table.add_row(i.key, i.status.value, i.error_code or "", i.message or "")
    return table


def stats_view(result: Stats, since: str) -> list[Table | str]:
    """``stats``: counts by type and status, then one line of rates and durations."""
    statuses = [s.value for s in JobStatus]
    table = Table(title=f"jobs since {since}")
    table.add_column("type")
    for status in statuses:
        table.add_column(status)
    for job_type, counts in sorted(result.by_type.items()):
        table.add_row(job_type, *(str(counts.get(s, "")) for s in statuses))
    rate = f"{result.failure_rate:.1%}" if result.failure_rate is not None else "n/a"
    avg = f"{result.duration_ms_avg:.0f} ms" if result.duration_ms_avg is not None else "n/a"
    spread = "   ".join(
        f"p{p} {v} ms"
        for p, v in (
            (50, result.duration_ms_p50),
            (95, result.duration_ms_p95),
            (99, result.duration_ms_p99),
        )
        if v is not None
    )
    return [table, f"total {result.total}   failure rate {rate}   mean duration {avg}   {spread}"]


def _node_label(node: Node, focus: str) -> Text:
    if node.job is None:
        return Text.from_markup(f"[bold]group[/] {escape(node.summary())}")
    job = node.job
    label = Text.from_markup(
        f"{escape(job.name or job.task_name or job.id)}  {styled_status(job)}"
        + (
            f"  {job.progress_percent:.0f}%"
            if job.progress_percent is not None and job.status is not JobStatus.COMPLETED
            else ""
        )
        + f"  [dim]{escape(job.id)}[/]"
        + ("  [bold]← this job[/]" if job.id == focus else "")
        + ("  [yellow](its parent ids loop back here: cut)[/]" if node.cycle else "")
        + (
            f"  [yellow]({node.hidden:,} more below, cut at {MAX_DEPTH} levels)[/]"
            if node.hidden
            else ""
        )
    )
    return label


def tree_view(tree: Tree) -> RichTree:
    """``jobs tree``: the workflow, groups with their "37 of 40 done, 2 failed"."""
    top = RichTree(
        Text.from_markup(
            f"[bold]workflow[/] of {tree.count:,} jobs: {escape(tree.summary())}"
            + ("  [yellow](more jobs than were read)[/]" if tree.truncated else "")
        )
    )
    stack: list[tuple[Node, RichTree]] = [(n, top) for n in reversed(tree.top)]
    while stack:  # no recursion: the depth is capped, but the stack is still ours
        node, into = stack.pop()
        branch = into.add(_node_label(node, tree.focus))
        stack.extend((child, branch) for child in reversed(node.children))
    return top


def log_lines(lines: list[LogLine]) -> list[Text]:
    """``jobs logs``: one line each, time, level, logger, message (never markup)."""
    styles = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
    out = []
    for line in lines:
        text = Text(line.at.strftime("%H:%M:%S.%f")[:-3] + " ", style="dim")
        text.append(f"{line.level:<8}", style=styles.get(line.level, ""))
        text.append(f" {line.logger or ''}: ", style="dim")
        text.append(line.message or "")
        out.append(text)
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def trends_view(found: Report) -> list[Table]:
    """``stats --by task``: per task, a row per bucket, then the window's total."""
    tables = []
    fmt = "%m-%d %H:%M" if found.window.bucket_s < 86400 else "%Y-%m-%d"
    for one in found.series:
        table = Table(title=f"{one.key} ({found.by})", box=box.SIMPLE_HEAD)
        for column in (
            "bucket",
            "completed",
            "failed",
            "failure",
            "run p50",
            "run p95",
            "wait p50",
            "wait p95",
        ):
            table.add_column(column, justify="left" if column == "bucket" else "right")
        rows = [(t.start.strftime(fmt) if t.start else "total", t) for t in one.buckets]
        if one.total is not None:
            rows.append(("total", one.total))
        for label, t in rows:
            table.add_row(
                label,
                f"{t.completed:,}",
                f"{t.failed:,}",
                f"{t.failure_rate:.1%}" if t.failure_rate is not None else "",
                _ms(t.run_p50_ms),
                _ms(t.run_p95_ms),
                _ms(t.wait_p50_ms),
                _ms(t.wait_p95_ms),
                style="bold" if label == "total" else None,
            )
        tables.append(table)
    return tables


def dead_letters_table(dead: list[DeadLetter]) -> Table:
    """``spool ls``: each dead letter, its size and the database's reason."""
    table = Table(title=f"{len(dead)} dead letter(s)")
    for column in ("file", "at", "jobs", "items", "events", "reason"):
        table.add_column(column, overflow="fold")
    for letter in dead:
        table.add_row(
            letter.path.name,
            letter.at.isoformat(timespec="seconds"),
            str(letter.jobs),
            str(letter.items),
            str(letter.events),
            letter.reason,
        )
    return table


def actions_table(found: list[Action]) -> Table:
    """``actions ls``: who did what to which jobs, when, and how it went."""
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("#", "when", "who", "action", "jobs", "status", "counts"):
        table.add_column(column, overflow="fold")
    for a in found:
        who = a.actor + (f" ({a.owner_id})" if a.owner_id else "")
        what = ("bulk " if a.bulk else "") + a.action
        counts = f"{a.done} done, {a.skipped} skipped, {a.failed} failed of {a.matched}"
        table.add_row(
            str(a.id),
            a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            who,
            what,
            a.scope(),
            a.status,
            counts if a.bulk else (a.outcome or ""),
        )
    return table


def workers_view(found: Survey) -> Table:
    """``workers``: each worker's pool and size, busy slots, pace, heartbeat, queues."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("worker", "state", "pool", "busy", "tasks/min", "heartbeat", "queues"):
        table.add_column(column, overflow="fold")
    for w in found.workers:
        state = (
            "[green]online[/]"
            if w.online
            else ("[dim]not asked[/]" if not found.inspected else "[red]silent[/]")
        )
        size = f"/{w.concurrency}" if w.concurrency else ""
        table.add_row(
            escape(w.name),
            state,
            escape(w.pool or "-"),
            f"{w.busy}{size}",
            f"{w.tasks_per_min:g}",
            ago(w.last_heartbeat),
            escape(", ".join(w.queues)),
        )
    return table


def queues_view(found: Survey) -> Table:
    """``queues``: each queue's depth (broker), queued jobs (jobtrack), the oldest's
    wait, who consumes it, and its problem."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("queue", "broker", "queued", "oldest waits", "consumers", "state"):
        table.add_column(column, overflow="fold")
    for q in found.queues:
        waits = ago(q.oldest_waiting).removesuffix(" ago") if q.oldest_waiting else ""
        state = (
            f"[red]{escape(q.problem)}[/]"
            if q.problem
            else "[yellow]paused[/]"
            if q.paused
            else "ok"
        )
        table.add_row(
            escape(q.name),
            "?" if q.depth is None else f"{q.depth:,}",
            f"{q.queued:,}",
            waits,
            escape(", ".join(q.consumers)) or ("-" if found.inspected else "?"),
            state,
        )
    return table
