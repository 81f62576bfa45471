"""The dashboard and API in the Django site, under a path, signed in by Django's session.

``mount(get_asgi_application(), "/jobs")`` in the project's ``asgi.py``: requests under
the path go to jobtrack's web app (its root path set, so its links stay under it), all
others to Django. A request is signed in when its Django session is a user's who is
active and staff or holds the view permission; the act permission makes them an
operator (retry, cancel, pause, resume); ``JOBTRACK['owner_of']`` gives the owner whose
jobs they see (None: every owner). A page asked for without such a session is sent to
``settings.LOGIN_URL``; the API answers 401. Bearer tokens (``web_tokens``) still work
for scripts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from starlette.requests import Request

from ...control import JobControl
from ...models import is_owner_id
from ...settings import Settings
from ...tracker import active_tracker
from ...web import create_app
from ...web.auth import Principal, Role
from .apps import celery_app

__all__ = ["mount"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
#: Where the mount leaves the principal it read from the Django session.
_PRINCIPAL = "jobtrack.django.principal"
log = logging.getLogger("jobtrack.django")


def principal_of(user: Any, settings: Any) -> Principal | None:
    """Who ``user`` is to the dashboard, or None when they may not open it."""
    if not (user.is_authenticated and user.is_active):
        return None
    if not (user.is_staff or user.has_perm(settings.view_permission)):
        return None
    role = Role.OPERATOR if user.has_perm(settings.act_permission) else Role.VIEWER
    owner = settings.owner_of(user) if settings.owner_of is not None else None
    if owner is not None and not (isinstance(owner, str) and is_owner_id(owner)):
        # Not one owner id (empty, "*", too long for a job row...): bound to nothing, the
        # user would see every owner's jobs; so the dashboard is closed to them.
        log.warning(
            "JOBTRACK owner_of gave %r for %s: not one owner id; dashboard refused",
            owner if not isinstance(owner, str) else owner[:40],
            user.get_username(),
            extra={"job_id": None, "action": "django"},
        )
        return None
    return Principal(f"django:{user.get_username()}", role, owner)


def _session_user(scope: Scope) -> Any:
    """The user of the request's Django session (anonymous when it has none)."""
    request = HttpRequest()
    cookies = SimpleCookie()
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            cookies.load(value.decode("latin-1"))
    key = cookies.get(django_settings.SESSION_COOKIE_NAME)
    engine = import_module(django_settings.SESSION_ENGINE)
    request.session = engine.SessionStore(key.value if key else None)
    return get_user(request)


def mount(django_app: ASGIApp, path: str = "/jobs") -> ASGIApp:
    """``django_app`` with jobtrack's web app under ``path`` (see the module's text)."""
    prefix = "/" + path.strip("/")
    config = apps.get_app_config("jobtrack")
    settings = config.jobtrack
    tracker = active_tracker()
    app = celery_app(settings.celery_app)
    resolved: Settings = tracker.settings

    def sign_in(request: Request) -> Principal | None:
        found: Principal | None = request.scope.get(_PRINCIPAL)
        return found

    web = create_app(tracker.store, resolved, control=JobControl(app, tracker), sign_in=sign_in)

    def who(scope: Scope) -> Principal | None:
        return principal_of(_session_user(scope), settings)

    async def application(scope: Scope, receive: Any, send: Any) -> None:
        route = scope.get("path", "")
        if scope["type"] == "lifespan":
            await web(scope, receive, send)
            return
        if scope["type"] != "http" or not (route == prefix or route.startswith(prefix + "/")):
            await django_app(scope, receive, send)
            return
        principal = await sync_to_async(who, thread_sensitive=True)(scope)
        inner = dict(scope)
        inner[_PRINCIPAL] = principal
        inner["root_path"] = scope.get("root_path", "") + prefix
        rest = route[len(prefix) :] or "/"
        if principal is None and not rest.startswith(("/api/", "/static/", "/metrics")):
            if scope.get("method") == "GET":
                target = f"{django_settings.LOGIN_URL}?next={quote(route)}"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 302,
                        "headers": [(b"location", target.encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
        await web(inner, receive, send)

    return application
