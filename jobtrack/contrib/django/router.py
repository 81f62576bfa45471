"""Reads of jobtrack's models go to the database alias its tables are in
(``JOBTRACK['database']``); Django never migrates or writes them. Add
``"jobtrack.contrib.django.router.JobtrackRouter"`` to ``DATABASE_ROUTERS`` when that
alias is not ``default``."""

from __future__ import annotations

from typing import Any

from django.apps import apps


def _alias() -> str:
    return apps.get_app_config("jobtrack").jobtrack.alias or "default"


class JobtrackRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return _alias() if model._meta.app_label == "jobtrack" else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return _alias() if model._meta.app_label == "jobtrack" else None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return None
