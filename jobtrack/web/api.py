"""The JSON API over the jobs table (FastAPI). Reads go through the store only.

Who may call what is settled in :mod:`jobtrack.web.auth`. Here:

* A token bound to an owner sees only that owner's jobs: another owner's job answers
  404, exactly as a missing one.
* Every filter is a bound parameter; bad values answer 422 with the reason, unknown ids
  404, an unreachable database 503: never a 500 for input.
* ``GET /api/stream`` is the live feed (Server-Sent Events, see
  :mod:`jobtrack.web.stream`).

(No ``from __future__ import annotations`` here: FastAPI reads the endpoints'
annotations at run time, including aliases local to ``add_api_routes``.)
"""

import base64
import binascii
import dataclasses
import json
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..actions import (
    Actor,
    bulk_filter,
    change_workers,
    perform,
    replay_job,
    run_in_background,
    start_bulk,
)
from ..control import JobControl, NotPublishable, NotReplayable, UnknownTask
from ..errors import AmbiguousJobId, JobNotFound, JobtrackError
from ..fleet import Survey, survey
from ..insights import BadWindow, report, window
from ..models import (
    Action,
    Count,
    FailureGroup,
    Job,
    JobFilter,
    JobStatus,
    as_utc,
    stage_spans,
)
from ..settings import Settings
from ..store import Store, time_limit
from ..store.failures import HOURS as FAILURE_HOURS
from ..tracker import Tracker
from ..workflows import Tree, build_tree, summarize
from .auth import Auth, Principal
from .stream import ChangeFeed, job_event

__all__ = [
    "COUNT_CAP",
    "ID_PATTERN",
    "Control",
    "Operations",
    "act",
    "action_json",
    "add_api_routes",
    "decode_cursor",
    "encode_cursor",
    "failure_groups",
    "job_id_of",
    "replay_for",
    "searched",
    "visible_job",
    "workflow_tree",
]

#: Retry, cancel, pause and resume through a Celery app (:class:`jobtrack.control.JobControl`).
Control = JobControl

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,255}$"
#: Tabs count each status up to this many jobs, then show "10,000+": the count stops
#: early in the status index instead of reading every row on each live refresh. Under
#: a search that many jobs match, an estimate instead ("~4,300,000"; see
#: ``Store.tab_counts``).
COUNT_CAP = 10_000


class StatusFilter(StrEnum):
    pending = "pending"
    running = "running"
    retrying = "retrying"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    lost = "lost"
    paused = "paused"


class ItemStatusFilter(StrEnum):
    success = "success"
    error = "error"
    skipped = "skipped"
    pending = "pending"


def encode_cursor(job: Job) -> str:
    assert job.created_at is not None
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        moment, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return as_utc(datetime.fromisoformat(moment)), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(422, "cursor is not one this API returned") from exc


class StreamSlots:
    """Open streams counted per principal and per client address."""

    def __init__(self, max_per_key: int) -> None:
        self.limit = max_per_key
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, principal: str, client: str) -> Callable[[], None] | None:
        """A slot for a new stream (its release, safe to call more than once), or None
        when the principal or the address has all its streams open."""
        keys = (f"principal {principal}", f"client {client}")
        with self._lock:
            if any(self._open[key] >= self.limit for key in keys):
                return None
            self._open.update(keys)
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._open.subtract(keys)
                for key in keys:
                    if self._open[key] <= 0:
                        del self._open[key]

        return release

    def open(self) -> int:
        with self._lock:
            return sum(n for key, n in self._open.items() if key.startswith("principal "))


def _oldest_first(job: Job) -> Any:
    return job.updated_at or job.created_at or datetime.min.replace(tzinfo=UTC)


