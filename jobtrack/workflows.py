"""Workflow trees: the jobs of a chain, group, chord (or of tasks started from tasks)
arranged by the ids Celery recorded, with groups collapsed into one node each.

No I/O: :meth:`store.workflows.jobs <jobtrack.store.workflows.WorkflowQueries.jobs>`
reads the jobs, :func:`build_tree` arranges them. The recorded ids are data, not
promises: a parent that was never recorded makes its children top-level nodes; a cycle
in the parent ids is cut (at its oldest job, which becomes a top-level node marked
``cycle``); the tree is cut at :data:`MAX_DEPTH` levels (the node says how many jobs lie
below it). Nothing here recurses, so no recorded shape can exhaust the stack or loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import Job, JobStatus

__all__ = ["MAX_DEPTH", "Node", "Tree", "build_tree", "summarize", "workflow_state"]

#: Levels of a tree shown; deeper jobs are counted on the node where it is cut.
MAX_DEPTH = 64
_FAILED = frozenset({JobStatus.FAILED, JobStatus.LOST})


@dataclass
class Node:
    """A job of the tree, or (``job`` None) a group of sibling jobs sharing a
    ``group_id``: a ``group()``, or a chord's header."""

    job: Job | None
    children: list[Node] = field(default_factory=list)
    group_id: str | None = None
    #: Jobs below this node not shown: the tree was cut here at :data:`MAX_DEPTH`.
    hidden: int = 0
    #: This job's recorded parent chain loops back to it; the loop was cut here.
    cycle: bool = False
    #: A group's callback (a chord's body), run once its members are done: Celery
    #: records it as the child of whichever member finished last, with the group's id.
    then: list[Node] = field(default_factory=list)

    @property
    def is_group(self) -> bool:
        return self.job is None

    def jobs(self) -> Iterable[Job]:
        """Every job at or below this node (shown ones), without recursion."""
        stack = [self]
        while stack:
            node = stack.pop()
            if node.job is not None:
                yield node.job
            stack.extend(reversed(node.children + node.then))

    def holds(self, job_id: str) -> bool:
        """Whether ``job_id`` is this node's job, or a member's (or below one): a group
        holding the job a page is about is drawn open. Its callbacks do not count."""
        nodes = [self] if self.job is not None else list(self.children)
        return any(j.id == job_id for node in nodes for j in node.jobs())

    def counts(self) -> Counter[str]:
        """By status: a group's members, or a job and every job below it (shown ones)."""
        if self.job is None:
            return Counter(n.job.status.value for n in self.children if n.job is not None)
        return Counter(j.status.value for j in self.jobs())

    def summary(self) -> str:
        """ "37 of 40 done, 2 failed": the group's (or subtree's) state in words."""
        return summarize(self.counts())


def workflow_state(counts: Counter[str] | dict[str, int]) -> str:
    """A workflow's state from its jobs' statuses (see :meth:`Tree.state`)."""
    if any(counts.get(s.value) for s in _FAILED):
        return "failed"
    finished = (JobStatus.COMPLETED, JobStatus.CANCELLED)
    if any(n for status, n in counts.items() if status not in {s.value for s in finished}):
        return "running"
    return "cancelled" if counts.get(JobStatus.CANCELLED.value) else "completed"


def summarize(counts: Counter[str] | dict[str, int]) -> str:
    """A status count in words: "37 of 40 done, 2 failed, 1 running"."""
    total = sum(counts.values())
    parts = [f"{counts.get(JobStatus.COMPLETED.value, 0)} of {total} done"]
    failed = sum(counts.get(s.value, 0) for s in _FAILED)
    if failed:
        parts.append(f"{failed} failed")
    parts.extend(
        f"{counts[status.value]} {status.value}"
        for status in (JobStatus.CANCELLED, JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.PAUSED)
        if counts.get(status.value)
    )
    waiting = counts.get(JobStatus.PENDING.value, 0)
    if waiting:
        parts.append(f"{waiting} waiting")
    return ", ".join(parts)


@dataclass
class Tree:
    """A workflow: its top-level nodes (one, the root, for a chain or a task that
    started others; several for a chord's header or jobs whose parent is unknown)."""

    top: list[Node]
    focus: str
    count: int
    #: More jobs belong to the workflow than were read.
    truncated: bool = False
    #: Jobs not shown because the tree was cut at :data:`MAX_DEPTH`.
    hidden: int = 0
    cycles: int = 0

    def counts(self) -> Counter[str]:
        """Every shown job of the workflow by status."""
        return Counter(j.status.value for node in self.top for j in node.jobs())

    def summary(self) -> str:
        return summarize(self.counts())

    def state(self) -> str:
        """The workflow's own state, apart from any one job's: ``failed`` when a job of
        it failed (or was lost), else ``running`` while any is not finished, else
        ``cancelled`` when one was, else ``completed``."""
        return workflow_state(self.counts())

    def unhandled_failures(self) -> int:
        """Its failed and lost jobs no operator retried or replayed yet."""
        return sum(
            1
            for node in self.top
            for j in node.jobs()
            if j.status in _FAILED and j.retried_by is None
        )

    def ids(self) -> list[str]:
        return [j.id for node in self.top for j in node.jobs()]

    def to_json(self) -> dict[str, Any]:
        """The tree as the API answers it (built without recursion)."""
        out: dict[str, Any] = {
            "focus": self.focus,
            "count": self.count,
            "summary": self.summary(),
            "counts": dict(self.counts()),
            "truncated": self.truncated,
            "hidden": self.hidden,
            "max_depth": MAX_DEPTH,
            "cycles": self.cycles,
            "nodes": [],
        }
        stack: list[tuple[Node, list[Any]]] = [(n, out["nodes"]) for n in reversed(self.top)]
        while stack:
            node, into = stack.pop()
            shown = _node_json(node)
            into.append(shown)
            stack.extend((after, shown["then"]) for after in reversed(node.then))
            stack.extend((child, shown["children"]) for child in reversed(node.children))
        return out


