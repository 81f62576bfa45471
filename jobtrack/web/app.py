"""The web app: JSON API, live stream, dashboard and ``/metrics`` in one ASGI app.

Serve it with ``jobtrack web`` (uvicorn), or mount it into your own ASGI app::

    from jobtrack.web import create_app
    app.mount("/jobs", create_app(store, settings))

Every link it renders is relative to where it is mounted (the ASGI ``root_path``).
"""

from __future__ import annotations

import contextlib
import logging
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
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import QueryTimeout, ReplicaUnavailable, StoreError
from ..settings import Settings
from ..store import Store, lsn_number, owner_scope, time_limit
from .api import Control, Operations, add_api_routes
from .auth import Auth, Principal
from .pages import NeedLogin, add_pages, redirect
from .stream import ChangeFeed

__all__ = ["LSN_COOKIE", "LSN_HEADER", "create_app"]

log = logging.getLogger("jobtrack.web")

#: Read-your-writes with replicas: after a request that may have written, the primary's
#: WAL position is sent back in this header (and, for the dashboard, this cookie); a
#: read carrying either waits for a replica that has replayed it (``read_wait_s``).
LSN_HEADER = "X-Jobtrack-Lsn"
LSN_COOKIE = "jobtrack_lsn"
#: How long the dashboard's cookie lasts: well past any wait for a replica.
LSN_COOKIE_MAX_AGE_S = 60

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
    sign_in: Callable[[Request], Principal | None] | None = None,
) -> FastAPI:
    """The whole web app over ``store``. ``control`` (see
    :class:`jobtrack.control.JobControl`) retries, cancels, pauses and resumes through a Celery app;
    without it those answer 501.

    An owner-bound token's requests run inside :func:`~jobtrack.store.owner_scope`, so
    with row-level security enabled (PostgreSQL) the database itself keeps owners apart;
    the handlers also filter by owner. ``owner_filter=False`` drops that second layer:
    only for tests that prove the first one alone holds.

    ``sign_in``: who a request is by its host framework's own sign-in (see
    :mod:`jobtrack.contrib.django`), asked when it carries no bearer token; the
    dashboard's token sign-in and the loopback rule are then off."""
    auth = Auth(settings, owner_filter=owner_filter, sign_in=sign_in)
    feed = ChangeFeed(store, poll_interval_s=settings.web_poll_interval_s)
    if settings.read_database_url and store.replicas is None:
        log.warning(
            "read_database_url is set, but the store given to create_app has no replicas: "
            "every read goes to its database (build the store with "
            "jobtrack.tracker.open_store(settings))",
            extra={"action": "replica", "job_id": None},
        )

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
            reads = request.method in ("GET", "HEAD")
            # The whole request (and the stream it may open) runs as that owner's; a
            # read-only one reads a replica, if any (the primary if none can serve).
            with (
                owner_scope(owner) if owner else contextlib.nullcontext(),
                time_limit(settings.web_query_timeout_s),
                store.reading(min_lsn=_written_before(request))
                if reads
                else contextlib.nullcontext(),
            ):
                response = await call_next(request)
            if not reads and response.status_code < 400 and store.replicas is not None:
                await _say_written(request, response, store)
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

    @app.exception_handler(ReplicaUnavailable)
    async def no_replica(request: Request, exc: ReplicaUnavailable) -> Response:
        message = f"No replica can serve this read now: {exc.reason}."
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


def _written_before(request: Request) -> str | None:
    """The newest WAL position the request says it wrote (header or cookie), if any."""
    cookie = (request.cookies.get(LSN_COOKIE) or "").replace("-", "/")
    found = [
        value for value in (request.headers.get(LSN_HEADER), cookie) if value and len(value) <= 20
    ]
    return max(found, key=_lsn_order) if found else None


def _lsn_order(value: str) -> int:
    try:
        return lsn_number(value)
    except ValueError:
        return -1


async def _say_written(request: Request, response: Response, store: Store) -> None:
    """After a request that may have written: the primary's WAL position, so that the
    caller's next read sees it (read-your-writes)."""
    try:
        lsn = await run_in_threadpool(store.primary_lsn)
    except StoreError as exc:
        log.warning(
            "could not read the primary's WAL position: %s",
            exc,
            extra={"action": "read your writes", "job_id": None},
        )
        return
    if lsn is None:
        return
    response.headers[LSN_HEADER] = lsn
    response.set_cookie(
        LSN_COOKIE,
        lsn.replace("/", "-"),  # a cookie value without quotes
        max_age=LSN_COOKIE_MAX_AGE_S,
        path=(request.scope.get("root_path") or "") + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


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
