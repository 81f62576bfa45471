"""The example Django project (docs/examples/django_site, the one docs/django.md shows)
on PostgreSQL and on MariaDB: each in a process of its own (Django's settings and
connections are per process), on a database of its own, with Django's test client and a
real Celery worker (tests/django/scenarios)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.conftest import fresh_mysql_database, fresh_pg_database

pytest.importorskip("django")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "database",
    [
        pytest.param(fresh_pg_database, id="postgresql"),
        pytest.param(fresh_mysql_database, id="mariadb"),
    ],
)
def test_the_example_site(database: Callable[[], AbstractContextManager[str]]) -> None:
    with database() as url:
        if url.startswith("mariadb"):
            pytest.importorskip("MySQLdb")  # Django's MySQL driver (mysqlclient)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/django/scenarios", "-q", "-p", "no:randomly"],
            cwd=ROOT,
            env={
                **os.environ,
                "JOBTRACK_DJANGO_SCENARIOS": "1",
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": "memory://",
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout
