"""docker-compose.yml end to end: the stack a newcomer starts with ``docker compose up``.

The stack comes up from the repository's own compose file and Dockerfile (host ports
moved so the machine's own PostgreSQL and Redis keep theirs); tasks are published from
this host into its Redis; what they recorded is read through the stack's own ports: the
``jobtrack`` CLI on its PostgreSQL, the dashboard's API and ``/metrics``, Flower's API.
Then the worker container is killed mid-task and the job is found lost. Everything is
removed at the end; the test checks nothing of the project is left.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

import jobtrack
from jobtrack.models import JobStatus
from jobtrack.store import Store

ROOT = Path(__file__).resolve().parents[2]
PROJECT = f"jobtrack-e2e-{uuid.uuid4().hex[:6]}"
PORTS = {
    "JOBTRACK_PG_PORT": "15432",
    "JOBTRACK_REDIS_PORT": "16379",
    "JOBTRACK_FLOWER_PORT": "15555",
    "JOBTRACK_WEB_PORT": "18808",
}
TOKEN = "e2e-operator-token-0001"
FLOWER_AUTH = "e2e:e2e-flower-secret"
DATABASE = f"postgresql://jobtrack:jobtrack@127.0.0.1:{PORTS['JOBTRACK_PG_PORT']}/jobtrack"
BROKER = f"redis://127.0.0.1:{PORTS['JOBTRACK_REDIS_PORT']}/0"
ENV = {
    **os.environ,
    **PORTS,
    "COMPOSE_PROJECT_NAME": PROJECT,
    "JOBTRACK_WEB_TOKENS": f"{TOKEN}=operator",
    "FLOWER_BASIC_AUTH": FLOWER_AUTH,
}


def compose(*args: str, timeout_s: float = 600) -> str:
    done = subprocess.run(
        ["docker-compose", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def container(service: str) -> str:
    return compose("ps", "-q", service).strip()


def health(service: str) -> str:
    cid = container(service)
    if not cid:
        return "absent"
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            cid,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def until(condition: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def leftovers() -> list[str]:
    found = []
    for kind in ("container", "network", "volume"):
        listed = subprocess.run(
            ["docker", kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]
            + (["-a"] if kind == "container" else []),
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        found += [f"{kind} {name}" for name in listed]
    return found


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    started = time.monotonic()
    try:
        compose("build", "-q", timeout_s=900)
        compose("up", "-d", timeout_s=600)
        for service in ("postgres", "redis", "worker", "flower", "dashboard"):
            until(lambda s=service: health(s) == "healthy", 240, f"{service} healthy")
        print(f"\ncompose stack built and healthy in {time.monotonic() - started:.0f} s")
        yield
    finally:
        subprocess.run(
            ["docker-compose", "logs", "--no-color", "--tail", "50"],
            cwd=ROOT,
            env=ENV,
            check=False,
        )
        compose("down", "--volumes", "--remove-orphans", timeout_s=300)
    assert leftovers() == []


@pytest.fixture(scope="module")
def publisher(stack: None) -> Iterator[tuple[Celery, Store]]:
    """This host publishing into the stack's Redis, with jobtrack installed."""
    app = Celery("e2e-publisher", broker=BROKER)
    app.conf.update(broker_connection_retry_on_startup=True, task_default_queue="default")
    tracker = jobtrack.install(app, DATABASE, reap_in_workers=False)
    yield app, tracker.store
    jobtrack.uninstall()
    tracker.store.close()


def http(url: str, *, auth: str | None = None, basic: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", f"Bearer {auth}")
    if basic:
        request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    return json.loads(body) if body[:1] in "{[" else body


def cli(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "jobtrack.cli", "--database-url", DATABASE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def job_of(store: Store, job_id: str, **wanted: Any) -> Any:
    def check() -> Any:
        job = store.find_job(job_id)
        return job if job and all(getattr(job, k) == v for k, v in wanted.items()) else None

    return until(check, 120, f"job {job_id} with {wanted}", interval_s=0.5)


def test_tasks_published_from_the_host_are_tracked(publisher: tuple[Celery, Store]) -> None:
    app, store = publisher
    web = f"http://127.0.0.1:{PORTS['JOBTRACK_WEB_PORT']}"
    short = app.send_task("demo.import_products", args=["e2e.csv", "u-e2e", 40]).id
    done = job_of(store, short, status=JobStatus.COMPLETED)
    assert done.processed_items == 40 and done.worker.startswith("celery@")
    listed = cli("jobs", "ls", "--type", "import", "--json")
    assert short in [j["id"] for j in listed]
    shown = http(f"{web}/api/jobs/{short}", auth=TOKEN)
    assert shown["job"]["status"] == "completed" and shown["job"]["owner_id"] == "u-e2e"
    metrics = http(f"{web}/metrics", auth=TOKEN)
    assert 'jobtrack_jobs{status="completed"}' in metrics

    # While an import runs, Flower's API shows jobtrack's progress (state PROGRESS).
    long = app.send_task("demo.import_products", args=["long.csv", "u-e2e", 1500]).id
    until(lambda: (store.find_job(long) or done).processed_items >= 20, 120, "the import under way")
    flower = f"http://127.0.0.1:{PORTS['JOBTRACK_FLOWER_PORT']}"

    def in_progress() -> Any:
        try:  # Flower answers 404 until the task's first event reaches it
            info = http(f"{flower}/api/task/info/{long}", basic=FLOWER_AUTH)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return info if info.get("state") == "PROGRESS" else None

    info = until(in_progress, 60, "Flower's PROGRESS state")
    assert info["uuid"] == long


def test_a_worker_container_killed_mid_task_leaves_its_job_lost(
    publisher: tuple[Celery, Store],
) -> None:
    app, store = publisher
    job_id = app.send_task("demo.import_products", args=["killed.csv", "u-e2e", 3000]).id
    until(
        lambda: (j := store.find_job(job_id)) is not None and j.processed_items >= 20,
        120,
        "the import under way",
    )
    subprocess.run(["docker", "kill", container("worker")], check=True, capture_output=True)
    # No worker is left to reap, and heartbeats have stopped: the reaper (here the CLI,
    # as a beat schedule or an operator would run it) finds the job lost.
    lost = until(
        lambda: (
            job_id in cli("reap", "--lost-after", "5", "--json")
            or store.get_job(job_id).status is JobStatus.LOST
        ),
        90,
        "the job marked lost",
        interval_s=2,
    )
    assert lost
    job = store.get_job(job_id)
    assert job.status is JobStatus.LOST and "no heartbeat from worker celery@" in (
        job.error_message or ""
    )
    assert 20 <= job.processed_items < 3000
