"""SQL pieces shared by the store's modules: the job filter and the change notification.

Builders only (and one statement run on a caller's connection); no transactions here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Text, false, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from ..models import Job, JobFilter, JobStatus
from ..schema import SEARCH_TEXT, jobs

__all__ = ["CHANGES_CHANNEL", "escape_like", "filtered", "job_of", "notify"]

#: The PostgreSQL channel every write notifies with the ids of the jobs it changed
#: (a JSON array; ``*`` when they do not fit in one notification).
CHANGES_CHANNEL = "jobtrack_changes"
NOTIFY_MAX_BYTES = 7000  # PostgreSQL's payload limit is 8000 bytes


def filtered(query: Any, where: JobFilter) -> Any:
    """``query`` narrowed by ``where``; every value a bound parameter. A value holding a
    NUL character matches nothing (PostgreSQL text cannot hold one; writes strip them),
    on every backend alike."""
    given = [
        where.ref,
        where.stage,
        where.job_type,
        where.owner_id,
        where.task_name,
        where.queue,
        where.search,
        where.workflow,
        where.group,
        *(where.ids or ()),
    ]
    if any(isinstance(v, str) and "\x00" in v for v in given):
        return query.where(false())
    if where.ids is not None:
        query = query.where(jobs.c.id.in_(list(where.ids)))
    if where.status is not None:
        query = query.where(jobs.c.status.in_([s.value for s in where.status]))
    for column, value in (
        (jobs.c.job_type, where.job_type),
        (jobs.c.owner_id, where.owner_id),
        (jobs.c.task_name, where.task_name),
        (jobs.c.queue, where.queue),
        (jobs.c.progress_stage, where.stage),
        (jobs.c.group_id, where.group),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.ref is not None:
        if where.ref.endswith("*"):  # a prefix: LIKE finds it in the index (PostgreSQL),
            prefix = where.ref[:-1]  # substr keeps it case-sensitive (SQLite's LIKE is not)
            query = query.where(
                jobs.c.ref.like(escape_like(prefix) + "%", escape="\\"),
                func.substr(jobs.c.ref, 1, len(prefix)) == prefix,
            )
        else:
            query = query.where(jobs.c.ref == where.ref)
    if where.workflow is not None:
        query = query.where(or_(jobs.c.root_id == where.workflow, jobs.c.id == where.workflow))
    if where.since is not None:
        query = query.where(jobs.c.created_at >= where.since)
    if where.until is not None:
        query = query.where(jobs.c.created_at < where.until)
    if where.search:
        pattern = "%" + escape_like(where.search) + "%"
        query = query.where(
            or_(SearchText().ilike(pattern, escape="\\"), jobs.c.id == where.search)
        )
    return query


class SearchText(ColumnElement[str]):
    """What a search matches: a job's name, error text and id as one text. On
    PostgreSQL spelled exactly as the trigram index over it (``schema.SEARCH_TEXT``), so
    the index answers; SQLite reads the rows (it has no such index)."""

    inherit_cache = True
    type = Text()


@compiles(SearchText, "postgresql")
def _search_text_postgresql(element: SearchText, compiler: Any, **kw: Any) -> str:
    return SEARCH_TEXT


@compiles(SearchText)
def _search_text(element: SearchText, compiler: Any, **kw: Any) -> str:
    return SEARCH_TEXT.replace("chr(31)", "char(31)")  # SQLite's name for it


def escape_like(value: str) -> str:
    """``value`` matched literally inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def notify(conn: Connection, job_ids: Sequence[str]) -> None:
    """Tell LISTENers (the dashboard's live stream) which jobs this transaction changed;
    delivered at commit, and only if it commits."""
    if conn.dialect.name != "postgresql" or not job_ids:
        return
    payload = json.dumps(sorted(set(job_ids)), separators=(",", ":"))
    if len(payload.encode()) > NOTIFY_MAX_BYTES:
        payload = "*"
    conn.execute(select(func.pg_notify(CHANGES_CHANNEL, payload)))


def job_of(row: Any) -> Job:
    """A ``jobs`` row as a :class:`~jobtrack.models.Job`."""
    values = dict(row)
    values.pop("state_seq", None)
    values["status"] = JobStatus(values["status"])
    return Job(**values)
