"""The example Django project (docs/examples/django_site) on the database the outer test
made (DATABASE_URL), Django's own tables migrated, a real Celery worker in this process."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SITE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "django_site"
sys.path.insert(0, str(SITE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

import django  # noqa: E402

django.setup()

from celery.contrib.testing.worker import start_worker  # noqa: E402
from django.core.management import call_command  # noqa: E402

import jobtrack  # noqa: E402
from jobtrack.tracker import active_tracker  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def migrated() -> None:
    call_command("migrate", verbosity=0, interactive=False)
    active_tracker().store.ensure_schema()


@pytest.fixture(scope="session")
def celery_app() -> Any:
    from proj.celery import app

    return app


@pytest.fixture(scope="session")
def worker(celery_app: Any) -> Iterator[Any]:
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield celery_app


@pytest.fixture
def store() -> Any:
    return active_tracker().store


@pytest.fixture
def tracker() -> jobtrack.Tracker:
    return active_tracker()
