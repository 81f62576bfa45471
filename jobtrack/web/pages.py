"""The dashboard: server-rendered pages (Jinja2, autoescaped) over the store.

Pages are whole documents; with ``?partial=1`` they answer only the part that changes,
which the page's small script fetches again whenever the live stream reports a change
(and every 30 seconds, to keep "2 minutes ago" honest). Rendering stays in one place,
on the server, where every user-supplied string is escaped.

(No ``from __future__ import annotations``: FastAPI reads these annotations at run time.)
"""

import functools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, available_timezones

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from ..actions import bulk_filter
from ..control import ACTIONS, replayable_input
from ..models import (
    ACTIVE,
    DELETABLE,
    ERRORED,
    FINISHED,
    PAUSABLE,
    RETRYABLE,
    STARTED,
    Count,
    Job,
    JobFilter,
    JobStatus,
    as_utc,
    stage_spans,
    time_left,
)
from ..settings import Settings
from ..store import Store, current_route
from ..workflows import MAX_DEPTH, summarize, workflow_state
from .api import (
    COUNT_CAP,
    ID_PATTERN,
    BulkAction,
    Operations,
    Replay,
    StatusFilter,
    act,
    control_for,
    decode_cursor,
    encode_cursor,
    failure_groups,
    fleet_for,
    insights_report,
    job_id_of,
    operator,
    parse_body,
    replay_for,
    searched,
    start_action,
    visible_action,
    visible_job,
    workflow_tree,
)
from .auth import CSRF_FIELD, Auth, Principal
from .charts import PATTERNS, duration_label, lines_chart, sparkline, throughput_chart
from .tracebacks import fold

__all__ = ["COUNT_CAP", "TABS", "add_pages", "redirect", "templates"]

#: The list page's tabs: the statuses each shows.
TABS: dict[str, tuple[str, ...]] = {
    "running": ("running", "retrying"),
    "queued": ("pending",),
    "paused": ("paused",),
    "completed": ("completed",),
    "failed": ("failed", "lost"),
    "cancelled": ("cancelled",),
    "all": tuple(s.value for s in JobStatus),
}
PAGE_SIZE = 50
ITEMS_PAGE_SIZE = 100
FILTERS = (
    "job_type",
    "task_name",
    "queue",
    "owner_id",
    "ref",
    "search",
    "workflow",
    "group",
    "error_group",
)
#: The list's "handled" switch: which jobs a tab shows of those an operator retried or
#: replayed (``retried_by``). The Failed tab shows the unhandled ones unless told.
HANDLED = {"all": None, "false": False, "true": True}
#: A job page shows this many of its newest log lines (all of them: the API).
LOG_LINES_SHOWN = 200
#: A group node of a job page's tree shows this many members (all of them: the API).
GROUP_MEMBERS_SHOWN = 100
#: The Insights page draws charts for this many of the busiest tasks (a table: all).
CHARTED_SERIES = 8
#: How long the filter boxes' suggestions are kept before they are read again.
SUGGESTIONS_TTL_S = 60.0
#: A bulk action's confirmation shows this many of the jobs it covers (the newest).
BULK_SAMPLE = 10
#: Insights' table marks a failure rate from this one up (a tenth of the jobs).
HIGH_FAILURE_RATE = 0.1


def _figure(name: str) -> Callable[[Any], tuple[bool, float | str]]:
    """A sort key of Insights' table for one column (rows without the figure last)."""

    def of(one: Any) -> tuple[bool, float | str]:
        if name == "key":
            return (False, one.key)
        value = getattr(one.total, name, None) if one.total else None
        return (value is None, value if value is not None else 0.0)

    return of


#: Insights' table's sortable columns.
INSIGHT_SORTS: dict[str, Callable[[Any], tuple[bool, float | str]]] = {
    name: _figure(name)
    for name in (
        "key",
        "completed",
        "failed",
        "failure_rate",
        "run_p50_ms",
        "run_p95_ms",
        "wait_p50_ms",
        "wait_p95_ms",
    )
}
#: The bulk actions each tab offers (on every job it shows, filters applied).
BULK_BY_TAB: dict[str, tuple[str, ...]] = {
    "running": ("cancel", "pause"),
    "queued": ("cancel", "pause"),
    "paused": ("resume", "cancel", "delete"),
    "completed": ("delete",),
    "failed": ("retry", "delete"),
    "cancelled": ("retry", "delete"),
    "all": ("delete",),
}
#: One job's actions done only from their confirmation page: they stop or remove work.
CONFIRMED = frozenset({"cancel", "delete"})
_PAST = {
    "retry": "Retried",
    "cancel": "Cancelled",
    "pause": "Paused",
    "resume": "Resumed",
    "delete": "Deleted",
    "replay": "Replayed",
}


