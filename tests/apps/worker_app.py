"""The Celery app real worker subprocesses run in the integration tests.

Configured from the environment by the test that starts the worker:
JT_BROKER (broker URL), JT_QUEUE (queue), JT_BACKEND (result backend, optional),
JT_PREFETCH (worker_prefetch_multiplier), JT_RUN_LOG (a folder where ``wa.long_import``
notes each row it processes, one file per job) and the usual JOBTRACK_* settings.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.utils.log import get_task_logger

import jobtrack

app = Celery(
    "worker_app",
    broker=os.environ.get("JT_BROKER", "memory://"),
    backend=os.environ.get("JT_BACKEND") or None,
)
app.conf.update(
    task_default_queue=os.environ.get("JT_QUEUE", "celery"),
    broker_connection_retry_on_startup=True,
    worker_lost_wait=float(os.environ.get("JT_WORKER_LOST_WAIT", "3")),
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=int(os.environ.get("JT_PREFETCH", "4")),
    result_expires=600,
    # Redelivery of unacknowledged messages within seconds, for the crash tests.
    broker_transport_options={
        "visibility_timeout": 4,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
)
jobtrack.install(app)


@signals.worker_ready.connect
def _ready(**_: Any) -> None:
    # Celery says "… ready." at INFO: said here at WARNING too, for workers run at -l WARNING.
    logging.getLogger("worker_app").warning("worker_app ready.")


@app.task(name="wa.noop")
def noop(x: Any = None) -> Any:
    return x


@app.task(name="wa.sleep")
def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@app.task(name="wa.sleep_late", acks_late=True, reject_on_worker_lost=True)
def sleep_late(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@app.task(name="wa.hold_late", acks_late=True, reject_on_worker_lost=True)
def hold_late(gate: str, timeout_s: float = 60.0) -> str:
    """Hold the worker's slot until the test creates ``gate`` (a file): a slot kept busy
    for as long as the test needs, however slow the machine."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


@app.task(name="wa.progress_slowly")
def progress_slowly(steps: int, delay_s: float) -> int:
    job = jobtrack.current_job()
    for n in range(steps):
        job.progress(
            current=n + 1, total=steps, stage="crunching", message=f"step {n + 1} of {steps}"
        )
        time.sleep(delay_s)
    return steps


@app.task(name="wa.chatty", bind=True, max_retries=3)
def chatty(self: Any, lines: int, api_token: str, fail_times: int = 0) -> int:
    """Logs ``lines`` lines (one shows the token it was given), prints, logs below the
    capture level; fails (and retries) ``fail_times`` times first."""
    log = get_task_logger("wa.chatty")
    log.debug("never kept: below the capture level")
    print(f"printed by attempt {self.request.retries}")
    for n in range(lines):
        log.info("attempt %d line %d token=%s", self.request.retries, n, api_token)
    if self.request.retries < fail_times:
        raise self.retry(exc=ConnectionError("once more"), countdown=0.05)
    return lines


@app.task(name="wa.flaky", bind=True, max_retries=5)
def flaky(self: Any, fail_times: int) -> str:
    if self.request.retries < fail_times:
        raise self.retry(
            exc=ConnectionError(f"attempt {self.request.retries} failed"), countdown=0.05
        )
    return f"ok after {self.request.retries} retries"


@app.task(name="wa.boom")
def boom(message: str) -> None:
    raise ValueError(message)


class Opaque:
    def __repr__(self) -> str:
        raise RuntimeError("repr refuses")


@app.task(name="wa.opaque")
def opaque() -> Opaque:
    return Opaque()


@app.task(name="wa.echo_size")
def echo_size(blob: str, **extra: Any) -> int:
    return len(blob)


@app.task(name="wa.import", bind=True)
@jobtrack.track(job_type="import", job_subtype="csv", name="Import {filename}", owner="user_id")
def import_rows(self: Any, filename: str, user_id: str, rows: int) -> dict[str, int]:
    job = jobtrack.current_job()
    for n in range(rows):
        job.progress(current=n + 1, total=rows, stage="importing", message=f"row {n + 1}")
        job.item(f"row-{n}", status="error" if n % 10 == 3 else "success", after={"n": n})
    return {"rows": rows}


@app.task(name="wa.long_import", bind=True)
@jobtrack.track(
    job_type="import",
    name="Import {path}",
    stages=["download", "parse", "load"],
    fail_when="any_item_failed",
)
def long_import(
    self: Any, path: str, rows: int, delay_s: float = 0.0, bad_rows: tuple[int, ...] = ()
) -> int:
    """A long import as the quickstart writes it: stages, planned items, a checkpoint per
    row, only the failed rows when an operator retries them. ``bad_rows`` fail on the
    first attempt only. Each processed row is noted under JT_RUN_LOG (run by run)."""
    job = jobtrack.current_job()
    start = (job.last_checkpoint or {}).get("row", 0)
    redo = job.retry_items
    keys = redo if redo is not None else [f"row-{n}" for n in range(start, rows)]
    if start == 0 and redo is None:
        job.plan_items([f"row-{n}" for n in range(rows)])
    log = Path(os.environ["JT_RUN_LOG"], self.request.id) if "JT_RUN_LOG" in os.environ else None
    if log is not None:
        with log.open("a") as out:
            out.write(f"run {self.request.retries} from {start} retry_items={redo}\n")
    job.stage("download")
    job.stage("parse")
    job.stage("load")
    for key in keys:
        n = int(key.split("-")[1])
        time.sleep(delay_s)
        if log is not None:
            with log.open("a") as out:
                out.write(f"{key}\n")
        failed = n in bad_rows and self.request.retries == 0
        job.item(
            key, status="error" if failed else "success", message="bad row" if failed else None
        )
        job.progress(current=n + 1, total=rows)
        if redo is None:
            job.checkpoint({"row": n + 1})
    return rows
