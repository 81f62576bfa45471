"""The CLI's commands against SQLite and PostgreSQL, on rows a real (in-process) worker
produced, run through Click's runner in this process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner

import jobtrack
from jobtrack.cli import main
from tests.conftest import wait_for


@pytest.fixture
def produced(db_url: str) -> Any:
    app = Celery(f"cli{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name=f"{app.main}.load", bind=True)
    @jobtrack.track(job_type="load", name="Load {source}", ref="source:{source}")
    def load(self: Any, source: str) -> int:
        job = jobtrack.current_job()
        for n in range(5):
            job.item(
                f"{source}-{n}",
                status="error" if n == 2 else "success",
                message="bad" if n == 2 else None,
            )
        return 5

    @app.task(name=f"{app.main}.broken")
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    tracker = jobtrack.install(app, db_url)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        ids = [load.delay("a").id, load.delay("b").id, broken.delay().id]
        wait_for(
            lambda: (
                jobtrack.flush()
                and all(
                    (j := tracker.store.find_job(i)) is not None and j.status.is_terminal
                    for i in ids
                )
            ),
            message="all finished",
        )
    jobtrack.uninstall()
    tracker.store.close()
    return ids


def run(db_url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--database-url", db_url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_every_read_command(db_url: str, produced: list[str]) -> None:
    loaded_a, _, broken = produced
    assert {j["id"] for j in run(db_url, "jobs", "ls", "--json")} >= set(produced)
    assert [
        j["id"]
        for j in run(db_url, "jobs", "ls", "--status", "failed", "--search", "on purpose", "--json")
    ] == [broken]
    shown = run(db_url, "jobs", "show", loaded_a, "--json")
    assert shown["job"]["name"] == "Load a" and shown["job"]["failed_items"] == 1
    assert [
        i["key"] for i in run(db_url, "jobs", "items", loaded_a, "--status", "error", "--json")
    ] == ["a-2"]
    stats = run(db_url, "stats", "--json")
    assert stats["by_type"]["load"] == {"completed": 2}
    watched = run(db_url, "watch", "--once")  # nothing is running now
    assert "running: 0" in watched and "Load a" not in watched
    assert run(db_url, "reap", "--lost-after", "0", "--json") == []
    assert "up to date" in run(db_url, "db", "check")
    assert [j["id"] for j in run(db_url, "jobs", "ls", "--ref", "source:a", "--json")] == [loaded_a]
    assert len(run(db_url, "jobs", "ls", "--ref", "source:*", "--json")) == 2
    if not db_url.startswith("postgresql"):  # PostgreSQL's features: one clear line
        refused = CliRunner().invoke(main, ["--database-url", db_url, "db", "rls", "enable"])
        assert isinstance(refused.exception, jobtrack.NotSupported)
        assert "row-level security needs PostgreSQL" in str(refused.exception)
        refused = CliRunner().invoke(
            main, ["--database-url", db_url, "db", "partition", "--by", "month"]
        )
        assert isinstance(refused.exception, jobtrack.NotSupported)
        assert "partitioning needs PostgreSQL" in str(refused.exception)
    else:  # the shared test database: shown, not changed
        assert "jobs: row-level security off" in run(db_url, "db", "rls")


def test_prune(db_url: str, produced: list[str]) -> None:
    removed = run(db_url, "prune", "--older-than", "0s", "--status", "failed", "--json")
    assert removed == {"failed": 1}
    remaining = {j["id"] for j in run(db_url, "jobs", "ls", "--json")}
    assert produced[2] not in remaining and {produced[0], produced[1]} <= remaining