class NeedLogin(Exception):
    """Raised by a page when the visitor is not signed in (answered by a redirect to
    the sign-in page, which comes back to ``then`` after it)."""

    def __init__(self, then: str = "/") -> None:
        super().__init__(then)
        self.then = then


def wanted(request: Request) -> str:
    """The page asked for, as a path under the app's mount (with its query, without
    ``partial``): where sign-in sends the visitor back to."""
    base = request.scope.get("root_path") or ""
    path = request.url.path
    path = path[len(base) :] if base and path.startswith(base) else path
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "partial"])
    return path + (f"?{query}" if query else "")


def safe_next(value: str | None) -> str:
    """A sign-in's ``next``: a path of this app (one leading ``/``, no scheme, no host,
    no backslash), else the jobs list."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 32 for c in value)
        or len(value) > 2000
    ):
        return "/"
    return value


def redirect(request: Request, path: str) -> RedirectResponse:
    """A 303 to ``path`` under where the app is mounted."""
    return RedirectResponse((request.scope.get("root_path") or "") + path, 303)


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
    env = found.env
    env.finalize = _no_bidi_controls
    env.filters.update(
        ago=ago,
        when=when,
        local=local,
        duration=duration,
        pretty=pretty,
        percent=percent,
        took=took,
        segment=lambda v: quote(str(v), safe=""),
        past=lambda action: _PAST.get(action, action),
        ms=duration_label,
    )
    env.globals.update(
        qs=qs,
        ACTIVE=ACTIVE,
        STARTED=STARTED,
        ERRORED=ERRORED,
        RETRYABLE=RETRYABLE,
        PAUSABLE=PAUSABLE,
        FINISHED=FINISHED,
        DELETABLE=DELETABLE,
        BULK_BY_TAB=BULK_BY_TAB,
        scope_of=lambda action: action.scope(),
        time_left=time_left,
        summarize=summarize,
        workflow_state=workflow_state,
        GROUP_MEMBERS_SHOWN=GROUP_MEMBERS_SHOWN,
        max_depth=MAX_DEPTH,
    )
    return found


# -- formatting (Jinja filters) ---------------------------------------------------------

#: Characters that reorder the text around them (overrides, embeddings, isolates):
#: with them a name can make ``exe.txt`` display as ``txt.exe``.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def _no_bidi_controls(value: Any) -> Any:
    """Every value a template prints, with bidirectional controls removed."""
    return value.translate(_BIDI_CONTROLS) if isinstance(value, str) else value


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "2 minutes ago" (or "in 5 seconds" for clocks ahead of ours)."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 2:
        return "just now"
    unit, size = next((u, n) for u, n in _UNITS if seconds >= n)
    n = int(seconds // size)
    text = f"{n} {unit}{'s' if n != 1 else ''}"
    return f"in {text}" if future else f"{text} ago"


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


#: The cookie the page's script sets to the browser's time zone (an IANA name): times are
#: then shown in it too, beside UTC, by the server (the script writes no text).
ZONE_COOKIE = "jobtrack_tz"


_ZONES = functools.cache(available_timezones)


@functools.cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name in _ZONES() else None
    except (ValueError, OSError):
        return None


def viewer_zone(request: Request) -> ZoneInfo | None:
    """The visitor's time zone, when their browser said which and it is a known one
    other than UTC."""
    name = request.cookies.get(ZONE_COOKIE, "")
    if not name or len(name) > 64 or name in ("UTC", "Etc/UTC"):
        return None
    return _zone(name)


def local(moment: datetime | None, zone: ZoneInfo | None) -> str:
    """``moment`` in the viewer's zone ("16:14:03 EST", with the date when it is not
    the UTC date), or nothing without a zone."""
    if moment is None or zone is None:
        return ""
    here = moment.astimezone(zone)
    day = "" if here.date() == moment.astimezone(UTC).date() else here.strftime("%Y-%m-%d ")
    return f"{day}{here.strftime('%H:%M:%S')} {here.tzname() or zone.key}"


def duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def took(job: Job) -> int | None:
    """How long a finished job ran, in ms: Celery's runtime, else from its times."""
    if job.duration_ms is not None:
        return job.duration_ms
    if job.started_at is not None and job.completed_at is not None:
        return max(int((job.completed_at - job.started_at).total_seconds() * 1000), 0)
    return None


def percent(job: Job) -> float | None:
    """The progress to draw: the reported percentage, else processed/total items."""
    if job.status is JobStatus.COMPLETED:
        return 100.0
    if job.progress_percent is not None and math.isfinite(job.progress_percent):
        return max(0.0, min(100.0, job.progress_percent))
    if job.total_items:
        return max(0.0, min(100.0, 100.0 * job.processed_items / job.total_items))
    return None


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


