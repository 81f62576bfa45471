"""What workers do on their own, with real prefork worker subprocesses on Redis and
PostgreSQL: a cancel requested while no worker listened is still honoured by a worker
that starts later (revocations live in worker memory; the request lives in the row), and
workers find lost jobs without anyone scheduling ``jobtrack.reap``."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobtrack.control import cancel_job
from jobtrack.models import JobStatus
from jobtrack.tracker import active_tracker
from tests.conftest import wait_for
from tests.integration.conftest import job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_cancel_requested_while_no_worker_listens_is_honoured_after_a_start(
    publisher: Any, start_worker: Any, tmp_path: Any
) -> None:
    app, store = publisher
    queue = f"cancel-{tmp_path.name[-12:]}"
    doomed = app.send_task("wa.noop", args=["must not run"], queue=queue)
    kept = app.send_task("wa.noop", args=["runs"], queue=queue)
    job_when(store, doomed.id, status=JobStatus.PENDING)
    # No worker is online: Celery's revoke broadcast reaches nobody.
    assert cancel_job(app, active_tracker(), doomed.id) == "cancelled"
    requested = store.get_job(doomed.id)
    assert requested.status is JobStatus.CANCELLED and requested.cancel_requested_at

    worker = start_worker(queue=queue)
    done = job_when(store, kept.id, status=JobStatus.COMPLETED)
    assert done.output_data == "runs"
    # The worker met the cancelled job and skipped it: it reports the revoke itself,
    # and no attempt of it ever ran.
    wait_for(
        lambda: any(e.worker == worker.name for e in store.list_events(doomed.id)),
        20,
        message="the worker's own report of the skipped job",
    )
    job = store.get_job(doomed.id)
    assert job.status is JobStatus.CANCELLED and job.started_at is None
    assert JobStatus.RUNNING not in [e.status for e in store.list_events(doomed.id)]
    assert "skipping a job whose cancel was requested" in worker.log()
    # Each pool process checks the schema; Alembic's chatter stays out of the log.
    assert "Context impl" not in worker.log()


def test_workers_find_lost_jobs_by_themselves(publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    env = {
        "JOBTRACK_HEARTBEAT_INTERVAL_S": "0.5",
        "JOBTRACK_LOST_AFTER_S": "2",
        "JOBTRACK_REAP_INTERVAL_S": "0.5",
    }
    doomed = start_worker(env=env)
    result = app.send_task("wa.sleep", args=[60], queue=doomed.queue)
    job_when(store, result.id, status=JobStatus.RUNNING)
    # Another worker (on another queue) stays up; the one running the job dies whole.
    start_worker(env=env)
    doomed.kill_all()
    killed_at = time.monotonic()
    job = job_when(store, result.id, 30, status=JobStatus.LOST)
    print(
        f"\nFIGURE in-worker reaper: lost {time.monotonic() - killed_at:.1f} s after "
        f"the kill (lost_after_s 2, reap_interval_s 0.5)"
    )
    assert job.error_type == "WorkerLost"
    assert job.error_message is not None and job.error_message.startswith(
        f"lost: no heartbeat from worker {doomed.name} since "
    )


def test_an_outage_is_logged_once_by_the_upkeep(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's upkeep round meets an unreachable database every heartbeat interval:
    one warning when it starts, one line when it answers again, nothing in between (and
    no reaping is tried meanwhile)."""
    from celery import Celery

    from jobtrack.maintenance import WorkerUpkeep
    from jobtrack.settings import Settings
    from jobtrack.tracker import Tracker

    down = Tracker(
        Settings(database_url="postgresql://root@127.0.0.1:9/none", connect_timeout_s=1.0)
    )
    up = Tracker(Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}"))
    upkeep = WorkerUpkeep(Celery("upkeep"), down)
    caplog.set_level("INFO", logger="jobtrack.maintenance")
    for _ in range(3):
        assert upkeep.step() == []
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "could not read open cancel and pause" in warned[0].getMessage()
    assert not any("reaping" in r.getMessage() for r in caplog.records)
    upkeep.tracker = up
    upkeep.step()
    upkeep.step()
    back = [r for r in caplog.records if "answers the worker's upkeep again" in r.getMessage()]
    assert len(back) == 1
    up.store.close()
    down.store.close()
