"""A 30 s tracking-database outage during 1,000 tasks (a proxy the test cuts; the shared
server is never stopped): every task runs, and within 10 s of the database returning
every row has its final state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import jobtrack
from jobtrack.models import JobFilter, JobStatus
from jobtrack.store import Store
from tests.conftest import pg_address, wait_for
from tests.proxy import CuttableProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

TASKS = 1000
OUTAGE_S = 30.0


@pytest.fixture
def proxy(pg_url: str) -> Iterator[CuttableProxy]:
    with CuttableProxy(*pg_address(pg_url)) as p:
        yield p


def test_outage_loses_nothing(
    proxy: CuttableProxy, pg_url: str, redis_url: str, redis_backend_url: str, start_worker: Any
) -> None:
    via_proxy = proxy.url(pg_url)
    app = Celery("outage-publisher", broker=redis_url, backend=redis_backend_url)
    app.conf.broker_connection_retry_on_startup = True
    tracker = jobtrack.install(app, via_proxy, connect_timeout_s=2)
    direct = Store(pg_url)
    try:
        worker = start_worker(
            env={"JOBTRACK_DATABASE_URL": via_proxy, "JOBTRACK_CONNECT_TIMEOUT_S": "2"},
            backend=redis_backend_url,
        )
        warm = app.send_task("wa.noop", args=["warm-up"], queue=worker.queue)
        assert warm.get(timeout=30) == "warm-up"

        proxy.cut()
        cut_at = time.monotonic()
        results = [app.send_task("wa.noop", args=[n], queue=worker.queue) for n in range(TASKS)]
        # Every task runs although nothing can be tracked right now.
        assert [r.get(timeout=60) for r in results] == list(range(TASKS))
        ran_in = time.monotonic() - cut_at
        assert ran_in < OUTAGE_S, "tasks must not wait for the tracking database"
        # Nothing of these tasks could be written while the proxy was cut.
        assert [r.id for r in results if direct.find_job(r.id) is not None] == []

        wait_for(
            lambda: time.monotonic() - cut_at >= OUTAGE_S,
            OUTAGE_S + 5,
            interval_s=0.5,
            message="the end of the outage",
        )
        proxy.restore()
        ids = {r.id for r in results}

        def all_final() -> bool:
            done = direct.list_jobs(JobFilter.of(status="completed"), limit=TASKS + 10)
            return ids <= {j.id for j in done}

        restored_at = time.monotonic()
        wait_for(all_final, 10, interval_s=0.2, message="every row final within 10 s")
        print(
            f"\nFIGURE outage: {TASKS} tasks ran in {ran_in:.1f} s with the database "
            f"cut; every row final {time.monotonic() - restored_at:.1f} s after it "
            f"returned (outage {OUTAGE_S:g} s)"
        )
        job = direct.get_job(results[0].id)
        assert job.status is JobStatus.COMPLETED and job.output_data == 0
        assert job.input_data == {"args": [0], "kwargs": {}}
        # The publisher's pending event may come back after the worker's rows: its
        # writer retries on its own schedule. Every transition arrives, once each.
        trace = [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED]
        wait_for(
            lambda: [e.status for e in direct.list_events(results[0].id)] == trace,
            30,
            interval_s=0.2,
            message="the whole trace of the first task",
        )
    finally:
        jobtrack.uninstall()
        tracker.store.close()
        direct.close()
        app.close()


def test_a_script_exits_at_once_during_an_outage(redis_url: str, tmp_path: Any) -> None:
    """A script that published a few tasks while the tracking database is down logs the
    outage once, spools what it holds at exit and goes, instead of retrying at exit."""
    import socket
    import subprocess
    import sys
    import textwrap
    import uuid

    import redis

    from jobtrack.spool import Spool
    from tests.integration.conftest import ROOT

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://root@127.0.0.1:{port}/gone"
    queue = f"jt-exit-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        import logging, sys, time
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s %(message)s")
        from celery import Celery
        import jobtrack
        app = Celery("exiting", broker={redis_url!r})
        app.conf.broker_connection_retry_on_startup = True
        jobtrack.install(app, {url!r}, spool_dir={str(tmp_path)!r}, connect_timeout_s=2,
                         flush_interval_s=0.05)
        for n in range(5):
            app.send_task("nobody.listens", args=[n], queue={queue!r})
        time.sleep(1)  # the writer meets the outage and keeps retrying in the background
    """)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    redis.Redis.from_url(redis_url).delete(queue)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if " jobtrack" in line]
    warnings = [line for line in ours if line.startswith(("WARNING", "ERROR"))]
    assert len(warnings) == 2, ours  # the outage once, the spool at exit once
    assert "unreachable" in warnings[0] and "spooled" in warnings[1]
    (spooled,) = Spool(tmp_path, url).pending()
    assert len(Spool.read(spooled).updates) == 5
    print(
        f"\nFIGURE exit during an outage: {took:.1f} s for the whole script (1 s of it "
        f"asleep), {len(warnings)} warnings"
    )
