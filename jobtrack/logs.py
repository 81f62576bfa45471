"""Per-job logs: the log records a task emits while it runs, kept with its job.

One :class:`LogCapture` handler per worker process sits on the root logger and on
Celery's task logger (which does not propagate to the root). While a tracked task runs,
each record at or above ``job_log_level`` emitted in the task's context (its thread, or
its asyncio task) becomes a :class:`~jobtrack.models.LogLine`, handed to the writer like
an item: memory only, written with the next flush. Records from other threads and from
Celery's own worker machinery are not the job's and are left alone.

Bounded per job: past ``job_log_lines`` lines are counted, not kept, and one line says
how many were dropped when the task's run ends. A retry (another run of the same job)
starts from the count already stored. Secrets are the user's responsibility, but a value
passed under a redacted argument name (``password=...``) is masked wherever it appears
verbatim in a line.

Nothing the application prints changes, and no logger is lowered that could change it: a
record below its logger's own level is never made, so it is never kept. Loggers from
``get_task_logger()`` (Celery's task logger, which prints through its own handlers only)
are lowered to the capture level, their handlers raised to the old one: a worker run with
``-l warning`` still prints only warnings, and keeps its tasks' INFO lines. Any other
logger keeps what its level (for most, the root's: the worker's ``-l``) lets through. A
DEBUG call below the capture level still costs only the logger's own level check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .context import get_current
from .errors import is_time_limit
from .models import LogLine
from .payload import REDACTED

__all__ = ["LogCapture", "install_capture", "remove_capture"]

log = logging.getLogger("jobtrack.logs")

#: Loggers whose records describe the worker, not the job (Celery's own "Task ...
#: succeeded" lines repeat the row, and the result in them is not the job's to show;
#: the writer's say how the process's writes fare, whichever task's thread logs them).
_NOT_THE_JOBS = (
    "celery.app.trace",
    "celery.worker",
    "celery.pool",
    "celery.bootsteps",
    "jobtrack.writer",
)
#: Celery's task logger: ``get_task_logger(__name__)`` loggers are its children.
_TASK_LOGGER = "celery.task"
#: The loggers the handler sits on: the root, and the task logger (propagate off).
_HOSTS = ("", _TASK_LOGGER)


@dataclass
class _JobLog:
    #: Finds the values to mask, once, at the run's first kept line.
    find_secrets: Callable[[], Sequence[str]] | None
    #: Reads how many lines earlier runs of the job kept (a retry), once, lazily.
    seed: Callable[[], int] | None
    secrets: Sequence[str] = ()
    kept: int = 0
    dropped: int = 0


class LogCapture(logging.Handler):
    """The handler; :meth:`start` and :meth:`finish` bracket each run of a job."""

    def __init__(self, write: Callable[[LogLine], None], level: int, max_lines: int) -> None:
        super().__init__(level)
        self._write = write
        self._max = max_lines
        #: The runs begun here: how to start their state (made at the first kept line:
        #: most runs log nothing), or their state.
        self._jobs: dict[str, _JobLog | tuple[Any, Any]] = {}
        self._last: logging.LogRecord | None = None
        self._busy = threading.local()
        #: Levels changed to install it, to put back when it is removed.
        self.changed: list[tuple[logging.Logger | logging.Handler, int]] = []

    def start(
        self,
        job_id: str,
        secrets: Callable[[], Sequence[str]] | None = None,
        seed: Callable[[], int] | None = None,
    ) -> None:
        """A run of ``job_id`` begins here. ``secrets`` gives the values to mask and
        ``seed`` (a retry) how many lines the job kept already; each is called at the
        run's first kept line, if there is one, so a task that logs nothing pays
        nothing for them."""
        self._jobs[job_id] = (secrets, seed)

    def finish(self, job_id: str) -> None:
        """The run ended: forget it, and say how many lines were dropped, if any."""
        state = self._jobs.pop(job_id, None)
        if isinstance(state, _JobLog) and state.dropped:
            self._write(
                LogLine(
                    job_id,
                    datetime.now(UTC),
                    "WARNING",
                    "jobtrack",
                    f"{state.dropped:,} more log lines were dropped: a job keeps at most "
                    f"{self._max:,} (job_log_lines)",
                )
            )

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle takes a lock per record; the state here needs none (one job
        # runs in one context at a time), and a record that reaches both hosts (a task
        # logger set to propagate) is kept once.
        if record is self._last:
            return False
        self._last = record
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        running = get_current()
        if running is None:
            return
        found = self._jobs.get(running.job_id)
        if found is None or record.name.startswith(_NOT_THE_JOBS):
            return
        if isinstance(found, _JobLog):
            state = found
        else:
            state = self._jobs[running.job_id] = _JobLog(found[0], found[1])
        if getattr(self._busy, "on", False):
            return  # a record logged while keeping one (by the writer, say)
        self._busy.on = True
        try:
            self._keep(running.job_id, state, record)
        except Exception as exc:
            if is_time_limit(exc):
                raise  # the task's own (see is_time_limit), not a line lost
            log.debug(
                "keeping a log line failed",
                exc_info=True,
                extra={"job_id": running.job_id, "action": "log"},
            )
        finally:
            self._busy.on = False

    def _keep(self, job_id: str, state: _JobLog, record: logging.LogRecord) -> None:
        if state.seed is not None:
            seed, state.seed = state.seed, None
            state.kept = seed()
        if state.find_secrets is not None:
            find, state.find_secrets = state.find_secrets, None
            state.secrets = tuple(find())
        if state.kept >= self._max:
            state.dropped += 1
            return
        state.kept += 1
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the line
            message = f"{record.msg!r} (formatting failed: {type(exc).__name__})"
        if record.exc_info and record.exc_info[0] is not None:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        elif record.exc_text:
            message = f"{message}\n{record.exc_text}"
        for secret in state.secrets:
            if secret in message:
                message = message.replace(secret, REDACTED)
        self._write(
            LogLine(
                job_id,
                datetime.fromtimestamp(record.created, UTC),
                record.levelname,
                record.name,
                message,
            )
        )


def install_capture(
    write: Callable[[LogLine], None], level_name: str, max_lines: int
) -> LogCapture | None:
    """Put a capture handler on the root and task loggers of this process (replacing
    one installed before); None when ``level_name`` is OFF."""
    remove_capture()
    if level_name.upper() == "OFF":
        return None
    level = logging.getLevelName(level_name.upper())
    capture = LogCapture(write, level, max_lines)
    logging.getLogger().addHandler(capture)
    tasks = logging.getLogger(_TASK_LOGGER)
    tasks.addHandler(capture)
    before = tasks.getEffectiveLevel()
    if not tasks.propagate and before > level:
        # Celery's task loggers print through their own handlers only: lowered to the
        # capture level, with those handlers raised to the old one, they print as before.
        for handler in tasks.handlers:
            if handler is not capture and handler.level < before:
                capture.changed.append((handler, handler.level))
                handler.setLevel(before)
        capture.changed.append((tasks, tasks.level))
        tasks.setLevel(level)
    return capture


def remove_capture() -> None:
    """Take this process's capture handler off again, levels as they were."""
    for name in _HOSTS:
        host = logging.getLogger(name)
        for handler in list(host.handlers):
            if isinstance(handler, LogCapture):
                host.removeHandler(handler)
                for thing, level in reversed(handler.changed):
                    thing.setLevel(level)
                handler.changed.clear()