def utc(value: datetime | None, name: str) -> datetime | None:
    """A query's date in UTC; a date with no UTC equivalent (year 1 at +14:00, year
    9999 at -14:00) is bad input, 422, not a database error."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


#: Shorter searches cannot use the trigram index (it matches three characters at a
#: time): they would read every row, so they are refused with a clear 422.
MIN_SEARCH_CHARS = 3


def searched(search: str | None) -> str | None:
    """A search as given, or 422 when it is too short to search for (an empty one is
    no search)."""
    if not search:
        return None
    if len(search) < MIN_SEARCH_CHARS:
        raise HTTPException(
            422, f"search: at least {MIN_SEARCH_CHARS} characters (a name, an error or an id)"
        )
    return search


def job_id_of(store: Store, given: str, who: Principal) -> str:
    """The whole id of the job ``given`` names among those the caller may see: its id,
    or a unique start of it (see :meth:`Store.resolve_id`). 404 for none (another
    owner's job answers as a missing one), 409 naming the candidates when the start is
    ambiguous."""
    try:
        return store.resolve_id(given, owner_id=who.owner_id)
    except JobNotFound as exc:
        raise HTTPException(404, f"no job with id {given!r}") from exc
    except AmbiguousJobId as exc:
        raise HTTPException(409, str(exc)) from exc


def visible_job(store: Store, job_id: str, who: Principal) -> Job:
    """The job ``job_id`` names (its id, or a unique start of it), if it exists and the
    caller may see it; else 404 (the same answer), or 409 for an ambiguous start."""
    job = store.find_job(job_id_of(store, job_id, who))
    if job is None or (who.owner_id is not None and job.owner_id != who.owner_id):
        raise HTTPException(404, f"no job with id {job_id!r}")
    return job


def workflow_tree(store: Store, job_id: str, who: Principal) -> Tree:
    """The tree of the workflow the job belongs to, as far as the caller may see it
    (an owner-bound caller: its owner's jobs only); 404 like :func:`visible_job`."""
    job_id = job_id_of(store, job_id, who)
    try:
        found = store.workflows.jobs(job_id, owner_id=who.owner_id)
    except JobNotFound as exc:
        raise HTTPException(404, f"no job with id {job_id!r}") from exc
    return build_tree(found.jobs, job_id, truncated=found.truncated)


def rollup_json(counts: dict[str, int] | None) -> dict[str, Any]:
    """A root's roll-up as the list shows it: nothing for a job with nothing under it."""
    if not counts:
        return {}
    return {
        "workflow": {"total": sum(counts.values()), "counts": counts, "summary": summarize(counts)}
    }


def insights_report(
    store: Store,
    who: Principal,
    *,
    by: str,
    since: str,
    every: str,
    key: str | None = None,
    limit: int = 50,
) -> Any:
    """The Insights figures for the caller (an owner-bound one: its owner's jobs);
    422 with the allowed range for a window or bucket out of bounds."""
    try:
        span = window(since, every)
        return report(store, span, by=by, owner_id=who.owner_id, key=key, limit=limit)
    except BadWindow as exc:
        raise HTTPException(422, str(exc)) from exc


def failure_groups(
    store: Store, who: Principal, filters: dict[str, str | None], *, limit: int = 50
) -> tuple[list[FailureGroup], datetime]:
    """The failure groups the caller may see (an owner-bound caller: its owner's; one
    that names another owner: none) and when their hours start."""
    filters = dict(filters)
    now = datetime.now(UTC)
    since = now - timedelta(hours=FAILURE_HOURS)
    if who.owner_id is not None:
        if filters.get("owner_id") not in (None, who.owner_id):
            return [], since
        filters["owner_id"] = who.owner_id
    return store.failures.groups(JobFilter.of(**filters), now=now, limit=limit), since


def fleet_for(ops: "Operations", who: Principal) -> Survey:
    """Workers and queues now (every owner's: not for an owner-bound caller)."""
    if who.owner_id is not None:
        raise HTTPException(403, "workers and queues serve every owner; this token is bound to one")
    return survey(ops.app, ops.store, now=datetime.now(UTC))


def survey_json(found: Survey, part: str) -> dict[str, Any]:
    """The workers (with the rate limits in effect) or the queues, as the API shows them."""
    listed = [
        {**dataclasses.asdict(x), **({"paused": x.paused} if part == "queues" else {})}
        for x in getattr(found, part)
    ]
    extra = {"rate_limits": found.rate_limits} if part == "workers" else {}
    return {
        "at": found.at,
        "inspected": found.inspected,
        "answered": found.answered,
        part: listed,
        **extra,
    }


def control_for(ops: "Operations", who: Principal, action: str, **given: Any) -> str:
    """Change what the workers do on behalf of ``who``, recorded in the audit trail:
    403 without the operator role or for an owner-bound token, 501 without the app,
    409 when no worker did it."""
    operator(who, action)
    if who.owner_id is not None:
        raise HTTPException(403, "workers serve every owner; this token is bound to one")
    ops.needs_app(action)
    try:
        return change_workers(ops.app, ops.tracker(), actor(who), action, **given)
    except JobtrackError as exc:
        raise HTTPException(409, str(exc)) from exc


def actor(who: Principal) -> Actor:
    """The audit trail's name for a caller."""
    return Actor(who.name, who.role.value, who.owner_id)


def operator(who: Principal, what: str) -> None:
    if not who.may_act:
        raise HTTPException(403, f"{what} needs the operator role")


class Operations:
    """What the API and the dashboard act through: the Celery app's control when there
    is one (``jobtrack -A app web``), else only what needs no app (delete, reading the
    audit trail)."""

    def __init__(self, store: Store, settings: Settings, control: Control | None) -> None:
        self.store = store
        self.control = control
        self.settings = settings
        self._tracker: Tracker | None = control.tracker if control is not None else None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        return self.control.app if self.control is not None else None

    def tracker(self) -> Tracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = Tracker(self.settings, store=self.store)
            return self._tracker

    def needs_app(self, what: str) -> None:
        if self.control is None:
            raise HTTPException(501, f"{what} needs the Celery app (jobtrack -A app web)")


def act(ops: Operations, action: str, job_id: str, who: Principal, **options: bool) -> str:
    """Retry, cancel, pause, resume or delete on behalf of ``who`` (``options`` are the
    action's keywords), recorded in the audit trail; HTTP errors for what is refused:
    403 without the operator role, 404 for a job the caller cannot see, 409 for one that
    cannot take the action now."""
    operator(who, action)
    job_id = visible_job(ops.store, job_id, who).id
    if action != "delete":
        ops.needs_app(action)
    try:
        return perform(ops.app, ops.tracker(), actor(who), action, job_id, **options)
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except JobtrackError as exc:
        raise HTTPException(409, str(exc)) from exc


def replay_for(ops: Operations, job_id: str, who: Principal, body: "Replay") -> str:
    """Replay a job on behalf of ``who`` (the API's and the dashboard's); returns the new
    job's id. 403 without the operator role, or for edited arguments of a task not in
    ``web_publishable_tasks`` (as ``POST /api/jobs``); 404 for a job the caller cannot
    see, 409 for input that cannot be replayed as given, 501 without the app."""
    operator(who, "replay")
    job_id = visible_job(ops.store, job_id, who).id
    ops.needs_app("replay")
    try:
        return replay_job(
            ops.app,
            ops.tracker(),
            actor(who),
            job_id,
            args=body.args,
            kwargs=body.kwargs,
            allowed=ops.settings.web_publishable_tasks,
        )
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except NotReplayable as exc:
        raise HTTPException(403, str(exc)) from exc
    except JobtrackError as exc:
        raise HTTPException(409, str(exc)) from exc


def action_json(action: Action) -> dict[str, Any]:
    """An audit entry as the API shows it, with its progress."""
    settled = action.done + action.skipped + action.failed
    return {
        **dataclasses.asdict(action),
        "progress_percent": round(100.0 * settled / action.matched, 1) if action.matched else None,
    }


class BulkAction(BaseModel):
    """The body of ``POST /api/actions``."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "cancel", "pause", "resume", "delete"] = Field(
        description="what to do to every job the filter matches"
    )
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="the list's filters: status, job_type, task_name, queue, owner_id, ref, "
        "stage, since, until, search, ids, workflow (a root job id: its whole workflow), "
        "group (a group id), handled (true or false), error_group (a failure group's key)",
    )
    all: bool = Field(default=False, description="true with an empty filter: every job")
    terminate: bool = Field(default=False, description="cancel: also SIGTERM running jobs")
    include_retried: bool = Field(
        default=False,
        description="retry: also the jobs an operator retried (or replayed) already, "
        "which are left out otherwise",
    )


class Replay(BaseModel):
    """The body of ``POST /api/jobs/{id}/replay`` (empty: the recorded arguments)."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


#: Deepest nesting a JSON body may have (arrays and objects). A body deeper than this
#: is bad input (422), however small: the parser and the validation recurse per level,
#: and a job's recorded input keeps far fewer levels anyway.
MAX_BODY_DEPTH = 64


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests arrays or objects deeper than ``limit``;
    no recursion of its own."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """``raw`` as ``model``, or 422 with the JSON parse error or the fields' problems
    (also for a body nested deeper than :data:`MAX_BODY_DEPTH`)."""
    too_deep = HTTPException(422, f"the body is nested deeper than {MAX_BODY_DEPTH} levels")
    try:
        data = json.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        raise HTTPException(422, f"the body is not JSON: {exc}") from exc
    if _nested_deeper(data, MAX_BODY_DEPTH):
        raise too_deep
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        raise HTTPException(422, detail) from exc


def start_action(ops: Operations, who: Principal, body: BulkAction) -> Action:
    """Record a bulk action and snapshot its jobs (then run it in the background): 403,
    422 (an empty or unknown filter field), 501 without the app."""
    operator(who, body.action)
    if body.action != "delete":
        ops.needs_app(body.action)
    try:
        where = JobFilter.from_json(body.filter)
        searched(where.search)
        tracker = ops.tracker()
        options = {"terminate": body.terminate, "include_retried": body.include_retried}
        # The operator asked for it: taking the ids of millions of jobs may take longer
        # than a read may (web_query_timeout_s), and must not be cut short.
        with time_limit(None):
            action_id = start_bulk(
                tracker,
                actor(who),
                body.action,
                where,
                every=body.all,
                options={k: True for k, v in options.items() if v} or None,
            )
        where = bulk_filter(body.action, where, include_retried=body.include_retried)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    ops.store.actions.snapshot_targets(action_id, where)
    run_in_background(
        ops.app,
        tracker,
        action_id,
        rate_per_s=ops.settings.action_rate_per_s,
        batch_size=ops.settings.action_batch_size,
    )
    return ops.store.actions.get_action(action_id)


def visible_action(store: Store, action_id: int, who: Principal) -> Action:
    """The action, if the caller may see it (an owner-bound caller: its owner's); else 404."""
    try:
        found = store.actions.get_action(action_id)
    except JobNotFound as exc:
        raise HTTPException(404, f"no action {action_id}") from exc
    if who.owner_id is not None and found.owner_id != who.owner_id:
        raise HTTPException(404, f"no action {action_id}")
    return found


class StartJob(BaseModel):
    """The body of ``POST /api/jobs``."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=255, description="a registered task's name")
    args: list[Any] = Field(default_factory=list, description="positional arguments (JSON)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    queue: str | None = Field(default=None, min_length=1, max_length=255)
    countdown: float | None = Field(default=None, ge=0, le=366 * 86400, description="seconds")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it is past ``limit`` bytes (by its
    declared length, or while it is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
    return bytes(body)


def add_api_routes(
    api: FastAPI,
    store: Store,
    auth: Auth,
    feed: ChangeFeed,
    ops: Operations,
    settings: Settings,
) -> None:
    """The ``/api`` routes, on ``api``."""
    control = ops.control
    Who = Annotated[Principal, Depends(auth.require)]
    streams = StreamSlots(max_per_key=settings.web_max_streams)
    api.state.streams = streams
    JobId = Annotated[str, Path(pattern=ID_PATTERN, description="the Celery task id")]

    def job_filter(
        who: Who,
        status: Annotated[list[StatusFilter] | None, Query()] = None,
        job_type: Annotated[str | None, Query(max_length=100)] = None,
        owner_id: Annotated[str | None, Query(max_length=255)] = None,
        task_name: Annotated[str | None, Query(max_length=255)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        stage: Annotated[str | None, Query(max_length=255)] = None,
        ref: Annotated[
            str | None,
            Query(max_length=256, description="exact, or a prefix ending in * (repo:42@*)"),
        ] = None,
        workflow: Annotated[
            str | None, Query(max_length=255, description="every job under this root id")
        ] = None,
        group: Annotated[str | None, Query(max_length=255, description="a group id")] = None,
        handled: Annotated[
            bool | None,
            Query(
                description="false: jobs no operator retried or replayed yet (retried_by "
                "empty); true: those one did"
            ),
        ] = None,
        error_group: Annotated[
            str | None, Query(max_length=32, description="a failure group's key")
        ] = None,
    ) -> JobFilter | None:
        """The list's filters as given (None: an owner-bound caller asked for another
        owner's jobs, which it sees none of)."""
        if who.owner_id is not None:
            if owner_id not in (None, who.owner_id):
                return None
            owner_id = who.owner_id
        return JobFilter.of(
            status=[s.value for s in status] if status else None,
            job_type=job_type,
            owner_id=owner_id,
            task_name=task_name,
            queue=queue,
            since=utc(since, "since"),
            until=utc(until, "until"),
            search=searched(search),
            stage=stage,
            ref=ref,
            workflow=workflow,
            group=group,
            handled=handled,
            error_group=error_group,
        )

    Filter = Annotated[JobFilter | None, Depends(job_filter)]

    @api.get("/api/jobs")
    def list_jobs(
        where: Filter,
        who: Who,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.
        A job that started others (a workflow's root) has ``workflow``: how many jobs
        are under it, by status, and in words. A job an operator retried or replayed
        has ``retried_by`` (the newest such job's id): ``handled=false`` leaves those
        out (``status=failed&handled=false``: the failures nobody acted on yet)."""
        if where is None:
            return {"jobs": [], "next_cursor": None}
        found = store.list_jobs(
            where, limit=limit + 1, before=decode_cursor(cursor) if cursor else None
        )
        page, more = found[:limit], len(found) > limit
        rollups = store.workflows.rollups([j.id for j in page], owner_id=who.owner_id)
        return {
            "jobs": [{**dataclasses.asdict(j), **rollup_json(rollups.get(j.id))} for j in page],
            "next_cursor": encode_cursor(page[-1]) if more else None,
        }

    @api.get("/api/counts")
    def counts(
        where: Filter, status: Annotated[list[StatusFilter] | None, Query()] = None
    ) -> dict[str, Any]:
        """How many jobs each status (``status``, repeatable; all by default) holds under
        the list's filters, as the dashboard's tabs count them: ``exact`` true, or
        false past a bound, where ``estimated`` says whether ``count`` is an estimate
        (a search that many jobs match) or a floor (more than ``cap``)."""
        wanted = [s.value for s in status] if status else [s.value for s in JobStatus]
        found = (
            {s: Count(0) for s in wanted}
            if where is None
            else store.tab_counts(wanted, cap=COUNT_CAP, where=where.where(status=None))
        )
        return {"counts": {s: c.to_json() for s, c in found.items()}, "cap": COUNT_CAP}

    @api.post(
        "/api/jobs",
        status_code=202,
        responses={
            200: {"description": "an earlier request with this Idempotency-Key made the job"},
            403: {
                "description": "not an operator, or the task is not publishable (whether "
                "or not the app has it)"
            },
            413: {"description": "the body is too large"},
            422: {"description": "a listed task the app lacks, or a body that is not a StartJob"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": StartJob.model_json_schema()}},
            }
        },
    )
    async def start_job(
        request: Request,
        who: Who,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
        ] = None,
    ) -> JSONResponse:
        """Start a job: publish ``task`` through the Celery app. Answers 202 with the new
        job's ``id`` and ``Location`` once its row is committed (``pending``). Only the
        tasks in ``web_publishable_tasks``; an owner-bound token's jobs are its owner's.
        A repeated request with the same ``Idempotency-Key`` answers 200 with the first
        job instead of starting another."""
        if not who.may_act:
            raise HTTPException(403, "starting a job needs the operator role")
        if control is None:
            raise HTTPException(501, "starting a job needs the Celery app (jobtrack -A app web)")
        body = parse_body(await read_body(request, settings.web_max_body_bytes), StartJob)
        try:
            job, started = await run_in_threadpool(
                control.start,
                body.task,
                args=body.args,
                kwargs=body.kwargs,
                queue=body.queue,
                countdown=body.countdown,
                owner_id=who.owner_id,
                idempotency_key=idempotency_key,
                allowed=settings.web_publishable_tasks,
            )
        except UnknownTask as exc:
            raise HTTPException(422, str(exc)) from exc
        except NotPublishable as exc:
            raise HTTPException(403, str(exc)) from exc
        location = (request.scope.get("root_path") or "") + f"/api/jobs/{job.id}"
        return JSONResponse(
            {"id": job.id, "status": job.status.value},
            status_code=202 if started else 200,
            headers={"Location": location},
        )

    @api.get("/api/jobs/{job_id}")
    def get_job(job_id: JobId, who: Who) -> dict[str, Any]:
        """The job's row, its attempt/transition trace, and its stages with their
        durations (``duration_ms`` null for the stage it is in)."""
        job = visible_job(store, job_id, who)
        events = store.list_events(job.id)
        return {
            "job": dataclasses.asdict(job),
            "events": [dataclasses.asdict(e) for e in events],
            "stages": [
                {**dataclasses.asdict(span), "duration_ms": span.duration_ms}
                for span in stage_spans(events)
            ],
        }

    @api.get("/api/jobs/{job_id}/items")
    def get_items(
        job_id: JobId,
        who: Who,
        status: ItemStatusFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        after: Annotated[
            int | None, Query(ge=0, le=2**63 - 1, description="the last item id seen")
        ] = None,
    ) -> dict[str, Any]:
        """The job's recorded items, in the order they were recorded. Page with
        ``after=next_after`` (a keyset: as fast at the millionth item as at the first);
        ``offset`` still works, reading and skipping what it skips."""
        job_id = visible_job(store, job_id, who).id
        items = store.list_items(
            job_id,
            status=status.value if status else None,
            limit=limit,
            offset=offset,
            after=after,
        )
        return {
            "items": [dataclasses.asdict(i) for i in items],
            "next_after": items[-1].id if len(items) == limit else None,
        }

    @api.get("/api/jobs/{job_id}/tree")
    def get_tree(job_id: JobId, who: Who) -> dict[str, Any]:
        """The workflow the job belongs to (its chain, groups, chords, and the tasks its
        tasks started) as a tree of nodes: ``kind`` ``job`` (with status and progress)
        or ``group`` (siblings sharing a group id, with a ``summary`` such as "37 of 40
        done, 2 failed"). ``hidden`` counts jobs below ``max_depth`` not shown;
        ``cycles`` counts loops in the recorded parent ids (each cut at its oldest job)."""
        return workflow_tree(store, job_id, who).to_json()

    @api.get("/api/jobs/{job_id}/logs")
    def get_logs(
        job_id: JobId,
        who: Who,
        after: Annotated[int, Query(ge=0, le=2**63 - 1, description="the last seq seen")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    ) -> dict[str, Any]:
        """What the job's task logged (``job_log_level`` and up), oldest first: the
        lines after ``after``. Poll with ``after=next_after`` to follow a running job."""
        job_id = visible_job(store, job_id, who).id
        lines = store.logs.lines(job_id, after=after, limit=limit)
        return {
            "lines": [dataclasses.asdict(line) for line in lines],
            "next_after": lines[-1].seq if lines else after,
        }

    @api.get("/api/failures")
    def failures(
        who: Who,
        task_name: Annotated[str | None, Query(max_length=255)] = None,
        job_type: Annotated[str | None, Query(max_length=100)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        owner_id: Annotated[str | None, Query(max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """The failure groups: failed and lost jobs no operator retried or replayed yet,
        grouped by task, error type and error message with its numbers, ids and quoted
        values masked; the most recently seen first. Each has its ``key`` (list its jobs
        with ``GET /api/jobs?error_group=KEY``, act on them with ``POST /api/actions``
        and the filter ``{"error_group": KEY}``), ``count``, ``first_seen``,
        ``last_seen``, ``hourly`` (the last 24 hours, oldest first, from ``hours_from``)
        and its newest job (``example_id``, ``example_message``)."""
        given = {"task_name": task_name, "job_type": job_type, "queue": queue}
        groups, since = failure_groups(store, who, {**given, "owner_id": owner_id}, limit=limit)
        return {
            "groups": [dataclasses.asdict(g) for g in groups],
            "hours_from": since,
        }

    @api.get("/api/workers")
    def list_workers(who: Who) -> dict[str, Any]:
        """Each worker seen (running a job now, or finishing one in the last 5 minutes,
        or answering now): ``online`` (it answered Celery's remote control), ``pool``,
        ``concurrency`` (its pool's size now), ``busy`` (jobs running on it),
        ``tasks_per_min`` (over the last 5 minutes), ``last_heartbeat``, ``queues`` (those
        it consumes); and ``rate_limits`` in effect. Without the Celery app the workers
        are not asked (``inspected`` false): jobtrack's rows only. Not for owner-bound
        tokens."""
        return survey_json(fleet_for(ops, who), "workers")

    @api.get("/api/queues")
    def list_queues(who: Who) -> dict[str, Any]:
        """Each queue (the app's, those workers consume, those jobs wait in): ``depth``
        (the broker's count; null when it cannot say), ``queued`` (jobs jobtrack has
        pending in it), ``waiting`` (of those, due now), ``oldest_waiting``,
        ``consumers`` (live workers consuming it), ``paused`` (by an operator, as the
        workers say), ``last_control`` (its last pause or resume in the audit trail) and
        ``problem`` ("23 queued, and no live worker consumes it"). Not for owner-bound
        tokens."""
        return survey_json(fleet_for(ops, who), "queues")

    QueueName = Annotated[str, Path(pattern=r"^[^\x00-\x1f/]{1,255}$")]

    @api.post("/api/queues/{queue}/pause")
    def pause_queue(queue: QueueName, who: Who) -> dict[str, Any]:
        """Every live worker stops consuming the queue (Celery's ``cancel_consumer``);
        its messages wait in the broker. Operator role; recorded in the audit trail. 409
        when no worker answered."""
        return {"queue": queue, "result": control_for(ops, who, "queue-pause", queue=queue)}

    @api.post("/api/queues/{queue}/resume")
    def resume_queue(queue: QueueName, who: Who) -> dict[str, Any]:
        """Every live worker consumes the queue again (Celery's ``add_consumer``)."""
        return {"queue": queue, "result": control_for(ops, who, "queue-resume", queue=queue)}

    @api.post("/api/workers/{worker}/scale")
    def scale_worker(
        worker: QueueName,
        who: Who,
        concurrency: Annotated[int, Query(ge=1, le=1000, description="processes")],
    ) -> dict[str, Any]:
        """Grow or shrink the worker's pool (``celery@host`` or the host) to
        ``concurrency`` processes (prefork; Celery's ``pool_grow``/``pool_shrink``)."""
        done = control_for(ops, who, "worker-scale", worker=worker, concurrency=concurrency)
        return {"worker": worker, "result": done}

    @api.post("/api/tasks/{task}/rate-limit")
    def set_rate_limit(
        task: QueueName,
        who: Who,
        rate: Annotated[str, Query(max_length=20, description="10/s, 100/m, 1000/h, 0: none")],
    ) -> dict[str, Any]:
        """Set the task's rate limit on every live worker (Celery's ``rate_limit``)."""
        return {"task": task, "result": control_for(ops, who, "rate-limit", task=task, rate=rate)}

    @api.get("/api/insights")
    def insights(
        who: Who,
        by: Literal["task", "type"] = "task",
        since: Annotated[str, Query(max_length=40, description="24h, 7d, or ISO")] = "24h",
        every: Annotated[str, Query(max_length=10, description="a bucket: 1m to 7d")] = "1h",
        key: Annotated[str | None, Query(max_length=255, description="one task or type")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Per task name (or job type) over the window: per bucket, jobs completed and
        failed, failure rate, run time p50/p95 and queue wait p50/p95 (milliseconds),
        and the whole window's figures (``total``). Owner-bound tokens: their owner's
        jobs only."""
        found = insights_report(store, who, by=by, since=since, every=every, key=key, limit=limit)
        return dict(found.to_json())

    @api.get("/api/stats")
    def stats(who: Who, since: datetime | None = None) -> dict[str, Any]:
        """Counts and durations by status and type (not for owner-bound tokens)."""
        if who.owner_id is not None:
            raise HTTPException(403, "statistics cover every owner; this token is bound to one")
        return dataclasses.asdict(store.stats(since=utc(since, "since")))

    @api.post("/api/jobs/{job_id}/retry")
    def retry(job_id: JobId, who: Who, failed_items: bool = False) -> dict[str, Any]:
        """Publish a failed, cancelled or lost job again as a new job (its id is
        ``result``). With ``failed_items=true``, a finished job with failed items runs
        again under its own id, its task given exactly the failed keys
        (``job.retry_items``); ``result`` is then the job's own id."""
        job_id = job_id_of(store, job_id, who)
        new_id = act(ops, "retry", job_id, who, failed_items=failed_items)
        return {"job_id": job_id, "result": new_id}

    @api.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: JobId, who: Who, terminate: bool = False) -> dict[str, Any]:
        """Cancel a job: a queued or paused one at once, a running one at its next handle
        call (``terminate`` also sends its pool process SIGTERM)."""
        job_id = job_id_of(store, job_id, who)
        done = act(ops, "cancel", job_id, who, terminate=terminate)
        return {"job_id": job_id, "result": done}

    @api.post("/api/jobs/{job_id}/pause")
    def pause(job_id: JobId, who: Who) -> dict[str, Any]:
        """Pause a job: a queued one at once, a running one at its next handle call
        (within one heartbeat interval). 409 for a finished job."""
        job_id = job_id_of(store, job_id, who)
        return {"job_id": job_id, "result": act(ops, "pause", job_id, who)}

    @api.post("/api/jobs/{job_id}/resume")
    def resume(job_id: JobId, who: Who) -> dict[str, Any]:
        """Resume a paused job under its own id (its task reads ``job.last_checkpoint``).
        409 for a job that is not paused, or whose input was not stored whole."""
        job_id = job_id_of(store, job_id, who)
        return {"job_id": job_id, "result": act(ops, "resume", job_id, who)}

    @api.delete("/api/jobs/{job_id}")
    def delete(job_id: JobId, who: Who) -> dict[str, Any]:
        """Delete a finished (or paused) job with its items and events. 409 for a job a
        worker may still run (cancel it first)."""
        job_id = job_id_of(store, job_id, who)
        return {"job_id": job_id, "result": act(ops, "delete", job_id, who)}

    @api.post(
        "/api/jobs/{job_id}/replay",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": Replay.model_json_schema()}},
            }
        },
    )
    async def replay(job_id: JobId, who: Who, request: Request) -> JSONResponse:
        """Start a new job running this job's task, with its recorded arguments or with
        ``args``/``kwargs`` given in the body (edited); the new job's ``replay_of`` names
        this one. 403 for edited arguments (any that differ from the recorded ones) of a
        task not in ``web_publishable_tasks``; 409 when the recorded input was redacted
        or cut and no complete arguments are given; 422 for a body that is not JSON."""
        operator(who, "replay")
        body = parse_body(await read_body(request, settings.web_max_body_bytes), Replay)
        job_id = await run_in_threadpool(job_id_of, store, job_id, who)
        new_id = await run_in_threadpool(replay_for, ops, job_id, who, body)
        location = (request.scope.get("root_path") or "") + f"/api/jobs/{new_id}"
        return JSONResponse(
            {"id": new_id, "replay_of": job_id}, status_code=202, headers={"Location": location}
        )

    @api.post(
        "/api/actions",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BulkAction.model_json_schema()}},
            }
        },
    )
    async def bulk_action(who: Who, request: Request) -> JSONResponse:
        """Retry, cancel, pause, resume or delete every job a filter matches. The
        matching ids are taken now (later jobs are not included); the action then runs
        in the background at ``action_rate_per_s``: follow it at ``Location``. An empty
        filter is refused unless ``all`` is true; an unknown filter field is 422."""
        body = parse_body(await read_body(request, settings.web_max_body_bytes), BulkAction)
        started = await run_in_threadpool(start_action, ops, who, body)
        location = (request.scope.get("root_path") or "") + f"/api/actions/{started.id}"
        return JSONResponse(
            jsonable_encoder(action_json(started)), status_code=202, headers={"Location": location}
        )

    @api.get("/api/actions")
    def list_actions(
        who: Who,
        job_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> dict[str, Any]:
        """The audit trail, newest first (an owner-bound token: its owner's actions);
        ``job_id``: the actions that touched that job. Page with ``before`` (an id)."""
        found = store.actions.list_actions(
            limit=limit, before_id=before, owner_id=who.owner_id, job_id=job_id
        )
        return {"actions": [action_json(a) for a in found]}

    @api.get("/api/alerts")
    def list_alerts(who: Who, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Each alert rule's state (``firing``, the rate it measured, when it last sent)
        and the newest deliveries (channel, status, attempts, last error with secrets
        masked). Not for owner-bound tokens: alerts cover every owner."""
        if who.owner_id is not None:
            raise HTTPException(403, "alerts cover every owner; this token is bound to one")
        return {
            "rules": [dataclasses.asdict(s) for s in store.alerts.alert_states().values()],
            "deliveries": [
                dataclasses.asdict(d) for d in store.alerts.recent_deliveries(limit=limit)
            ],
        }

    @api.get("/api/actions/{action_id}")
    def get_action(action_id: Annotated[int, Path(ge=1, le=2**63 - 1)], who: Who) -> dict[str, Any]:
        """One action: who, what, the filter, its status and counts, its progress."""
        return action_json(visible_action(store, action_id, who))

    @api.get(
        "/api/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "``job`` events, each the changed job's row as JSON",
            }
        },
    )
    async def stream(
        who: Who,
        request: Request,
        job_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        workflow: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: one ``job`` event each time a job (the one ``job_id``
        names, every job of the workflow whose root is ``workflow``, or any the caller
        may see) changes."""
        client = request.client.host if request.client else ""
        slot = streams.take(who.name, client)
        if slot is None:
            raise HTTPException(
                429,
                f"at most {streams.limit} open streams per token and "
                "per client address; close one first",
                headers={"Retry-After": "10"},
            )

        async def events() -> AsyncIterator[str]:
            try:
                async for rows in feed.changes():
                    if rows is None:
                        yield ": keep-alive\n\n"
                        continue
                    if not rows:  # the feed is watching
                        yield "retry: 2000\n: connected\n\n"
                        continue
                    for job in sorted(rows.values(), key=_oldest_first):
                        wanted = (job_id is None and workflow is None) or (
                            job.id in (job_id, workflow) or job.root_id == workflow
                        )
                        if wanted and (who.owner_id is None or job.owner_id == who.owner_id):
                            yield job_event(job)
            finally:
                slot()

        body = events()
        weakref.finalize(body, slot)  # also when the body is never started
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
