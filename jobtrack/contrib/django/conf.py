"""What ``settings.JOBTRACK`` says, read once: the only place jobtrack reads Django's
settings. Keys: ``database`` (a ``DATABASES`` alias, default ``"default"``) or
``database_url``; ``celery_app`` (a dotted path; default: Celery's current app, which the
usual ``proj/celery.py`` makes); ``owner_of`` (a dotted path to a callable taking a user
and giving the owner id they see, or None for every owner); ``view_permission`` and
``act_permission`` (who may open the dashboard, and act on jobs there and in the admin);
every other key is a jobtrack setting (see docs/configuration.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string
from sqlalchemy.engine import URL

from ...errors import ConfigurationError

__all__ = ["DjangoSettings", "database_url", "read"]

#: Django's database backends and the URL scheme jobtrack takes for each.
_SCHEMES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.mysql": "mysql",
    "django.db.backends.sqlite3": "sqlite",
}
_OWN_KEYS = frozenset(
    {"database", "database_url", "celery_app", "owner_of", "view_permission", "act_permission"}
)


@dataclass(frozen=True)
class DjangoSettings:
    database_url: str
    #: The ``DATABASES`` alias jobtrack's tables are in (None: a URL of its own).
    alias: str | None
    celery_app: str | None
    owner_of: Callable[[Any], str | None] | None
    view_permission: str
    act_permission: str
    options: dict[str, Any] = field(default_factory=dict)


def database_url(alias: str) -> str:
    """The URL of the ``DATABASES`` entry ``alias``, for jobtrack's store."""
    databases = getattr(django_settings, "DATABASES", {})
    if alias not in databases:
        raise ConfigurationError("JOBTRACK['database']", alias, "an alias of DATABASES")
    entry = databases[alias]
    scheme = _SCHEMES.get(entry.get("ENGINE", ""))
    if scheme is None:
        raise ConfigurationError(
            "JOBTRACK['database']",
            alias,
            "a PostgreSQL, MySQL/MariaDB or SQLite database (or JOBTRACK['database_url'])",
        )
    if scheme == "sqlite":
        return f"sqlite:///{entry['NAME']}"
    port = entry.get("PORT")
    return URL.create(
        scheme,
        username=entry.get("USER") or None,
        password=entry.get("PASSWORD") or None,
        host=entry.get("HOST") or "localhost",
        port=int(port) if port else None,
        database=entry.get("NAME"),
    ).render_as_string(hide_password=False)


def read() -> DjangoSettings:
    given: dict[str, Any] = dict(getattr(django_settings, "JOBTRACK", {}) or {})
    if "database_url" in given and "database" in given:
        raise ConfigurationError(
            "JOBTRACK", "database and database_url", "one of them (an alias or a URL)"
        )
    alias = None if "database_url" in given else str(given.get("database", "default"))
    url = str(given["database_url"]) if alias is None else database_url(alias)
    owner_of = given.get("owner_of")
    if isinstance(owner_of, str):
        owner_of = import_string(owner_of)
    if owner_of is not None and not callable(owner_of):
        raise ConfigurationError("JOBTRACK['owner_of']", repr(owner_of), "a callable or its path")
    return DjangoSettings(
        database_url=url,
        alias=alias,
        celery_app=given.get("celery_app"),
        owner_of=owner_of,
        view_permission=str(given.get("view_permission", "jobtrack.view_job")),
        act_permission=str(given.get("act_permission", "jobtrack.act_on_jobs")),
        options={k: v for k, v in given.items() if k not in _OWN_KEYS},
    )
