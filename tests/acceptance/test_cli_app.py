"""``jobtrack -A proj ...`` uses the database the app's ``jobtrack.install(app, URL)``
names (the README's own pattern), says which database it reads, and never creates an
empty ``./jobtrack.db`` when nothing names one. Real subprocesses, SQLite files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobtrack.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: proj.py installs jobtrack on its own database, which holds one
    job; the folder has no jobtrack.db."""
    url = f"sqlite:///{tmp_path / 'proj-jobs.db'}"
    (tmp_path / "proj.py").write_text(textwrap.dedent(f"""
        from celery import Celery
        import jobtrack

        app = Celery("proj", broker="memory://")
        jobtrack.install(app, {url!r})
    """))
    store = Store(url)
    store.ensure_schema()
    from jobtrack.models import Batch, JobStatus, JobUpdate
    store.write_batch(Batch([JobUpdate.transition("job-in-proj", JobStatus.PENDING,
                                                  name="the app's job")]))
    store.close()
    return tmp_path


def jobtrack_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{cwd}:{ROOT}"}
    return subprocess.run([sys.executable, "-m", "jobtrack.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_app_option_reads_the_database_install_names(project: Path) -> None:
    shown = jobtrack_cli(project, "-A", "proj", "jobs", "show", "job-in-proj")
    assert shown.returncode == 0, shown.stderr
    assert "the app's job" in shown.stdout
    assert "proj-jobs.db (from the install() of proj)" in shown.stderr
    listed = jobtrack_cli(project, "-A", "proj:app", "jobs", "ls", "--json")
    assert '"job-in-proj"' in listed.stdout and listed.stderr == ""
    assert not (project / "jobtrack.db").exists()
    # --database-url on the command line still wins.
    other = project / "other.db"
    Store(f"sqlite:///{other}").ensure_schema()
    found = jobtrack_cli(project, "--database-url", f"sqlite:///{other}", "-A", "proj",
                         "jobs", "ls", "--json")
    assert found.returncode == 0 and found.stdout.strip() == "[]"


def test_nothing_named_is_an_error_not_an_empty_database(project: Path) -> None:
    done = jobtrack_cli(project, "jobs", "ls")
    assert done.returncode != 0
    assert "no jobtrack database here" in done.stderr and "-A" in done.stderr
    assert not (project / "jobtrack.db").exists()


def test_clear_errors_for_bad_app_paths_and_unknown_ids(project: Path) -> None:
    missing_attr = jobtrack_cli(project, "-A", "proj:nosuch", "jobs", "ls")
    assert missing_attr.returncode != 0
    assert "module 'proj' has no attribute 'nosuch'" in missing_attr.stderr
    missing_module = jobtrack_cli(project, "-A", "nomodule:app", "jobs", "ls")
    assert "no module named 'nomodule'" in missing_module.stderr
    unknown = jobtrack_cli(project, "-A", "proj", "jobs", "items", "UNKNOWN")
    assert unknown.returncode != 0 and "no job with id 'UNKNOWN'" in unknown.stderr


def test_missing_tables_say_how_to_create_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    done = jobtrack_cli(tmp_path, "--database-url", f"sqlite:///{empty}", "jobs", "ls")
    assert done.returncode == 1 and "run jobtrack db upgrade" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # the database line, the error
