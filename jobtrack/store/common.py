"""SQL pieces shared by the store's modules: the job filter and the change notification.

Builders only (and one statement run on a caller's connection); no transactions here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Text, and_, false, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from ..models import Job, JobFilter, JobStatus
from ..schema import SEARCH_TEXT, jobs

__all__ = ["CHANGES_CHANNEL", "escape_like", "filtered", "job_of", "notify", "searching"]

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
        query = query.where(searching(where.search))
    return query


#: A search that looks like a Celery task id, or the start of one (hex digits and
#: dashes, 8 or more): it means a job by its id.
_ID_LIKE = re.compile(r"[0-9a-fA-F]{8}[0-9a-fA-F-]*")
#: An id-like search up to this long may be a word too ("deadbeef"): it is looked for in
#: names and error text as well. Longer, it is an id (or the start of one) only.
_WORD_CHARS = 12


def searching(search: str) -> ColumnElement[bool]:
    """The condition of a search: the name or error text containing it (any case, taken
    literally), or the exact id. An id-like search (see :data:`_ID_LIKE`) is also an id
    prefix (the id prefix index, case-sensitive as ids are); past :data:`_WORD_CHARS`
    it is that only."""
    by_id = jobs.c.id == search
    if _ID_LIKE.fullmatch(search):
        prefix = and_(
            jobs.c.id.like(escape_like(search) + "%", escape="\\"),
            func.substr(jobs.c.id, 1, len(search)) == search,  # SQLite's LIKE ignores case
        )
        by_id = or_(by_id, prefix)
        if len(search) > _WORD_CHARS:
            return by_id
    pattern = "%" + escape_like(search) + "%"
    return or_(SearchText().ilike(pattern, escape="\\"), by_id)


class SearchText(ColumnElement[str]):
    """What a search matches as text: a job's name and error text as one text. On
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
