"""A real Flower instance beside a real worker: a running job shows as PROGRESS, and
jobtrack's percent appears on Flower's task page through jobtrack.flower.format_task."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrack.models import JobStatus
from tests.conftest import wait_for
from tests.integration.conftest import ROOT, job_when

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        return None


@pytest.fixture
def flower(redis_url: str, pg_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("from jobtrack.flower import format_task  # noqa: F401\n")
    env = {
        **os.environ,
        "JT_BROKER": redis_url,
        "JOBTRACK_DATABASE_URL": pg_url,
        "PYTHONPATH": str(ROOT),
        "FLOWER_UNAUTHENTICATED_API": "true",
    }  # its REST API, on loopback, for the test
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.worker_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            f"--conf={conf}",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: get(base + "/healthcheck") is not None or proc.poll() is not None,
            60,
            interval_s=0.2,
            message="Flower answering",
        )
        assert proc.poll() is None, (tmp_path / "flower.log").read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def test_flower_shows_progress(flower: str, publisher: Any, start_worker: Any) -> None:
    app, store = publisher
    worker = start_worker()
    result = app.send_task("wa.progress_slowly", args=[80, 0.25], queue=worker.queue)
    job_when(store, result.id, status=JobStatus.RUNNING)

    def flower_state() -> str | None:
        info = get(f"{flower}/api/task/info/{result.id}")
        return json.loads(info).get("state") if info else None

    wait_for(
        lambda: flower_state() == "PROGRESS",
        30,
        interval_s=0.25,
        message="Flower showing the task as PROGRESS",
    )
    page = wait_for(lambda: get(f"{flower}/task/{result.id}"), 10, message="task page")
    shown = re.search(r"jobtrack progress: (\d+)% · crunching · step \d+ of 80", page)
    assert shown is not None, page[page.find("<dt>Result") :][:500]
    assert 0 < int(shown.group(1)) < 100
    job = store.get_job(result.id)
    assert job.progress_stage == "crunching"
    # Not left to run its 20 s out: the worker's warm shutdown would wait for it.
    app.control.revoke(result.id, terminate=True)
    job_when(store, result.id, status=JobStatus.CANCELLED)
