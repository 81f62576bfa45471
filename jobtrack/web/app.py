"""The web app: JSON API, live stream, dashboard and ``/metrics`` in one ASGI app.

Serve it with ``jobtrack web`` (uvicorn), or mount it into your own ASGI app::

    from jobtrack.web import create_app
    app.mount("/jobs", create_app(store, settings))

Every link it renders is relative to where it is mounted (the ASGI ``root_path``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import QueryTimeout, StoreError
from ..settings import Settings
from ..store import Store, owner_scope, time_limit
from .api import Control, Operations, add_api_routes
from .auth import Auth
from .pages import NeedLogin, add_pages, redirect
from .stream import ChangeFeed

__all__ = ["create_app"]

#: Sent with every response: no inline script or style can run, nothing is framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_app(
    store: Store,
    settings: Settings,
    *,
    control: Control | None = None,
    owner_filter: bool = True,
) -> FastAPI:
    """The whole web app over ``store``. ``control`` (see
    :class:`jobtrack.control.JobControl`) retries, cancels, pauses and resumes through a Celery app;
    without it those answer 501.

    An owner-bound token's requests run inside :func:`~jobtrack.store.owner_scope`, so
    with row-level security enabled (PostgreSQL) the database itself keeps owners apart;
    the handlers also filter by owner. ``owner_filter=False`` drops that second layer:
    only for tests that prove the first one alone holds."""
    auth = Auth(settings, owner_filter=owner_filter)
    feed = ChangeFeed(store, poll_interval_s=settings.web_poll_interval_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        feed.close()

    # The API docs are rendered here from the schema (no script from elsewhere, the
    # same headers as every page); only the schema itself is served as JSON.
    app = FastAPI(
        title="jobtrack",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        dependencies=[Depends(_no_nul_characters)],
    )
    app.state.feed = feed
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    ops = Operations(store, settings, control)
    add_api_routes(app, store, auth, feed, ops, settings)
    render = add_pages(app, store, auth, settings, ops)
    _add_metrics(app, store, auth, settings)

    def is_api(request: Request) -> bool:
        return request.url.path.startswith((request.scope.get("root_path") or "") + "/api/")

    @app.middleware("http")
    async def edge(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Every request: the rate limits of :meth:`Auth.gate` (static files and the
        schema included), then the security headers on whatever is answered."""
        try:
            auth.gate(request)
        except HTTPException as exc:
            response: Response = JSONResponse(
                {"detail": exc.detail}, exc.status_code, headers=exc.headers
            )
        else:
            identity = getattr(request.state, "identity", None)
            owner = identity.principal.owner_id if identity is not None else None
            # The whole request (and the stream it may open) runs as that owner's.
            with (
                owner_scope(owner) if owner else contextlib.nullcontext(),
                time_limit(settings.web_query_timeout_s),
            ):
                response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(QueryTimeout)
    async def too_slow(request: Request, exc: QueryTimeout) -> Response:
        message = (
            f"This read took longer than {exc.limit_s:g} s and was stopped: narrow the "
            "search or the filters (web_query_timeout_s)."
        )
        if is_api(request):
            return JSONResponse({"detail": message}, 503, headers={"Retry-After": "5"})
        return render(request, "error.html", {"code": 503, "message": message}, 503)

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> Response:
        if is_api(request):
            return JSONResponse({"detail": "the tracking database is unavailable"}, 503)
        return render(
            request,
            "error.html",
            {"code": 503, "message": "The tracking database is unavailable."},
            503,
        )

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        then = "" if exc.then == "/" else "?" + urlencode({"next": exc.then})
        return redirect(request, f"/login{then}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request) or not _wants_html(request):
            return await http_exception_handler(request, exc)
        return render(
            request,
            "error.html",
            {"code": exc.status_code, "message": str(exc.detail)},
            exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Response:
        if is_api(request) or not _wants_html(request):
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return render(
            request, "error.html", {"code": 400, "message": f"Bad request: {problems}"}, 400
        )

    return app


def _no_nul_characters(request: Request) -> None:
    """No stored value holds a NUL character, and PostgreSQL refuses them in queries:
    a query parameter carrying one is a client error, said plainly."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise HTTPException(422, f"query parameter {name!r} contains a NUL character")


def _wants_html(request: Request) -> bool:
    return "application/json" not in request.headers.get("accept", "")


def _add_metrics(app: FastAPI, store: Store, auth: Auth, settings: Settings) -> None:
    """``GET /metrics``: the Prometheus metrics of :mod:`jobtrack.metrics` (needs the
    prometheus extra; a token bound to an owner may not read them)."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import CollectorRegistry

        from ..metrics import JobtrackCollector
    except ImportError:
        registry = None
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobtrackCollector(store, stale_after_s=settings.lost_after_s))

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics(request: Request) -> Response:
        who = auth.require(request)
        if who.owner_id is not None:
            raise HTTPException(403, "metrics cover every owner; this token is bound to one")
        if registry is None:
            raise HTTPException(501, "metrics need the prometheus extra")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
