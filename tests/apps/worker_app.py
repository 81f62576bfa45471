"""The Celery app real worker subprocesses run in the integration tests.

Configured from the environment by the test that starts the worker:
JT_BROKER (broker URL), JT_QUEUE (queue), JT_BACKEND (result backend, optional) and the
usual JOBTRACK_* settings.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

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
    result_expires=600,
    # Redelivery of unacknowledged messages within seconds, for the crash tests.
    broker_transport_options={
        "visibility_timeout": 4,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
)
jobtrack.install(app)


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


@app.task(name="wa.progress_slowly")
def progress_slowly(steps: int, delay_s: float) -> int:
    job = jobtrack.current_job()
    for n in range(steps):
        job.progress(
            current=n + 1, total=steps, stage="crunching", message=f"step {n + 1} of {steps}"
        )
        time.sleep(delay_s)
    return steps


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
