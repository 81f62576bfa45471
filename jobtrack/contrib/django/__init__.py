"""jobtrack inside a Django project (the ``django`` extra; see docs/django.md).

Add ``"jobtrack.contrib.django"`` to ``INSTALLED_APPS``: the project's Celery app is
tracked with settings read from Django's (``JOBTRACK = {...}``, the database a
``DATABASES`` alias or a URL), the admin lists jobs, items and events read-only with
retry and cancel through jobtrack's audited actions, and :func:`mount` serves the
dashboard under a path of the site, signed in by Django's own session.
"""

from __future__ import annotations

from typing import Any

__all__ = ["mount"]


def mount(django_app: Any, path: str = "/jobs") -> Any:
    """The project's ASGI application with jobtrack's dashboard and API under ``path``
    (see :func:`jobtrack.contrib.django.asgi.mount`)."""
    from .asgi import mount as _mount

    return _mount(django_app, path)