#: The list's time ranges: jobs created in the last hour, day or week (or from/to).
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


def time_range(
    window: str | None, since: datetime | None, until: datetime | None
) -> dict[str, datetime | None]:
    """The list's ``since``/``until`` from its time range: one of :data:`WINDOWS` back
    from now, or ``custom`` (its from/to, in UTC when they carry no zone)."""
    if window in WINDOWS:
        return {"since": datetime.now(UTC) - WINDOWS[window], "until": None}
    if window == "custom":
        return {
            "since": since.replace(tzinfo=since.tzinfo or UTC) if since else None,
            "until": until.replace(tzinfo=until.tzinfo or UTC) if until else None,
        }
    return {"since": None, "until": None}


def moment(given: str | None, name: str) -> datetime | None:
    """A time range's end as the form sends it (``2026-12-06T10:30``, UTC unless it
    says otherwise; empty: none); 422 for anything else."""
    if not given:
        return None
    try:
        found = datetime.fromisoformat(given)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: a date and time such as 2026-12-06T10:30") from exc
    try:
        return as_utc(found)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc


def shown_handled(tab: str, given: str | None) -> str:
    """The "handled" switch's position on a tab: as given, else the Failed tab's
    unhandled failures ("false") and every job elsewhere ("all")."""
    return given or ("false" if tab == "failed" else "all")


@dataclass(frozen=True)
class TabCount:
    """A tab's count as shown ("1,234", "10,000+" past :data:`COUNT_CAP`, "~4,300,000"
    for an estimate), and whether it is exact or estimated."""

    text: str
    exact: bool
    estimated: bool

    def __str__(self) -> str:
        return self.text


def _tab_count(counts: Mapping[str, Count], statuses: tuple[str, ...]) -> TabCount:
    """A tab's count: the sum of its statuses' (see :class:`TabCount`)."""
    each = [counts.get(s, Count(0)) for s in statuses]
    total = sum(c.n for c in each)
    if any(c.estimated for c in each):
        return TabCount(f"~{_rough(total):,}", exact=False, estimated=True)
    exact = all(c.exact for c in each)
    return TabCount(f"{total:,}{'' if exact else '+'}", exact=exact, estimated=False)


def _rough(n: int) -> int:
    """``n`` to two significant digits (an estimate claims no more)."""
    return n if n < 100 else round(n, 2 - len(str(n)))


