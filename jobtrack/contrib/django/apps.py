"""The Django app: on start, the project's Celery app is tracked (settings from
Django's; see :mod:`.conf`)."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

log = logging.getLogger("jobtrack.django")


class JobtrackConfig(AppConfig):
    name = "jobtrack.contrib.django"
    label = "jobtrack"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import conf

        self.jobtrack = conf.read()
        install(celery_app(self.jobtrack.celery_app), self.jobtrack)


def celery_app(path: str | None) -> Any:
    """The Celery app ``path`` names, else Celery's current one (the app the usual
    ``proj/celery.py`` creates when the project's package is imported)."""
    if path:
        from django.utils.module_loading import import_string

        return import_string(path)
    from celery import current_app

    return current_app._get_current_object()


def install(app: Any, settings: Any) -> Any:
    """Track ``app`` into the configured database (once per process)."""
    import jobtrack

    tracker = jobtrack.install(app, settings.database_url, **settings.options)
    log.info(
        "jobtrack: tracking Celery app %s",
        app.main,
        extra={"job_id": None, "action": "django_install"},
    )
    return tracker
