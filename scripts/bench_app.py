"""The Celery app scripts/bench's worker subprocesses run; BENCH_MODE picks the setup:

bare               Celery alone, no result backend
celery-db-backend  Celery's SQLAlchemy result backend (result_extended, track_started)
jobtrack-sync      jobtrack, every transition committed before the task goes on
jobtrack           jobtrack defaults (buffered, batched writes)
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

import jobtrack

MODE = os.environ.get("BENCH_MODE", "bare")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0")
DB_URL = os.environ.get("BENCH_DB", "postgresql://root@127.0.0.1:5432/jobtrack_bench")

app = Celery("bench", broker=BROKER)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
if MODE == "celery-db-backend":
    app.conf.update(
        result_backend="db+" + DB_URL.replace("postgresql://", "postgresql+psycopg://"),
        result_extended=True,
        task_track_started=True,
    )
elif MODE in ("jobtrack", "jobtrack-sync"):
    jobtrack.install(app, DB_URL, write_mode="sync" if MODE == "jobtrack-sync" else "buffered")

_redis = redis.Redis.from_url(BROKER)


@app.task(name="bench.noop")
def noop(key: str, total: int) -> int:
    """Counts itself; the first and the last task stamp the time."""
    count = _redis.incr(key)
    if count == 1:
        _redis.set(key + ":first", time.time())
    if count == total:
        _redis.set(key + ":last", time.time())
    return count
