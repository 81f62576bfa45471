"""Real Celery workers: a prefork worker subprocess on Redis, writing to PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import jobtrack
from jobtrack.store import Store
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """``celery worker`` in a subprocess (prefork pool unless told), its log in a file."""

    def __init__(
        self,
        broker: str,
        db_url: str,
        log_path: Path,
        *,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        backend: str | None = None,
        queue: str | None = None,
        pool: str = "prefork",
        loglevel: str = "INFO",
    ) -> None:
        self.queue = queue or f"jt-{uuid.uuid4().hex[:8]}"
        self.name = f"{self.queue}-{uuid.uuid4().hex[:4]}@localhost"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "JT_BROKER": broker,
            "JT_QUEUE": self.queue,
            "JT_BACKEND": backend or "",
            "JOBTRACK_DATABASE_URL": db_url,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.concurrency = concurrency
        self.pool = pool
        self.loglevel = loglevel
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.apps.worker_app",
                "worker",
                "-P",
                self.pool,
                "-c",
                str(self.concurrency),
                "-Q",
                self.queue,
                "-n",
                self.name,
                "-l",
                self.loglevel,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_all() reaches the pool
        )
        log.close()
        wait_for(
            lambda: b" ready." in self.log_path.read_bytes() or self._died(),
            60,
            message=f"worker ready (log: {self.log_path})",
        )
        assert not self._died(), self.log()
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def kill_all(self) -> None:
        """kill -9 the whole worker: main process and pool children, no signal sent."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Warm shutdown by default; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@pytest.fixture
def publisher(
    redis_url: str, redis_backend_url: str, pg_url: str
) -> Iterator[tuple[Celery, Store]]:
    """A producer app with jobtrack installed (pending rows come from here)."""
    app = Celery("publisher", broker=redis_url, backend=redis_backend_url)
    app.conf.broker_connection_retry_on_startup = True
    tracker = jobtrack.install(app, pg_url)
    yield app, tracker.store
    jobtrack.uninstall()
    tracker.store.close()
    app.close()


@pytest.fixture
def installed(pg_url: str) -> Iterator[Any]:
    """``installed(app, **settings)``: jobtrack installed on an in-process app against
    an emptied database (a fast flush unless ``settings`` say otherwise); every tracker
    is uninstalled and closed afterwards."""
    trackers: list[jobtrack.Tracker] = []

    def install(app: Celery, **settings: Any) -> jobtrack.Tracker:
        tracker = jobtrack.install(app, pg_url, **{"flush_interval_s": 0.05, **settings})
        tracker.store.delete_all()
        trackers.append(tracker)
        return tracker

    yield install
    jobtrack.uninstall()
    for tracker in trackers:
        tracker.store.close()


@pytest.fixture
def start_worker(redis_url: str, pg_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(db_url: str | None = None, **kwargs: Any) -> Worker:
        log = tmp_path / f"worker{len(started)}.log"
        worker = Worker(redis_url, db_url or pg_url, log, **kwargs)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL if worker._died() else signal.SIGTERM)
        # Kill any pool child the worker left behind.
        for pid in worker.child_pids() if not worker._died() else []:
            os.kill(pid, signal.SIGKILL)


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    """``jobtrack -A tests.apps.worker_app ...`` with the worker's environment."""
    env = {**worker.env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "jobtrack.cli", "-A", "tests.apps.worker_app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def job_when(store: Store, job_id: str, timeout_s: float = 30, **expected: Any) -> Any:
    """Wait until the job's row has the expected values; return it."""

    def check() -> Any:
        job = store.find_job(job_id)
        if job is None:
            return None
        return job if all(getattr(job, k) == v for k, v in expected.items()) else None

    return wait_for(check, timeout_s, message=f"job {job_id} with {expected}")
