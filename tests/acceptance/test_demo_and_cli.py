"""The demo end to end (real prefork worker, filesystem broker, SQLite), then the CLI
reading the rows that worker produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobtrack.migrate import head_revision

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    data = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "JOBTRACK_DEMO_DIR": str(data), "COLUMNS": "200"}
    env.pop("JOBTRACK_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "jobtrack.cli", "demo", "--timeout", "90"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "What failed, and why?" in done.stdout
    assert "Monthly report 2026-10 | KeyError" in done.stdout
    return f"sqlite:///{data / 'jobtrack.db'}"


def cli(db: str, *args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "jobtrack.cli", "--database-url", db, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def test_demo_rows(demo_db: str) -> None:
    jobs = {j["name"]: j for j in cli(demo_db, "jobs", "ls", "--json")}
    assert set(jobs) == {
        "Import products.csv",
        "Import prices.csv",
        "Sync inventory with north",
        "Monthly report 2026-10",
    }
    products = jobs["Import products.csv"]
    assert products["status"] == "completed" and products["processed_items"] == 150
    assert products["progress_percent"] == 100.0 and products["owner_id"] == "u-42"
    assert jobs["Sync inventory with north"]["retries"] == 2
    report = jobs["Monthly report 2026-10"]
    assert report["status"] == "failed" and report["error_type"] == "KeyError"
    assert report["input_data"]["kwargs"]["api_token"] == "[redacted]"


def test_cli_filters_show_items_stats(demo_db: str) -> None:
    failed = cli(demo_db, "jobs", "ls", "--status", "failed", "--json")
    # Every option also comes from JOBTRACK_<COMMAND>_<OPTION>.
    assert cli(demo_db, "jobs", "ls", "--json", env={"JOBTRACK_JOBS_LS_STATUS": "failed"}) == failed
    assert [j["name"] for j in failed] == ["Monthly report 2026-10"]
    imports = cli(demo_db, "jobs", "ls", "--type", "import", "--search", "prices", "--json")
    assert [j["name"] for j in imports] == ["Import prices.csv"]
    products = cli(demo_db, "jobs", "ls", "--owner", "u-42", "--json")[0]
    shown = cli(demo_db, "jobs", "show", products["id"], "--json")
    transitions = [e["status"] for e in shown["events"] if e["stage"] is None]
    assert transitions == ["pending", "running", "completed"]
    assert [e["stage"] for e in shown["events"] if e["stage"]]  # the stages it went through
    assert shown["failing_items"] and all(
        i["error_code"] == "BAD_PRICE" for i in shown["failing_items"]
    )
    errors = cli(demo_db, "jobs", "items", products["id"], "--status", "error", "--json")
    assert len(errors) == products["failed_items"]
    stats = cli(demo_db, "stats", "--json")
    assert stats["by_status"] == {"completed": 3, "failed": 1}
    assert stats["duration_ms_p50"] <= stats["duration_ms_p99"] == stats["duration_ms_max"]
    assert stats["failure_rate"] == 0.25
    text = cli(demo_db, "jobs", "show", failed[0]["id"])
    assert "traceback" in text and "KeyError" in text


def test_cli_errors_are_clear(demo_db: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtrack.cli",
            "--database-url",
            demo_db,
            "jobs",
            "show",
            "no-such-id",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1 and "no job with id 'no-such-id'" in done.stderr
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtrack.cli",
            "--database-url",
            demo_db,
            "jobs",
            "ls",
            "--status",
            "weird",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2 and "weird" in done.stderr


def test_db_commands_on_a_fresh_database(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'fresh.db'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobtrack.cli", "--database-url", db, "db", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    assert "current: (none)" in run("current").stdout
    assert run("check").returncode == 1
    printed = run("upgrade", "--sql")
    assert printed.returncode == 0 and "CREATE TABLE jobs" in printed.stdout
    assert run("check").returncode == 1  # --sql only printed
    assert run("upgrade").returncode == 0
    assert run("check").returncode == 0
    assert f"current: {head_revision()}" in run("current").stdout


def test_metrics_endpoint(demo_db: str) -> None:
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import wait_for

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobtrack.cli",
            "--database-url",
            demo_db,
            "metrics",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/metrics", timeout=2
                ) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        text = wait_for(scrape, 30, interval_s=0.2, message="the metrics server")
    finally:
        server.terminate()
        server.wait(10)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("jobtrack_jobs", (("status", "completed"),))] == 3
    assert samples[("jobtrack_jobs", (("status", "failed"),))] == 1
    assert samples[("jobtrack_jobs", (("status", "paused"),))] == 0  # a label of its own
    assert (
        samples[
            (
                "jobtrack_jobs_finished_total",
                (("job_type", "import"), ("status", "completed"), ("task", "demo.import_products")),
            )
        ]
        == 2
    )
    assert (
        samples[("jobtrack_job_duration_seconds_count", (("task", "demo.import_products"),))] == 2
    )
    assert (
        samples[
            (
                "jobtrack_job_duration_seconds_bucket",
                (("le", "0.1"), ("task", "demo.import_products")),
            )
        ]
        == 0
    )
    assert samples[("jobtrack_failure_ratio", ())] == 0.25
    assert samples[("jobtrack_stuck_jobs", ())] == 0
