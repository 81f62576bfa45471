"""The JSON API over the jobs table (FastAPI). Reads go through the store only.

Security model:

* Bearer tokens from the ``web_tokens`` setting, each with a role (``viewer`` reads,
  ``operator`` also retries and cancels) and optionally an owner id. Without configured
  tokens only loopback clients are served (as operators); with tokens, every request needs
  one (401 otherwise).
* A token bound to an owner sees only that owner's jobs: another owner's job answers 404,
  exactly as a missing one.
* Every filter is a bound parameter; bad values answer 422 with the reason, unknown ids
  404, an unreachable database 503: never a 500 for input.
* A per-token (or per-address) rate limit answers 429.

State-changing requests use bearer tokens, never cookies, so a browser page elsewhere
cannot forge them (no CSRF surface).

(No ``from __future__ import annotations`` here: FastAPI reads the endpoints'
annotations at run time, including aliases local to ``create_api``.)
"""


import base64
import binascii
import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from ..errors import ConfigurationError, JobNotFound, JobtrackError, StoreError
from ..models import Job
from ..settings import Settings
from ..store import Store

__all__ = ["Principal", "create_api", "parse_tokens"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,255}$"


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"


class StatusFilter(str, Enum):
    pending = "pending"
    running = "running"
    retrying = "retrying"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    lost = "lost"


class ItemStatusFilter(str, Enum):
    success = "success"
    error = "error"
    skipped = "skipped"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and the owner id a token is bound to (if any)."""

    name: str
    role: Role
    owner_id: str | None = None


def parse_tokens(text: str) -> dict[str, Principal]:
    """``token=role`` or ``token=role:owner_id``, comma-separated."""
    tokens: dict[str, Principal] = {}
    for n, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        token, _, grant = part.partition("=")
        role, _, owner = grant.partition(":")
        if not token or role not in (r.value for r in Role):
            raise ConfigurationError("web_tokens", f"entry {n + 1}",
                                     "token=viewer|operator[:owner_id]")
        tokens[token] = Principal(f"token {n + 1}", Role(role), owner or None)
    return tokens


class _RateLimiter:
    """A fixed one-minute window per key; small and good enough for one process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def allow(self, key: str) -> bool:
        minute = int(time.monotonic() // 60)
        with self._lock:
            window, count = self._windows.get(key, (minute, 0))
            if window != minute:
                window, count = minute, 0
            self._windows[key] = (window, count + 1)
            return count + 1 <= self.per_minute


def _encode_cursor(job: Job) -> str:
    assert job.created_at is not None
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        moment, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(moment), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(422, "cursor is not one this API returned") from exc


def _job_dict(job: Job) -> dict[str, Any]:
    return dataclasses.asdict(job)


def create_api(store: Store, settings: Settings, *,
               control: Callable[[str, str, bool], str] | None = None) -> FastAPI:
    """The API app. ``control(action, job_id, terminate)`` performs "retry"/"cancel"
    through a Celery app (see :mod:`jobtrack.control`); without it those answer 501."""
    tokens = parse_tokens(settings.web_tokens)
    limiter = _RateLimiter(settings.web_rate_limit_per_min)
    api = FastAPI(title="jobtrack", version="1", docs_url="/api/docs",
                  openapi_url="/api/openapi.json")

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        client = request.client.host if request.client else ""
        if tokens:
            scheme, _, token = header.partition(" ")
            who = tokens.get(token) if scheme.lower() == "bearer" else None
            if who is None:
                raise HTTPException(401, "a valid bearer token is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            key = token
        elif client in LOOPBACK:
            who, key = Principal("loopback", Role.OPERATOR), client
        else:
            raise HTTPException(401, "no API tokens are configured: only loopback clients "
                                     "are served (set JOBTRACK_WEB_TOKENS)")
        if not limiter.allow(key):
            raise HTTPException(429, "rate limit exceeded; try again in a minute",
                                headers={"Retry-After": "60"})
        return who

    Who = Annotated[Principal, Depends(principal)]
    JobId = Annotated[str, Path(pattern=ID_PATTERN, description="the Celery task id")]

    def visible_job(job_id: str, who: Principal) -> Job:
        job = store.find_job(job_id)
        if job is None or (who.owner_id is not None and job.owner_id != who.owner_id):
            raise HTTPException(404, f"no job with id {job_id!r}")
        return job

    @api.exception_handler(StoreError)
    def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": "the tracking database is unavailable"}, 503)

    @api.get("/api/jobs")
    def list_jobs(
        who: Who,
        status: Annotated[list[StatusFilter] | None, Query()] = None,
        job_type: Annotated[str | None, Query(max_length=100)] = None,
        owner_id: Annotated[str | None, Query(max_length=255)] = None,
        task_name: Annotated[str | None, Query(max_length=255)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        if who.owner_id is not None:
            if owner_id not in (None, who.owner_id):
                return {"jobs": [], "next_cursor": None}
            owner_id = who.owner_id
        found = store.list_jobs(
            status=[s.value for s in status] if status else None, job_type=job_type,
            owner_id=owner_id, task_name=task_name, queue=queue, since=since, until=until,
            search=search, limit=limit + 1,
            before=_decode_cursor(cursor) if cursor else None)
        page, more = found[:limit], len(found) > limit
        return {"jobs": [_job_dict(j) for j in page],
                "next_cursor": _encode_cursor(page[-1]) if more else None}

    @api.get("/api/jobs/{job_id}")
    def get_job(job_id: JobId, who: Who) -> dict[str, Any]:
        """The job's row and its attempt/transition trace."""
        job = visible_job(job_id, who)
        return {"job": _job_dict(job),
                "events": [dataclasses.asdict(e) for e in store.list_events(job_id)]}

    @api.get("/api/jobs/{job_id}/items")
    def get_items(
        job_id: JobId, who: Who,
        status: ItemStatusFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        visible_job(job_id, who)
        items = store.list_items(job_id, status=status.value if status else None,
                                 limit=limit, offset=offset)
        return {"items": [dataclasses.asdict(i) for i in items]}

    @api.get("/api/stats")
    def stats(who: Who, since: datetime | None = None) -> dict[str, Any]:
        if who.owner_id is not None:
            raise HTTPException(403, "statistics cover every owner; this token is bound "
                                     "to one")
        return dataclasses.asdict(store.stats(since=since))

    def act(action: str, job_id: str, who: Who, terminate: bool = False) -> dict[str, Any]:
        if who.role is not Role.OPERATOR:
            raise HTTPException(403, f"{action} needs the operator role")
        visible_job(job_id, who)
        if control is None:
            raise HTTPException(501, f"{action} needs the Celery app (jobtrack web -A)")
        try:
            return {"job_id": job_id, "result": control(action, job_id, terminate)}
        except JobNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except JobtrackError as exc:
            raise HTTPException(409, str(exc)) from exc

    @api.post("/api/jobs/{job_id}/retry")
    def retry(job_id: JobId, who: Who) -> dict[str, Any]:
        """Publish a failed, cancelled or lost job again as a new job."""
        return act("retry", job_id, who)

    @api.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: JobId, who: Who, terminate: bool = False) -> dict[str, Any]:
        """Revoke a job (``terminate`` also stops a running one)."""
        return act("cancel", job_id, who, terminate)

    return api