def qs(params: Mapping[str, Any], **changes: Any) -> str:
    """A query string from ``params`` with ``changes``, leaving out empty values."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def confirmation(job: Job, action: str, *, failed_items: bool = False) -> dict[str, str]:
    """What a confirmation page says of one job's action: ``verb`` (its button),
    ``effect`` (what it will do, in words) or ``refusal`` (why it cannot be done now)."""
    status = job.status.value
    if action == "retry" and failed_items:
        n = job.failed_items
        if job.status not in FINISHED or not n:
            refusal = f"It is {status} with no failed items."
            return {"verb": "Retry failed items", "refusal": refusal}
        return {
            "verb": f"Retry {n} failed item{'' if n == 1 else 's'}",
            "effect": f"The job runs again under its own id, its task given only the {n} "
            "failed items' keys.",
        }
    if action == "retry":
        if job.status not in RETRYABLE:
            return {
                "verb": "Retry",
                "refusal": f"It is {status}: only failed, cancelled and lost jobs are retried.",
            }
        return {
            "verb": "Retry",
            "effect": "It is published again with its recorded arguments, as a new job "
            "linked to this one.",
        }
    if action == "cancel":
        if job.status not in ACTIVE:
            return {"verb": "Cancel", "refusal": f"It is {status}: there is nothing to cancel."}
        effect = {
            JobStatus.PENDING: "It has not started: it is cancelled now, and a worker that "
            "meets its message skips it.",
            JobStatus.PAUSED: "It is paused: it is cancelled now and will not run again.",
        }.get(
            job.status,
            f"It is {status}{f' on {job.worker}' if job.worker else ''}: its task is stopped.",
        )
        return {"verb": "Cancel the job", "effect": effect}
    if action == "delete":
        if job.status not in DELETABLE:
            return {
                "verb": "Delete",
                "refusal": f"It is {status}: a job a worker may still run is not deleted "
                "(cancel it first).",
            }
        items = job.processed_items
        return {
            "verb": "Delete the job",
            "effect": "The job is deleted with its items"
            + (f" ({items:,})" if items else "")
            + ", its trace and its logs. This cannot be undone.",
        }
    if action == "pause":
        if job.status not in PAUSABLE or job.pause_requested_at:
            return {"verb": "Pause", "refusal": f"It is {status}: it cannot be paused now."}
        return {
            "verb": "Pause",
            "effect": "A queued job is held now; a running one stops at its next progress, "
            "item, stage, checkpoint or check call. Resume runs it again under its id.",
        }
    if job.status is not JobStatus.PAUSED and not job.pause_requested_at:
        return {"verb": "Resume", "refusal": f"It is {status}: there is nothing to resume."}
    return {"verb": "Resume", "effect": "It runs again under its own id."}


# -- routes -----------------------------------------------------------------------------

#: ``render(request, template, context, status_code=200)``: a page, with the context
#: every template gets (base path, CSRF token, signed-in principal, Flower address).
Render = Callable[..., HTMLResponse]


def add_pages(
    app: FastAPI, store: Store, auth: Auth, settings: Settings, ops: Operations
) -> Render:
    """Add the dashboard's routes to ``app``; returns its page renderer."""
    views = templates()
    flower_url = settings.web_flower_url.rstrip("/")
    # Which database this dashboard reads (backend and name only: no host or password).
    url = store.engine.url
    database = f"{url.get_backend_name()} · {url.database or '(default)'}"
    JobId = Annotated[str, Path(pattern=ID_PATTERN)]

    def visitor(request: Request, csrf_token: str | None = None) -> Principal:
        try:
            return auth.require(request, csrf_token=csrf_token)
        except HTTPException as exc:
            if exc.status_code == 401 and not auth.open_on_loopback:
                # Signing in helps: offer the form, and come back here after it.
                raise NeedLogin(wanted(request) if request.method == "GET" else "/") from exc
            raise

    def render(
        request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        base = request.scope.get("root_path") or ""
        route = current_route()
        context.update(
            request=request,
            tz=viewer_zone(request),
            base=base,
            # Which server the page's reads went to, and how far behind it is (a live
            # fragment carries it too, for the footer).
            served=route.describe() if route is not None and store.replicas else None,
            fragment=name.startswith("_"),
            csrf=auth.csrf_token(request),
            csrf_field=CSRF_FIELD,
            flower_url=flower_url,
            database=database,
            login_needed=not auth.open_on_loopback,
        )
        response = views.TemplateResponse(request, name, context, status_code=status_code)
        auth.set_cookies(request, response)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def jobs_page(
        request: Request,
        tab: Annotated[str, Query(pattern="^(" + "|".join(TABS) + ")$")] = "running",
        status: StatusFilter | None = None,
        job_type: Annotated[str | None, Query(max_length=100)] = None,
        task_name: Annotated[str | None, Query(max_length=255)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        owner_id: Annotated[str | None, Query(max_length=255)] = None,
        ref: Annotated[str | None, Query(max_length=256)] = None,
        search: Annotated[str | None, Query(max_length=200)] = None,
        workflow: Annotated[str | None, Query(max_length=255)] = None,
        group: Annotated[str | None, Query(max_length=255)] = None,
        error_group: Annotated[str | None, Query(max_length=32)] = None,
        handled: Annotated[str | None, Query(pattern="^(all|true|false)$")] = None,
        window: Annotated[str | None, Query(pattern="^(1h|24h|7d|custom)?$")] = None,
        since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
        partial: bool = False,
        full: bool = False,
    ) -> Response:
        """The list. A search whose page no bounded read finds shows its matches among
        the newest jobs, says so, and offers the full search (``full=1``: every job,
        within ``web_query_timeout_s``)."""
        who = visitor(request)
        span = {"window": window, "from": since, "to": until}
        starts, ends = moment(since, "from"), moment(until, "to")
        filters = {
            "job_type": job_type,
            "task_name": task_name,
            "queue": queue,
            "owner_id": owner_id,
            "ref": ref,
            "search": searched(search),
            "workflow": workflow,
            "group": group,
            "error_group": error_group,
        }  # as given: form and links
        scope = JobFilter.of(**filters).where(**time_range(window, starts, ends))
        if who.owner_id is not None:
            filters["owner_id"], scope = None, scope.where(owner_id=who.owner_id)
        shown = shown_handled(tab, handled)
        listed = scope.where(
            status=tuple(JobStatus(s) for s in ([status.value] if status else TABS[tab])),
            handled=HANDLED[shown],
        )
        before = decode_cursor(cursor) if cursor else None
        if full:
            found, complete = store.list_jobs(listed, limit=PAGE_SIZE + 1, before=before), True
        else:
            found, complete = store.list_page(listed, limit=PAGE_SIZE + 1, before=before)
        counts = store.tab_counts(
            [s.value for s in JobStatus], cap=COUNT_CAP, where=scope, every_match=full
        )
        tab_counts = {name: _tab_count(counts, wanted) for name, wanted in TABS.items()}
        failed_shown = shown_handled("failed", handled)
        if HANDLED[failed_shown] is not None:  # the Failed tab counts what it shows
            failed = store.tab_counts(
                list(TABS["failed"]),
                cap=COUNT_CAP,
                where=scope.where(handled=HANDLED[failed_shown]),
                every_match=full,
            )
            tab_counts["failed"] = _tab_count(failed, TABS["failed"])
        page = found[:PAGE_SIZE]
        context = {
            "who": who,
            "tab": tab,
            "tabs": tab_counts,
            "jobs": page,
            "retries": store.actions.job_statuses([j.retried_by for j in page if j.retried_by]),
            "handled": shown,
            "handled_counts": {"all": _tab_count(counts, TABS[tab]), "shown": tab_counts[tab]}
            if tab == "failed"
            else None,
            "rollups": store.workflows.rollups([j.id for j in page], owner_id=who.owner_id),
            "filters": filters,
            "params": {
                "tab": tab,
                **filters,
                "handled": handled,
                **span,
                "full": "1" if full else None,
            },
            "suggestions": {} if partial else suggestions(who),
            # Not complete: what the bounded read found starts the answer; the next page
            # reads on from its last job.
            "next_cursor": encode_cursor(page[-1])
            if len(found) > PAGE_SIZE or (not complete and page)
            else None,
            "complete": complete,
            "first_page": cursor is None,
            "now": datetime.now(UTC),
        }
        return render(request, "_jobs.html" if partial else "jobs.html", context)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(
        request: Request,
        job_id: JobId,
        item_status: Annotated[
            str | None, Query(pattern="^(all|success|error|skipped|pending)$")
        ] = None,
        item_after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        partial: bool = False,
        tree: bool = True,
    ) -> Response:
        """The job page (``partial``: its live fragment). ``tree=0`` leaves the workflow
        out: the live script asks for it that way between the tree's own, slower-paced
        refreshes, so a big workflow is not read again on every change of the job. The
        items open on the failed ones when there are any (``item_status=all``: every
        one)."""
        who = visitor(request)
        job = visible_job(store, job_id, who)
        if job.id != job_id:  # the start of its id: the page lives under the whole id
            query = f"?{request.url.query}" if request.url.query else ""
            return redirect(request, f"/jobs/{quote(job.id, safe='')}{query}")
        shown_items = item_status or ("error" if job.failed_items else "all")
        items = store.list_items(
            job_id,
            status=None if shown_items == "all" else shown_items,
            limit=ITEMS_PAGE_SIZE + 1,
            after=item_after,
        )
        pending = store.count_items(job_id, "pending") if job.total_items else 0
        done = job.processed_items - job.failed_items - job.skipped_items
        events = store.list_events(job_id)
        workflow = workflow_tree(store, job_id, who) if tree or not partial else None
        logs = store.logs.lines(job_id, limit=LOG_LINES_SHOWN, last=True)
        context = {
            "who": who,
            "job": job,
            # None: not read (the fragment then has no tree part, and the page keeps its own).
            "tree": workflow,
            "logs": logs,
            # Counted only when there may be more than are shown.
            "log_count": store.logs.count(job_id) if len(logs) == LOG_LINES_SHOWN else len(logs),
            "events": events,
            "stages": stage_spans(events),
            "items": items[:ITEMS_PAGE_SIZE],
            "more_items": len(items) > ITEMS_PAGE_SIZE,
            "item_status": shown_items,
            "item_param": item_status,
            "item_counts": {
                "all": job.processed_items + pending,
                "success": max(done, 0),
                "error": job.failed_items,
                "skipped": job.skipped_items,
                "pending": pending,
            },
            "item_after": item_after,
            "traceback_runs": fold(job.traceback) if job.traceback else [],
            "now": datetime.now(UTC),
            "retry_of": job.metadata.get("retry_of") if isinstance(job.metadata, dict) else None,
            "replays": store.actions.replays_of(job_id),
            "replayable": replayable_input(job.input_data) is not None,
            "operator_actions": store.actions.actions_for_job(job_id),
            "retries": store.actions.job_statuses([job.retried_by] if job.retried_by else []),
        }
        return render(request, "_job.html" if partial else "job.html", context)

    async def form_of(request: Request) -> FormData:
        try:
            return await request.form()
        except Exception as exc:  # malformed body: a client error, not ours
            raise HTTPException(400, "the form could not be read") from exc

    @app.post("/jobs/{job_id}/replay", include_in_schema=False)
    async def replay_form(request: Request, job_id: JobId) -> Response:
        """The job page's "Replay with edited input": a new job, then its page."""
        form = await form_of(request)
        who = visitor(request, csrf_token=str(form.get(CSRF_FIELD) or ""))
        operator(who, "replay")
        given = parse_body(str(form.get("input") or "").encode(), Replay)  # as the API's
        new_id = await run_in_threadpool(replay_for, ops, job_id, who, given)
        return redirect(request, f"/jobs/{quote(new_id, safe='')}")

    OneAction = Annotated[str, Path(pattern="^(" + "|".join((*ACTIONS, "delete")) + ")$")]

    @app.get("/jobs/{job_id}/{action}", response_class=HTMLResponse, include_in_schema=False)
    def confirm_page(
        request: Request, job_id: JobId, action: OneAction, failed_items: bool = False
    ) -> Response:
        """One job's action, asked first: what it will do to this job, and the form that
        does it. Cancel and Delete are only done from here (see :data:`CONFIRMED`); the
        keyboard's Retry comes here too."""
        who = visitor(request)
        operator(who, action)
        job = visible_job(store, job_id, who)
        failed_items = failed_items and action == "retry"
        context = {
            "who": who,
            "job": job,
            "action": action,
            "failed_items": failed_items,
            **confirmation(job, action, failed_items=failed_items),
        }
        return render(request, "confirm.html", context)

    @app.post("/jobs/{job_id}/{action}", include_in_schema=False)
    async def action_form(request: Request, job_id: JobId, action: OneAction) -> Response:
        """The job page's and the list's buttons: Retry (``failed_items=1``: only the
        failed items), Cancel (``terminate=1``), Pause, Resume, Delete. Then the job's
        page (a retry's new job's; the list after a delete). Cancel and Delete without
        ``confirmed=1`` (not sent from their confirmation page) change nothing: they
        answer with that page's address."""
        form = await form_of(request)
        who = visitor(request, csrf_token=str(form.get(CSRF_FIELD) or ""))
        if action in CONFIRMED and form.get("confirmed") != "1":
            return redirect(request, f"/jobs/{quote(job_id, safe='')}/{action}")
        flags = {"retry": "failed_items", "cancel": "terminate"}
        options = {flags[action]: form.get(flags[action]) == "1"} if action in flags else {}
        job_id = await run_in_threadpool(job_id_of, store, job_id, who)
        shown = await run_in_threadpool(act, ops, action, job_id, who, **options)
        if action == "delete":
            return redirect(request, "/")
        return redirect(request, f"/jobs/{quote(shown if action == 'retry' else job_id, safe='')}")

    remembered: dict[tuple[str, str | None], tuple[float, list[str]]] = {}

    def suggestions(who: Principal) -> dict[str, list[str]]:
        """What the filter boxes suggest: the values each field holds (an owner-bound
        visitor: its owner's), read once a minute at most."""
        found = {}
        for field in ("task_name", "job_type", "queue", "owner_id"):
            if field == "owner_id" and who.owner_id is not None:
                continue
            key = (field, who.owner_id)
            at, values = remembered.get(key, (0.0, []))
            if time.monotonic() - at > SUGGESTIONS_TTL_S:
                values = store.suggest.values(field, owner_id=who.owner_id)
                remembered[key] = (time.monotonic(), values)
            found[field] = values
        return found

    def list_filter(params: Mapping[str, str], who: Principal) -> JobFilter:
        """The list's filter from its query or form fields (the tab, a status, the
        filter boxes), as the bulk action's filter; 422 for an unknown tab or status."""
        tab = params.get("tab") or "running"
        if tab not in TABS:
            raise HTTPException(422, f"tab: one of {', '.join(TABS)}")
        status = params.get("status")
        try:
            statuses = [JobStatus(status).value] if status else list(TABS[tab])
        except ValueError as exc:
            raise HTTPException(422, f"status: {exc}") from exc
        given: dict[str, Any] = {name: params.get(name) for name in FILTERS}
        given["search"] = searched(given.get("search"))
        if who.owner_id is not None:
            given["owner_id"] = None  # the store scopes an owner-bound operator's action
        ids = [i for i in (params.get("ids") or "").split(",") if i] or None
        if ids is not None and not all(re.fullmatch(ID_PATTERN, i) for i in ids[:1000]):
            raise HTTPException(422, "ids: job ids, comma-separated")
        handled = params.get("handled")
        if handled not in (None, "", *HANDLED):
            raise HTTPException(422, f"handled: one of {', '.join(HANDLED)}")
        since, until = (moment(params.get(k), k) for k in ("from", "to"))
        window = params.get("window") or None
        if window not in (None, "custom", *WINDOWS):
            raise HTTPException(422, f"window: one of {', '.join(WINDOWS)}, custom")
        return JobFilter.of(
            status=statuses if tab != "all" or status else None,
            ids=ids[:1000] if ids else None,
            handled=HANDLED[shown_handled(tab, handled or None)],
            **given,
        ).where(**time_range(window, since, until))

    def bulk_params(params: Mapping[str, str]) -> dict[str, str]:
        names = ("tab", "status", "handled", "ids", "window", "from", "to", *FILTERS)
        return {k: params[k] for k in names if params.get(k)}

    @app.get("/actions/new", response_class=HTMLResponse, include_in_schema=False)
    def action_new(
        request: Request,
        action: Annotated[str, Query(pattern="^(retry|cancel|pause|resume|delete)$")],
    ) -> Response:
        """The confirmation of a bulk action: how many jobs it covers, exactly, and the
        newest of them (:data:`BULK_SAMPLE`) with their names and errors."""
        who = visitor(request)
        operator(who, action)
        params = dict(request.query_params)
        picked = [i for given in request.query_params.getlist("ids") for i in given.split(",") if i]
        params.pop("selection", None)
        if picked:
            params["ids"] = ",".join(dict.fromkeys(picked))
        elif request.query_params.get("selection"):
            raise HTTPException(422, "no job selected: tick the jobs to act on first")
        where = list_filter(params, who)
        if where.is_empty():
            raise HTTPException(422, "an empty filter: choose a tab or a filter first")
        scoped = where.where(owner_id=who.owner_id) if who.owner_id else where
        covered = bulk_filter(action, scoped)  # a retry: not those retried already
        matched = store.actions.count_matching(covered)
        context = {
            "who": who,
            "action": action,
            "matched": matched,
            "left_out": store.actions.count_matching(scoped) - matched if covered != scoped else 0,
            "sample": store.list_jobs(covered, limit=BULK_SAMPLE),
            "params": bulk_params(params),
            "scope": " ".join(f"{k}={v}" for k, v in bulk_params(params).items()),
        }
        return render(request, "action_new.html", context)

    @app.post("/actions", include_in_schema=False)
    async def action_start(request: Request) -> Response:
        """Start a confirmed bulk action; then its page."""
        form = await form_of(request)
        who = visitor(request, csrf_token=str(form.get(CSRF_FIELD) or ""))
        params = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        where = list_filter(params, who)
        try:
            body = BulkAction.model_validate(
                {"action": params.get("action"), "filter": where.to_json()}
            )
        except ValidationError as exc:
            raise HTTPException(422, "action: one of retry, cancel, pause, resume, delete") from exc
        started = await run_in_threadpool(start_action, ops, who, body)
        return redirect(request, f"/actions/{started.id}")

    @app.get("/actions", response_class=HTMLResponse, include_in_schema=False)
    def actions_page(
        request: Request, before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
    ) -> Response:
        who = visitor(request)
        found = store.actions.list_actions(
            limit=PAGE_SIZE + 1, before_id=before, owner_id=who.owner_id
        )
        context = {
            "who": who,
            "actions": found[:PAGE_SIZE],
            "next_before": found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None,
        }
        return render(request, "actions.html", context)

    @app.get("/insights", response_class=HTMLResponse, include_in_schema=False)
    def insights_page(
        request: Request,
        by: Annotated[str, Query(pattern="^(task|type)$")] = "task",
        since: Annotated[str, Query(max_length=40)] = "24h",
        every: Annotated[str, Query(max_length=10)] = "1h",
        key: Annotated[str | None, Query(max_length=255)] = None,
        sort: Annotated[str | None, Query(pattern="^-?(" + "|".join(INSIGHT_SORTS) + ")$")] = None,
    ) -> Response:
        """Per task (or job type): throughput, failure rate, run time and queue wait
        over the window, as charts and a table (owner-bound visitors: their owner's); the
        table sorted by a column (``sort=failure_rate``; ``-`` first: descending), failure
        rates from :data:`HIGH_FAILURE_RATE` up marked."""
        who = visitor(request)
        found = insights_report(store, who, by=by, since=since, every=every, key=key or None)
        charted = found.series[:CHARTED_SERIES]
        rows = list(found.series)
        if sort:
            name = sort.lstrip("-")
            figure = INSIGHT_SORTS[name]
            rows.sort(key=lambda one: one.key)
            rows.sort(key=lambda one: figure(one)[1], reverse=sort.startswith("-"))
            rows.sort(key=lambda one: figure(one)[0])  # rows without the figure last
        charts = [
            (
                one,
                throughput_chart(one.buckets, found.window.bucket_s, one.key),
                lines_chart(
                    one.buckets,
                    found.window.bucket_s,
                    one.key,
                    "run time",
                    "run_p50_ms",
                    "run_p95_ms",
                ),
                lines_chart(
                    one.buckets,
                    found.window.bucket_s,
                    one.key,
                    "queue wait",
                    "wait_p50_ms",
                    "wait_p95_ms",
                ),
            )
            for one in charted
        ]
        context = {
            "who": who,
            "report": found,
            "charts": charts,
            "patterns": PATTERNS,
            "params": {"by": by, "since": since, "every": every, "key": key},
            "rows": rows,
            "sort": sort,
            "high_rate": HIGH_FAILURE_RATE,
        }
        return render(request, "insights.html", context)

    @app.get("/failures", response_class=HTMLResponse, include_in_schema=False)
    def failures_page(
        request: Request,
        task_name: Annotated[str | None, Query(max_length=255)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        owner_id: Annotated[str | None, Query(max_length=255)] = None,
        partial: bool = False,
    ) -> Response:
        """The failure groups: what is failing, how often, since when, with Retry,
        Delete and the list of each group's jobs (owner-bound visitors: their owner's)."""
        who = visitor(request)
        given = {"task_name": task_name, "queue": queue, "owner_id": owner_id}
        groups, since = failure_groups(store, who, given)
        context = {
            "who": who,
            "groups": groups,
            "sparks": {g.key: sparkline(g.hourly) for g in groups},
            "since": since,
            "params": {**given, "owner_id": owner_id if who.owner_id is None else None},
            "now": datetime.now(UTC),
        }
        return render(request, "_failures.html" if partial else "failures.html", context)

    @app.get("/workers", response_class=HTMLResponse, include_in_schema=False)
    def workers_page(request: Request) -> Response:
        """Workers & Queues: each worker's pool, busy slots, pace and heartbeat, each
        queue's depth, backlog, oldest wait and consumers, and the operators' controls
        (not for owner-bound visitors: they cover every owner)."""
        who = visitor(request)
        found = fleet_for(ops, who)
        context = {"who": who, "survey": found, "now": datetime.now(UTC)}
        return render(request, "workers.html", context)

    @app.post("/workers/control", include_in_schema=False)
    async def workers_control(request: Request) -> Response:
        """The page's controls: pause or resume a queue, resize a pool, set a task's
        rate limit; then the page again, showing what is in effect."""
        form = await form_of(request)
        who = visitor(request, csrf_token=str(form.get(CSRF_FIELD) or ""))
        action = str(form.get("action") or "")
        fields = {
            "queue-pause": ("queue",),
            "queue-resume": ("queue",),
            "worker-scale": ("worker", "concurrency"),
            "rate-limit": ("task", "rate"),
        }
        if action not in fields:
            raise HTTPException(422, f"action: one of {', '.join(fields)}")
        given: dict[str, Any] = {name: str(form.get(name) or "") for name in fields[action]}
        if "concurrency" in given:
            if not given["concurrency"].isdigit():
                raise HTTPException(422, "concurrency: a number of processes, 1 to 1000")
            given["concurrency"] = int(given["concurrency"])
        if not all(given.values()):
            raise HTTPException(422, f"{action}: give {', '.join(fields[action])}")
        await run_in_threadpool(control_for, ops, who, action, **given)
        return redirect(request, "/workers")

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_page(request: Request) -> Response:
        """Each rule's state and the last deliveries (every owner's: not for owner-bound
        visitors)."""
        who = visitor(request)
        if who.owner_id is not None:
            raise HTTPException(403, "alerts cover every owner; this token is bound to one")
        context = {
            "who": who,
            "states": list(store.alerts.alert_states().values()),
            "deliveries": store.alerts.recent_deliveries(limit=50),
            "now": datetime.now(UTC),
        }
        return render(request, "alerts.html", context)

    @app.get("/actions/{action_id}", response_class=HTMLResponse, include_in_schema=False)
    def action_page(
        request: Request, action_id: Annotated[int, Path(ge=1, le=2**63 - 1)], partial: bool = False
    ) -> Response:
        who = visitor(request)
        found = visible_action(store, action_id, who)
        context = {"who": who, "action": found, "scope": found.scope(), "now": datetime.now(UTC)}
        return render(request, "_action.html" if partial else "action.html", context)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(
        request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        return render(request, "login.html", {"error": None, "next": safe_next(next)})

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await form_of(request)
        auth.check_form(request, str(form.get(CSRF_FIELD) or ""))
        then = safe_next(str(form.get("next") or ""))
        session = auth.login(str(form.get("token") or ""))
        if session is None:
            auth.failed(request.client.host if request.client else "")
            failed = {"error": "That token is not valid.", "next": then}
            return render(request, "login.html", failed, 401)
        response = redirect(request, then)
        auth.set_cookies(request, response, session=session)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = await form_of(request)
        auth.check_form(request, str(form.get(CSRF_FIELD) or ""))
        auth.logout(request)
        response = redirect(request, "/login")
        auth.set_cookies(request, response, clear_session=True)
        return response

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(request: Request) -> Response:
        """The API reference, rendered from the OpenAPI schema, for signed-in callers."""
        who = visitor(request)
        return render(request, "api_docs.html", {"who": who, "api": app.openapi()})

    return render
