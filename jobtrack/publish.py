"""The publisher's per-task path: a job's pending row, with its input.

``before_task_publish`` runs in the process that sends the task (a web request calling
``task.delay()``, a worker publishing a retry or a canvas), before the message is
serialized: the row is made then (the arguments as they are at the call, queue, eta,
ids, and the input where the publisher has the task), and held. It is handed to the
writer on ``after_task_publish``, once the message is sent: a publish that fails (an
argument the serializer refuses, a broker that cannot be reached) leaves no row claiming
a message that was never sent. Nothing here touches the database or raises into the
caller.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from .control import ACTION_HEADER, INPUT_HEADER, SENT_HEADER, stamp, stamp_time
from .job import get_current
from .models import JobStatus, Row, state_seq
from .plans import Plans
from .tracker import Tracker, handler_failed

__all__ = ["Publishing"]


_PENDING, _RETRYING = JobStatus.PENDING.value, JobStatus.RETRYING.value


def _parse_eta(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Publishing:
    """The publisher's signal handlers of one installed tracker."""

    def __init__(self, tracker: Tracker, plans: Plans) -> None:
        self.writer = tracker.writer
        self.plans = plans
        #: The row of the message this thread is publishing, until it is sent.
        self._sending = threading.local()

    def before(
        self,
        sender: Any = None,
        body: Any = None,
        routing_key: Any = None,
        headers: Any = None,
        properties: Any = None,
        declare: Any = None,
        **_: Any,
    ) -> None:
        self._sending.held = None
        if not headers or "id" not in headers:
            return  # task protocol 1 or a foreign message: nothing to key a row on
        try:
            self._sending.held = self._pending(
                sender, body, routing_key, headers, properties, declare
            )
        except Exception:
            handler_failed("publish", headers.get("id"))

    def after(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        held = getattr(self._sending, "held", None)
        if held is None:
            return
        self._sending.held = None
        row, trace = held
        if headers is not None and headers.get("id") == row["id"]:
            self.writer.update(row, trace=trace)

    def _pending(
        self, name: Any, body: Any, routing_key: Any, headers: Any, properties: Any, declare: Any
    ) -> tuple[Row, int | None] | None:
        if headers.pop(ACTION_HEADER, None):
            # A bulk action's retry: the action wrote its row, input included. Taken off
            # the message, or Celery would copy it into the task's own self.retry().
            return None
        task_name = headers.get("task") or name
        replacing = headers.get("replaced_task_nesting")
        if replacing:
            # task.replace() publishes from inside the task it replaces: that job now
            # follows its replacement (whose last task runs under the job's own id).
            running = get_current()
            if running is not None and running.replaced_by is None:
                running.replaced_by = str(task_name)
        plan = self.plans.get(task_name)
        if not plan.tracked:
            return None
        if isinstance(body, (tuple, list)) and len(body) >= 2:
            args, kwargs = body[0], body[1]
        else:
            args, kwargs = (), {}
        job_id = headers["id"]
        now = datetime.now(UTC)
        retries = int(headers.get("retries") or 0)
        if retries:  # a retry republished: the old attempt is retrying until it starts
            status, trace = _RETRYING, None  # the retry's trace entry is task_retry's
            seq = state_seq(JobStatus.RETRYING, retries - 1)
        else:
            status, seq, trace = _PENDING, state_seq(JobStatus.PENDING, 0), 0
        parent = headers.get("parent_id")
        row: Row = {
            "id": job_id,
            "status": status,
            "state_seq": seq,
            "created_at": now,
            "updated_at": now,
            "retries": retries,
            "task_name": task_name,
            "queue": routing_key or (declare[0].name if declare else None) or None,
            "priority": properties.get("priority") if properties else None,
            "eta": _parse_eta(headers.get("eta")),
            "parent_id": None if replacing or parent == job_id else parent,
            "root_id": headers.get("root_id"),
            "group_id": headers.get("group"),
            "input_data": plan.input(
                args, kwargs, headers.get("argsrepr"), headers.get("kwargsrepr")
            ),
            "max_retries": plan.max_retries,
        }
        if not replacing:  # a replacement goes on with the run it replaces: no stamp
            sent = stamp_time(headers.get(SENT_HEADER))  # a retry's: Celery copied it
            if sent is None:  # a new publish, even of the id of a job running here
                sent = now
                headers[SENT_HEADER] = stamp(now)
            row["sent_at"] = sent
        if plan.spec is not None:
            row.update(plan.describe(args, kwargs))
        # Tell the worker the input is recorded, so its prerun skips that work.
        if row["input_data"] is not None:
            headers[INPUT_HEADER] = 1
        return row, trace
