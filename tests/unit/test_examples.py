"""Every example in docs/examples runs and prints what the docs say it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_quickstart_example(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), f"sqlite:///{tmp_path / 'q.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("completed Import products.csv 100% 3 items, 1 failed")


def test_mount_dashboard_example(tmp_path: Path) -> None:
    """The mounting example serves its own route and the dashboard under its prefix."""
    script = (
        "from fastapi.testclient import TestClient\n"
        "import mount_dashboard as m\n"
        "m.tracker.upsert_job('job-1', name='Nightly export', task_name='t')\n"
        "with TestClient(m.app, base_url='http://localhost', client=('127.0.0.1', 1)) as c:\n"
        "    page = c.get('/ops/jobs/', params={'tab': 'all'})\n"
        "    print(c.get('/').json()['dashboard'], page.status_code,\n"
        "          'Nightly export' in page.text, 'href=\"/ops/jobs/jobs/job-1\"' in page.text)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            "JOBTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
            "PYTHONPATH": str(EXAMPLES),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/ops/jobs/", "200", "True", "True"]


def test_alerts_example_checks(monkeypatch: Any) -> None:
    """The rule file in the docs is valid, every kind of rule in it."""
    from jobtrack.alerts import KINDS, load

    for name in ("OPS_HOOK_SECRET", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, "example-secret-value")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example.com/services/T/B/X")
    config = load(EXAMPLES / "alerts.toml")
    assert sorted(rule.kind for rule in config.rules) == sorted(KINDS)
    assert set(config.channels) == {"ops-hook", "team-chat", "oncall"}
