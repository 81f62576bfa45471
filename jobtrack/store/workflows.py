"""The store's workflow statements: every job of a workflow (chains, groups, chords,
tasks started from tasks), and each workflow's counts by status for the list's roll-up.

A part the :class:`~jobtrack.store.Store` holds. Celery records three ids per task: its
``root_id`` (the first task of the workflow), its ``parent_id`` and its ``group_id``. A
chord's header tasks are each their own root and are tied only by their group, so a
workflow is gathered in rounds: the jobs of the known roots, then of the known groups,
until nothing new turns up (or a bound is met). Building the tree is not SQL: see
:mod:`jobtrack.workflows`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func, or_, select

from ..errors import JobNotFound
from ..models import Job, JobStatus
from ..schema import jobs
from .common import ReadingPart

__all__ = ["TREE_COLUMNS", "Workflow", "WorkflowQueries"]

#: What a tree node shows of each job.
TREE_COLUMNS = (
    "id",
    "status",
    "name",
    "task_name",
    "job_type",
    "parent_id",
    "root_id",
    "group_id",
    "progress_percent",
    "processed_items",
    "failed_items",
    "total_items",
    "retries",
    "error_type",
    "created_at",
    "started_at",
    "completed_at",
    "duration_ms",
    "eta_at",
    "retried_by",
)
#: Rounds of gathering (roots, then groups, then their roots …) before giving up.
_ROUNDS = 8


class Workflow:
    """The jobs of one workflow, as :meth:`WorkflowQueries.jobs` found them."""

    def __init__(self, focus: str, found: list[Job], truncated: bool) -> None:
        self.focus = focus
        self.jobs = found
        #: More jobs belong to it than were read (the ``limit``).
        self.truncated = truncated


class WorkflowQueries(ReadingPart):
    """Workflows' reads (``store.workflows``)."""

    def jobs(self, job_id: str, *, owner_id: str | None = None, limit: int = 100_000) -> Workflow:
        """Every job of the workflow ``job_id`` belongs to, at most ``limit``; with
        ``owner_id``, only that owner's. Raises ``JobNotFound`` for an unknown (or
        another owner's) job. Each round is one read by the root and group indexes."""
        columns = [jobs.c[name] for name in TREE_COLUMNS]
        scope = [] if owner_id is None else [jobs.c.owner_id == owner_id]
        with self._read("workflow") as conn:
            first = conn.execute(select(*columns).where(jobs.c.id == job_id, *scope)).first()
            if first is None:
                raise JobNotFound(job_id)
            found: dict[str, Job] = {}
            roots: set[str] = {first.root_id or first.id}
            groups: set[str] = {first.group_id} if first.group_id else set()
            asked_roots: set[str] = set()
            asked_groups: set[str] = set()
            for _ in range(_ROUNDS):
                new_roots, new_groups = roots - asked_roots, groups - asked_groups
                if (not new_roots and not new_groups) or len(found) > limit:
                    break
                asked_roots |= new_roots
                asked_groups |= new_groups
                wanted: list[ColumnElement[bool]] = []
                if new_roots:
                    wanted += [jobs.c.root_id.in_(new_roots), jobs.c.id.in_(new_roots)]
                if new_groups:  # members under a root read already are not read again
                    wanted.append(
                        and_(
                            jobs.c.group_id.in_(new_groups),
                            or_(jobs.c.root_id.is_(None), jobs.c.root_id.not_in(asked_roots)),
                        )
                    )
                query = select(*columns).where(or_(*wanted), *scope).limit(limit + 1)
                # Plain tuples, fetched at once: a mapping per row cost more than the
                # statement on a big workflow.
                for row in conn.execute(query).all():
                    if row[0] not in found:
                        values = dict(zip(TREE_COLUMNS, row, strict=True))
                        values["status"] = JobStatus(values["status"])
                        job = found[row[0]] = Job(**values)
                        roots.add(job.root_id or job.id)
                        if job.group_id:
                            groups.add(job.group_id)
        truncated = len(found) > limit
        kept = sorted(found.values(), key=lambda j: (j.created_at is None, j.created_at, j.id))
        if truncated:
            kept = [j for j in kept if j.id == job_id] + [j for j in kept if j.id != job_id]
            kept = kept[:limit]
        return Workflow(job_id, kept, truncated)

    def rollups(
        self, root_ids: Sequence[str], *, owner_id: str | None = None
    ) -> dict[str, dict[str, int]]:
        """For each of ``root_ids`` that started other jobs: how many jobs of its
        workflow (by Celery's ``root_id``, the root included, as its tree counts them;
        with ``owner_id``, that owner's only) are in each status. Roots with nothing
        under them are left out."""
        if not root_ids:
            return {}
        scope = [] if owner_id is None else [jobs.c.owner_id == owner_id]
        query = (
            select(jobs.c.root_id, jobs.c.status, func.count())
            .where(jobs.c.root_id.in_(list(root_ids)), *scope)
            .group_by(jobs.c.root_id, jobs.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        with self._read("workflow rollups") as conn:
            for root, status, n in conn.execute(query):
                out.setdefault(root, {})[status] = int(n)
        return {root: counts for root, counts in out.items() if sum(counts.values()) > 1}
