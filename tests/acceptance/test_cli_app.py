"""``jobtrack -A proj ...`` uses the database the app's ``jobtrack.install(app, URL)``
names (the README's own pattern), says which database it reads, and never creates an
empty ``./jobtrack.db`` when nothing names one. Real subprocesses, SQLite files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobtrack.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: proj.py installs jobtrack on its own database, which holds one
    job; the folder has no jobtrack.db."""
    url = f"sqlite:///{tmp_path / 'proj-jobs.db'}"
    (tmp_path / "proj.py").write_text(
        textwrap.dedent(f"""
        from celery import Celery
        import jobtrack

        app = Celery("proj", broker="memory://")
        jobtrack.install(app, {url!r})
    """)
    )
    store = Store(url)
    store.ensure_schema()
    from jobtrack.models import Batch, JobStatus, JobUpdate

    store.write_batch(
        Batch([JobUpdate.transition("job-in-proj", JobStatus.PENDING, name="the app's job")])
    )
    store.close()
    return tmp_path


def jobtrack_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{cwd}:{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "jobtrack.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
    found = jobtrack_cli(
        project, "--database-url", f"sqlite:///{other}", "-A", "proj", "jobs", "ls", "--json"
    )
    assert found.returncode == 0 and found.stdout.strip() == "[]"


def installed_jobtrack(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``jobtrack`` console script, as a user runs it: unlike ``python -m``, it does
    not put the current folder on the path by itself; nor does PYTHONPATH here."""
    script = Path(sys.executable).parent / "jobtrack"
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_app_is_found_as_celery_finds_it(project: Path, tmp_path_factory: Any) -> None:
    """``jobtrack -A proj`` in the folder holding proj.py, as ``celery -A proj worker``
    works there; ``--workdir`` from anywhere else; ``proj.app`` (an attribute, dotted)."""
    for args in (("-A", "proj"), ("-A", "proj:app"), ("-A", "proj.app")):
        shown = installed_jobtrack(project, *args, "jobs", "show", "job-in-proj")
        assert shown.returncode == 0, (args, shown.stderr)
        assert "the app's job" in shown.stdout
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    away = installed_jobtrack(elsewhere, "-A", "proj", "jobs", "ls", "--json")
    assert away.returncode != 0
    assert f"no module named 'proj' in the current folder ({elsewhere})" in away.stderr
    moved = installed_jobtrack(
        elsewhere, "--workdir", str(project), "-A", "proj", "jobs", "ls", "--json"
    )
    assert moved.returncode == 0, moved.stderr
    assert '"job-in-proj"' in moved.stdout
    (project / "broken.py").write_text("import no_such_dependency\n")
    broken = installed_jobtrack(project, "-A", "broken", "jobs", "ls")
    assert "importing 'broken' failed: ModuleNotFoundError" in broken.stderr
    assert "no_such_dependency" in broken.stderr


def test_a_unique_start_of_an_id_is_taken_for_it(project: Path) -> None:
    """``jobtrack jobs show a74a6b49`` (the short id psql and the list print) shows the
    job; a start two ids share says which, and nothing is acted on."""
    from jobtrack.models import Batch, JobStatus, JobUpdate

    url = f"sqlite:///{project / 'proj-jobs.db'}"
    store = Store(url)
    ids = ["a74a6b49-1f3e-4c1a-9d2b-6f1c2d3e4f51", "a74a6b49-2f3e-4c1a-9d2b-6f1c2d3e4f52"]
    store.write_batch(
        Batch([JobUpdate.transition(i, JobStatus.PENDING, name=f"job {i[-1]}") for i in ids])
    )
    store.close()
    shown = jobtrack_cli(project, "-A", "proj", "jobs", "show", "job-in")
    assert shown.returncode == 0 and "the app's job" in shown.stdout, shown.stderr
    items = jobtrack_cli(project, "-A", "proj", "jobs", "items", "job-", "--json")
    assert items.returncode == 0 and items.stdout.strip() == "[]", items.stderr
    both = jobtrack_cli(project, "-A", "proj", "jobs", "show", "a74a6b49")
    assert both.returncode == 2  # a usage error
    assert "'a74a6b49' is the start of 2 job ids" in both.stderr
    assert ids[0] in both.stderr and ids[1] in both.stderr
    one = jobtrack_cli(project, "-A", "proj", "jobs", "show", "a74a6b49-2")
    assert one.returncode == 0 and "job 2" in one.stdout
    cancelled = jobtrack_cli(project, "-A", "proj", "cancel", "a74a6b49", "a74a6b49-1")
    assert cancelled.returncode == 1  # the ambiguous one failed, the other was cancelled
    assert "is the start of 2 job ids" in cancelled.stderr
    assert f"{ids[0]}: cancelled" in cancelled.stdout
    listed = jobtrack_cli(project, "-A", "proj", "actions", "ls", "--job", ids[0][:12], "--json")
    assert listed.returncode == 0, listed.stderr
    assert f'"{ids[0]}"' in listed.stdout  # its cancel, found by the start of its id


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


def test_spool_lists_replays_and_discards_dead_letters(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from click.testing import CliRunner

    from jobtrack.cli import main
    from jobtrack.models import Batch, Item, ItemStatus, JobStatus, JobUpdate, LogLine
    from jobtrack.spool import Spool

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = Store(url)
    store.ensure_schema()
    now = datetime.now(UTC)
    spool = Spool(tmp_path / "spool", url)
    # Items of jobs that had no row when they were written: refused, set aside.
    fixable = spool.dead_letter(
        Batch(items=[Item("later", "k1", ItemStatus.SUCCESS, processed_at=now)]), "FOREIGN KEY"
    )
    # Log lines alone (of a job that had no row yet): replayed too, not dropped.
    spool.dead_letter(
        Batch(logs=[LogLine("later", now, "INFO", "app", "step one done")]), "FOREIGN KEY"
    )
    spool.dead_letter(
        Batch(items=[Item("never", "k2", ItemStatus.ERROR, processed_at=now)]), "FOREIGN KEY"
    )
    store.write_batch(Batch([JobUpdate.transition("later", JobStatus.RUNNING)]))  # fixed

    def cli(*args: str) -> Any:
        return CliRunner().invoke(
            main,
            ["--database-url", url, "spool", *args],
            env={"JOBTRACK_SPOOL_DIR": str(tmp_path / "spool")},
        )

    listed = cli("ls", "--json")
    assert listed.exit_code == 0 and '"items": 1' in listed.output
    replayed = cli("replay", "--all")
    assert replayed.exit_code == 1  # one is still refused, and says so
    assert f"{fixable.name}: written" in replayed.output and "still refused" in replayed.output
    assert [i.key for i in store.list_items("later")] == ["k1"]
    assert [line.message for line in store.logs.lines("later")] == ["step one done"]
    assert len(spool.dead_letters()) == 1
    assert cli("discard", "--all").exit_code == 0
    assert spool.dead_letters() == []
    store.close()
