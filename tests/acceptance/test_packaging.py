"""The package as users get it: a wheel built from this checkout, installed into a bare
virtualenv (no project files on the path). With the ``redis`` extra alone it runs a real
prefork worker on Redis that records its job; then, with the other extras added, what
each of them is for imports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from jobtrack.models import JobStatus
from jobtrack.store import Store
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("redis", "web", "prometheus", "flower")


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_with_every_extra_in_a_bare_virtualenv(tmp_path: Path, redis_url: str) -> None:
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "-w",
        tmp_path / "dist",
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("jobtrack-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, f"{wheel}[redis]", cwd=tmp_path)  # what a Redis user installs, alone
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = f"wheel-{uuid.uuid4().hex[:8]}"
    (tmp_path / "shop.py").write_text(
        textwrap.dedent(f"""
        from celery import Celery
        import jobtrack

        app = Celery("shop", broker={redis_url!r})
        app.conf.update(broker_connection_retry_on_startup=True,
                        task_default_queue={queue!r})
        jobtrack.install(app, {db!r})

        @app.task(name="shop.add")
        @jobtrack.track(job_type="sum", name="Add {{x}} and {{y}}")
        def add(x, y):
            jobtrack.current_job().progress(100)
            return x + y
    """)
    )
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path),
        "HOME": os.environ.get("HOME", str(tmp_path)),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            venv / "bin" / "celery",
            "-A",
            "shop",
            "worker",
            "-P",
            "prefork",
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        job_id = run(
            python, "-c", "import shop; print(shop.add.delay(2, 3).id)", cwd=tmp_path, env=env
        ).strip()
        store = Store(db)
        job = wait_for(
            lambda: (
                (j := store.find_job(job_id)) is not None and j.status is JobStatus.COMPLETED and j
            ),
            60,
            message=f"the wheel's worker finished the job "
            f"({(tmp_path / 'worker.log').read_text()[-2000:]})",
        )
        assert (job.output_data, job.name, job.job_type) == (5, "Add 2 and 3", "sum")
        store.close()
    finally:
        worker.terminate()
        worker.wait(30)

    run(*pip, f"{wheel}[{','.join(EXTRAS)}]", cwd=tmp_path)
    where = run(
        python,
        "-c",
        textwrap.dedent("""
        import jobtrack, jobtrack.web, jobtrack.metrics, jobtrack.flower
        import prometheus_client, flower, uvicorn
        print(jobtrack.__file__)
    """),
        cwd=tmp_path,
    )
    assert str(venv) in where  # the installed wheel, not this checkout
