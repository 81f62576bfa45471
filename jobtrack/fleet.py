"""Workers & Queues: what runs where, what waits, and whether anyone is taking it.

Three sources, each for what it knows:

* jobtrack's own rows (``store.fleet``): the jobs running on each worker now (its busy
  slots) and its newest heartbeat, the jobs it finished lately (tasks a minute), and per
  queue the jobs published and not started, the oldest of them due and its wait;
* the workers themselves, through Celery's remote control (with the app): each live
  worker's pool and its size, the queues it consumes, the rate limits in effect;
* the broker (with the app): each queue's depth (:func:`jobtrack.brokers.queue_depths`).

No Flower is needed. A queue with due jobs that no live worker consumes is a problem
the view names. Changing what workers do (pause a queue, resize a pool, a task's rate
limit) is an operator action: :mod:`jobtrack.actions`.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .brokers import queue_depths
from .errors import WorkersRefused
from .models import Action, WorkerActivity
from .store import Store

__all__ = [
    "CONTROLS",
    "INSPECT_TIMEOUT_S",
    "QUEUE_ACTIONS",
    "QueueState",
    "Survey",
    "WorkerState",
    "inspect",
    "pause_queue",
    "rate_limit",
    "resume_queue",
    "scale_pool",
    "survey",
]

log = logging.getLogger("jobtrack.fleet")

#: How long the view waits for the workers' replies (the first asks every worker; the
#: next ones stop once as many replied).
INSPECT_TIMEOUT_S = 1.0
#: The audit trail's names of the queue controls.
QUEUE_ACTIONS = ("queue-pause", "queue-resume")
#: Every control of workers this module makes (their names in the audit trail).
CONTROLS = (*QUEUE_ACTIONS, "worker-scale", "rate-limit")
#: Celery's rate limits: a number, optionally per second, minute or hour.
RATE_PATTERN = re.compile(r"^\d+(\.\d+)?(/[smh])?$")
_RATE = re.compile(r"^(?P<task>\S+) \[(?P<info>.*)\]$")


@dataclass(frozen=True)
class WorkerState:
    """One worker: from its rows (busy, tasks a minute, heartbeat) and, when it
    answered, from itself (pool, size, queues)."""

    name: str
    online: bool
    busy: int = 0
    tasks_per_min: float = 0.0
    last_heartbeat: datetime | None = None
    pool: str | None = None
    concurrency: int | None = None
    queues: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return self.name.partition("@")[2] or self.name


@dataclass(frozen=True)
class QueueState:
    """One queue: the broker's depth (None: it could not say), the jobs jobtrack has
    queued on it (due: ``waiting``, the oldest since ``oldest_waiting``), the live
    workers consuming it, the last pause or resume of it, and the problem, if any."""

    name: str
    depth: int | None = None
    queued: int = 0
    waiting: int = 0
    oldest_waiting: datetime | None = None
    consumers: tuple[str, ...] = ()
    last_control: Action | None = None
    problem: str | None = None

    @property
    def paused(self) -> bool:
        """Paused by an operator, as far as the workers say: the last control was a
        pause and no live worker consumes it."""
        control = self.last_control
        return control is not None and control.action == "queue-pause" and not self.consumers


@dataclass(frozen=True)
class Survey:
    """Workers and queues at ``at``; ``inspected``: the workers were asked (an app was
    given) and ``answered`` how many did."""

    at: datetime
    workers: list[WorkerState]
    queues: list[QueueState]
    inspected: bool
    answered: int = 0
    rate_limits: dict[str, str] = field(default_factory=dict)


def _pool_name(stats: dict[str, Any]) -> str | None:
    implementation = str((stats.get("pool") or {}).get("implementation") or "")
    # "celery.concurrency.prefork:TaskPool" -> "prefork"
    return implementation.rpartition(":")[0].rpartition(".")[2] or None


def _pool_size(stats: dict[str, Any]) -> int | None:
    pool = stats.get("pool") or {}
    processes = pool.get("processes")
    if isinstance(processes, list) and processes:
        return len(processes)  # prefork: what it has now (after a grow or a shrink)
    size = pool.get("max-concurrency")
    return int(size) if isinstance(size, int) else None


def inspect(
    app: Any, *, timeout_s: float = INSPECT_TIMEOUT_S, destination: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """What the live workers say of themselves: their stats, the queues each consumes,
    and the rate limits in effect (task: rate). Empty when none answers. The three
    broadcasts go out together (each waits ``timeout_s`` for every worker's reply)."""
    asked = app.control.inspect(timeout=timeout_s, destination=destination)
    try:  # the three questions at once: each waits its whole timeout for the replies
        with ThreadPoolExecutor(3, thread_name_prefix="jobtrack-inspect") as pool:
            replies = [
                pool.submit(asked.stats),
                pool.submit(asked.active_queues),
                pool.submit(asked.registered, "rate_limit"),
            ]
            stats, active, registered = (reply.result() or {} for reply in replies)
    except Exception as exc:  # a broker that cannot broadcast: the view says so
        log.warning(
            "could not ask the workers (%s)", exc, extra={"job_id": None, "action": "inspect"}
        )
        return {}, {}, {}
    queues = {
        name: sorted(str(q.get("name")) for q in found if isinstance(q, dict))
        for name, found in active.items()
    }
    rates: dict[str, str] = {}
    for tasks in registered.values():
        for entry in tasks or ():
            found = _RATE.match(str(entry))
            if found is not None:
                for item in found.group("info").split():
                    key, _, value = item.partition("=")
                    if key == "rate_limit" and value not in ("", "None"):
                        rates[found.group("task")] = value
    return stats, queues, rates


def survey(
    app: Any | None,
    store: Store,
    *,
    now: datetime,
    window_s: float = 300.0,
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> Survey:
    """Workers and queues now, from the rows, and from the workers and the broker when
    ``app`` is given."""
    backlog = {q.queue: q for q in store.fleet.queues(now=now) if q.queue}
    stats, consumed, rates = inspect(app, timeout_s=timeout_s) if app is not None else ({}, {}, {})
    activity = _by_node(store.fleet.workers(now=now, window_s=window_s), stats)
    workers = []
    for name in sorted(set(activity) | set(stats)):
        seen = activity.get(name)
        own = stats.get(name) or {}
        workers.append(
            WorkerState(
                name=name,
                online=name in stats,
                busy=seen.running if seen else 0,
                tasks_per_min=round((seen.finished if seen else 0) / (window_s / 60), 1),
                last_heartbeat=seen.last_heartbeat if seen else None,
                pool=_pool_name(own) if own else None,
                concurrency=_pool_size(own) if own else None,
                queues=tuple(consumed.get(name, ())),
            )
        )
    names = set(backlog) | {q for found in consumed.values() for q in found}
    if app is not None:
        names.add(str(app.conf.task_default_queue))
        names |= {str(q.name) for q in (app.conf.task_queues or ())}
    depths = queue_depths(app, names) if app is not None else {}
    controls = _last_controls(store)
    queues = []
    for name in sorted(names):
        waiting = backlog.get(name)
        consumers = tuple(sorted(w for w, found in consumed.items() if name in found))
        due = waiting.waiting if waiting else 0
        problem = None
        if app is not None and stats and due and not consumers:
            problem = f"{due:,} queued, and no live worker consumes it"
        elif app is not None and not stats and due:
            problem = f"{due:,} queued, and no worker answered"
        queues.append(
            QueueState(
                name=name,
                depth=depths.get(name),
                queued=waiting.pending if waiting else 0,
                waiting=due,
                oldest_waiting=waiting.oldest_waiting if waiting else None,
                consumers=consumers,
                last_control=controls.get(name),
                problem=problem,
            )
        )
    return Survey(now, workers, queues, app is not None, len(stats), rates)


def _by_node(seen: list[WorkerActivity], nodes: dict[str, Any]) -> dict[str, WorkerActivity]:
    """The rows' workers under the names the live workers answer with. Celery gives a
    task its worker's node name (``celery@host``) in some pools and the machine's host
    name in others (the thread pool, prefork without its optimizations): a host name
    that one live node runs on is that node's."""
    found: dict[str, WorkerActivity] = {}
    for one in seen:
        on_host = [n for n in nodes if n.partition("@")[2] == one.name]
        name = on_host[0] if one.name not in nodes and len(on_host) == 1 else one.name
        had = found.get(name)
        if had is not None:
            one = WorkerActivity(
                name,
                running=had.running + one.running,
                last_heartbeat=max(
                    (t for t in (had.last_heartbeat, one.last_heartbeat) if t), default=None
                ),
                finished=had.finished + one.finished,
                last_finished=max(
                    (t for t in (had.last_finished, one.last_finished) if t), default=None
                ),
            )
        found[name] = replace(one, name=name)
    return found


def _last_controls(store: Store) -> dict[str, Action]:
    """The newest pause or resume of each queue in the recent audit trail."""
    found: dict[str, Action] = {}
    for action in store.actions.list_actions(limit=100, kinds=QUEUE_ACTIONS):
        queue = (action.options or {}).get("queue") if action.action in QUEUE_ACTIONS else None
        if isinstance(queue, str) and queue not in found:
            found[queue] = action
    return found


# -- changing what the workers do (through Celery's remote control) ----------------------


def _said(replies: list[dict[str, Any]] | None, what: str, subject: str) -> str:
    """Celery's replies in one line ("2 workers: no longer consuming from imports");
    :class:`~jobtrack.errors.WorkersRefused` when none answered or every one refused."""
    answers = {name: body for reply in replies or () for name, body in reply.items()}
    if not answers:
        raise WorkersRefused(what, subject, "no live worker answered")
    done = sorted(n for n, body in answers.items() if isinstance(body, dict) and "ok" in body)
    failed = {n: body.get("error") for n, body in answers.items() if n not in done}
    if not done:
        reasons = "; ".join(f"{n}: {error}" for n, error in sorted(failed.items()))
        raise WorkersRefused(what, subject, reasons[:400])
    ok = str(answers[done[0]].get("ok"))
    text = f"{len(done)} worker{'' if len(done) == 1 else 's'}: {ok}"
    if failed:
        text += f" ({len(failed)} refused: {', '.join(sorted(failed))})"
    return text


def pause_queue(
    app: Any, queue: str, *, timeout_s: float = INSPECT_TIMEOUT_S
) -> tuple[str, list[str]]:
    """The live workers consuming ``queue`` stop consuming it (Celery's
    ``cancel_consumer``): its messages wait in the broker. Returns what they said and
    which they were (a resume starts those again). A worker started later consumes what
    its own ``-Q`` says, as Celery does."""
    _, consumed, _ = inspect(app, timeout_s=timeout_s)
    consumers = sorted(name for name, found in consumed.items() if queue in found)
    if not consumers:
        raise WorkersRefused("pause", f"queue {queue}", "no live worker consumes it")
    replies = app.control.cancel_consumer(
        queue, destination=consumers, reply=True, timeout=timeout_s
    )
    return _said(replies, "pause", f"queue {queue}"), consumers


def resume_queue(
    app: Any,
    queue: str,
    *,
    workers: list[str] | None = None,
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> tuple[str, list[str]]:
    """``workers`` (those a pause stopped), as far as they are alive, consume ``queue``
    again (Celery's ``add_consumer``); without them, every live worker does. Returns
    what they said and which they were."""
    stats, _, _ = inspect(app, timeout_s=timeout_s)
    targets = sorted(w for w in stats if workers is None or w in workers)
    if not targets:
        why = "none of the workers it was paused on is alive" if workers else "no live worker"
        raise WorkersRefused("resume", f"queue {queue}", why)
    replies = app.control.add_consumer(queue, destination=targets, reply=True, timeout=timeout_s)
    return _said(replies, "resume", f"queue {queue}"), targets


def _worker_named(app: Any, name: str, timeout_s: float) -> tuple[str, dict[str, Any]]:
    """The live worker ``name`` means (``celery@host``, or ``host`` alone) and its
    stats."""
    stats, _, _ = inspect(app, timeout_s=timeout_s)
    matches = [w for w in stats if w == name or w.partition("@")[2] == name]
    if len(matches) != 1:
        known = ", ".join(sorted(stats)) or "none answered"
        why = "several workers run on that host" if matches else f"live workers: {known}"
        raise WorkersRefused("scale", f"worker {name}", why)
    return matches[0], stats[matches[0]]


def scale_pool(
    app: Any, worker: str, concurrency: int, *, timeout_s: float = INSPECT_TIMEOUT_S
) -> str:
    """Grow or shrink ``worker``'s pool to ``concurrency`` processes (Celery's
    ``pool_grow``/``pool_shrink``; the prefork pool has them, the thread and solo pools
    refuse). Its autoscaler, if it has one, may change it again."""
    if not 1 <= concurrency <= 1000:
        raise WorkersRefused("scale", f"worker {worker}", "a pool of 1 to 1000 processes")
    name, stats = _worker_named(app, worker, timeout_s)
    now = _pool_size(stats)
    if now is None:
        raise WorkersRefused("scale", f"worker {name}", "it did not say the size of its pool")
    if now == concurrency:
        return f"{name}: already {concurrency}"
    change = app.control.pool_grow if concurrency > now else app.control.pool_shrink
    said = _said(
        change(abs(concurrency - now), destination=[name], reply=True, timeout=timeout_s),
        "scale",
        f"worker {name}",
    )
    return f"{name}: {now} -> {concurrency} ({said})"


def rate_limit(app: Any, task: str, rate: str, *, timeout_s: float = INSPECT_TIMEOUT_S) -> str:
    """Set ``task``'s rate limit on every live worker ("10/m"; "0": none), as Celery's
    ``rate_limit`` does (a worker started later takes the task's own again)."""
    if not RATE_PATTERN.match(rate):
        raise WorkersRefused(
            "set the rate limit of", f"task {task}", "a rate such as 10/s, 100/m, 1000/h or 0"
        )
    return _said(
        app.control.rate_limit(task, rate, reply=True, timeout=timeout_s),
        "set the rate limit of",
        f"task {task}",
    )
