"""Workers & Queues against a real prefork worker (Redis, PostgreSQL): what it says of
itself and of its queue, and the controls (`jobtrack workers|queues …`), each in the
audit trail. The broker is a Redis database of this test's own: Celery's remote control
broadcasts to every worker of a broker, and no other test's worker must hear it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import jobtrack
from jobtrack.models import JobStatus
from tests.conftest import wait_for
from tests.integration.conftest import Worker, cli, job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_workers_and_queues_are_read_and_controlled(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    broker = f"{redis_url.rsplit('/', 1)[0]}/11"
    redis.Redis.from_url(broker).flushdb()
    worker = Worker(broker, pg_url, tmp_path / "worker.log", queue=f"fl-{uuid.uuid4().hex[:8]}")
    worker.start()
    app = Celery("fleet-publisher", broker=broker)
    app.conf.broker_connection_retry_on_startup = True
    tracker = jobtrack.install(app, pg_url)
    try:

        def read(what: str) -> dict[str, Any]:
            done = cli(worker, what, "--json")
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

        def mine(found: dict[str, Any], part: str, name: str) -> dict[str, Any]:
            return next(x for x in found[part] if x["name"] == name)

        me = mine(read("workers"), "workers", worker.name)
        assert me["online"] and (me["pool"], me["concurrency"]) == ("prefork", 2)
        assert me["queues"] == [worker.queue]
        scaled = cli(worker, "workers", "scale", worker.name.partition("@")[2], "3")
        assert scaled.returncode == 0 and "2 -> 3" in scaled.stdout, scaled.stderr
        wait_for(
            lambda: mine(read("workers"), "workers", worker.name)["concurrency"] == 3,
            message="the pool grown to 3",
        )

        paused = cli(worker, "queues", "pause", worker.queue)
        assert paused.returncode == 0 and "no longer consuming" in paused.stdout, paused.stderr
        job = app.send_task("wa.noop", args=[1], queue=worker.queue).id
        job_when(tracker.store, job, status=JobStatus.PENDING)
        queue = mine(read("queues"), "queues", worker.queue)
        assert (queue["depth"], queue["queued"], queue["consumers"]) == (1, 1, [])
        assert queue["paused"] and queue["problem"] == "1 queued, and no live worker consumes it"
        again = cli(worker, "queues", "pause", worker.queue)  # nobody consumes it now
        assert again.returncode == 1 and "no live worker consumes it" in again.stderr

        resumed = cli(worker, "queues", "resume", worker.queue)
        assert resumed.returncode == 0, resumed.stderr
        job_when(tracker.store, job, status=JobStatus.COMPLETED)
        queue = mine(read("queues"), "queues", worker.queue)
        assert queue["consumers"] == [worker.name] and queue["problem"] is None

        limited = cli(worker, "workers", "rate-limit", "wa.noop", "10/m")
        assert limited.returncode == 0, limited.stderr
        assert read("workers")["rate_limits"] == {"wa.noop": "10/m"}
        assert cli(worker, "workers", "rate-limit", "wa.noop", "fast").returncode == 1

        listed = cli(worker, "actions", "ls", "--json")
        audit = [(a["action"], a["status"], a["actor"]) for a in json.loads(listed.stdout)]
        assert audit[:6] == [
            ("rate-limit", "failed", "cli"),
            ("rate-limit", "completed", "cli"),
            ("queue-resume", "completed", "cli"),
            ("queue-pause", "failed", "cli"),
            ("queue-pause", "completed", "cli"),
            ("worker-scale", "completed", "cli"),
        ]
    finally:
        jobtrack.uninstall()
        tracker.store.close()
        worker.stop()
        app.close()