def _node_json(node: Node) -> dict[str, Any]:
    if node.job is None:
        counts = node.counts()
        return {
            "kind": "group",
            "group_id": node.group_id,
            "summary": summarize(counts),
            "counts": dict(counts),
            "children": [],
            "then": [],
        }
    job = node.job
    shown: dict[str, Any] = {
        "kind": "job",
        "id": job.id,
        "name": job.name,
        "task_name": job.task_name,
        "status": job.status.value,
        "progress_percent": job.progress_percent,
        "processed_items": job.processed_items,
        "total_items": job.total_items,
        "failed_items": job.failed_items,
        "retries": job.retries,
        "error_type": job.error_type,
        "group_id": job.group_id,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "duration_ms": job.duration_ms,
        "retried_by": job.retried_by,
        "eta_at": job.eta_at.isoformat() if job.eta_at else None,
        "children": [],
    }
    if node.hidden:
        shown["hidden"] = node.hidden
    if node.cycle:
        shown["cycle"] = True
    return shown


def build_tree(
    found: Sequence[Job], focus: str, *, truncated: bool = False, max_depth: int = MAX_DEPTH
) -> Tree:
    """Arrange ``found`` (the jobs of one workflow, oldest first) as a tree."""
    by_id = {j.id: j for j in found}
    children: dict[str | None, list[Job]] = {}
    for job in found:
        parent = job.parent_id if job.parent_id in by_id and job.parent_id != job.id else None
        children.setdefault(parent, []).append(job)
    placed: set[str] = set()
    top: list[Node] = []
    hidden = cycles = 0
    starts = [(j, False) for j in children.get(None, [])]
    while True:
        for job, cut in starts:
            if job.id in placed:
                continue
            node = Node(job, cycle=cut)
            top.append(node)
            hidden += _grow(node, children, placed, max_depth)
        left = [j for j in found if j.id not in placed]
        if not left:
            break
        # What is left is only reachable round a loop of parent ids: cut it at its oldest.
        cycles += 1
        starts = [(left[0], True)]
    top = _grouped(top)
    _callbacks_under_their_groups(top)
    return Tree(top, focus, len(found), truncated=truncated, hidden=hidden, cycles=cycles)


def _callbacks_under_their_groups(top: list[Node]) -> None:
    """A chord's body carries its header's group id and is recorded as the child of the
    header member that finished last: it moves from under that member to its group
    (``then``), where it belongs. Without recursion."""
    stack = list(top)
    while stack:
        node = stack.pop()
        if node.is_group:
            for member in node.children:
                bodies = [
                    c
                    for c in member.children
                    if c.job is not None and c.job.group_id == node.group_id
                ]
                if bodies:
                    member.children = [c for c in member.children if c not in bodies]
                    node.then.extend(bodies)
        stack.extend(node.children)
        stack.extend(node.then)


def _grow(
    root: Node, children: dict[str | None, list[Job]], placed: set[str], max_depth: int
) -> int:
    """Attach the jobs below ``root`` breadth-first; returns how many were cut off."""
    assert root.job is not None
    placed.add(root.job.id)
    level, depth, cut = [root], 1, 0
    while level:
        below: list[Node] = []
        for node in level:
            assert node.job is not None
            kids = [k for k in children.get(node.job.id, []) if k.id not in placed]
            if not kids:
                continue
            if depth >= max_depth:
                node.hidden = _count_below(kids, children, placed)
                cut += node.hidden
                continue
            for kid in kids:
                placed.add(kid.id)
                child = Node(kid)
                node.children.append(child)
                below.append(child)
        for node in level:
            node.children = _grouped(node.children)
        level, depth = below, depth + 1
    return cut


def _count_below(kids: list[Job], children: dict[str | None, list[Job]], placed: set[str]) -> int:
    """Mark ``kids`` and everything below them placed (not shown); how many they are."""
    stack, n = list(kids), 0
    while stack:
        job = stack.pop()
        if job.id in placed:
            continue
        placed.add(job.id)
        n += 1
        stack.extend(children.get(job.id, []))
    return n


def _grouped(nodes: list[Node]) -> list[Node]:
    """Siblings sharing a ``group_id`` (two or more) become one group node, in the place
    of the first of them."""
    counts = Counter(n.job.group_id for n in nodes if n.job is not None and n.job.group_id)
    if not any(c > 1 for c in counts.values()):
        return nodes
    out: list[Node] = []
    groups: dict[str, Node] = {}
    for node in nodes:
        gid = node.job.group_id if node.job is not None else None
        if gid is None or counts[gid] < 2:
            out.append(node)
            continue
        group = groups.get(gid)
        if group is None:
            group = groups[gid] = Node(None, group_id=gid)
            out.append(group)
        group.children.append(node)
    return out
