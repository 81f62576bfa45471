"""The ``jobtrack`` command. Reads go through the store; nothing here writes SQL.

Every option can also be set from an environment variable ``JOBTRACK_<OPTION>``
(``--database-url`` is ``JOBTRACK_DATABASE_URL``); ``--help`` shows each one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import AmbiguousJobId, JobNotFound, JobtrackError
from .models import FINISHED, ItemStatus, JobFilter, JobStatus, as_utc
from .settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .spool import DeadLetter, Spool
    from .store import Store
    from .tracker import Tracker

__all__ = ["main"]


class _LazyConsole:
    """Rich's console, made on first use: importing Rich is a good part of a short
    command's start-up, and ``--help`` needs none of it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)


console = _LazyConsole()
#: Every option shows its environment variable in --help (JOBTRACK_<COMMAND>_<OPTION>,
#: derived by Click from auto_envvar_prefix).
option = functools.partial(click.option, show_envvar=True)
errors = _LazyConsole(stderr=True, soft_wrap=True)  # one line per error, even when piped
STATUSES = [s.value for s in JobStatus]


class Context:
    def __init__(
        self, database_url: str | None, app: str | None, url_from_command_line: bool = False
    ) -> None:

        self._database_url = database_url
        self._url_from_command_line = url_from_command_line
        self._app_path = app
        self._app: Any = None
        self._store: Store | None = None
        self._settings: tuple[Settings, str] | None = None
        self._tracker: Tracker | None = None

    def celery_app(self) -> Any:
        if not self._app_path:
            raise click.UsageError("this command needs the Celery app: -A/--app module:app")
        if self._app is None:
            self._app = _load_app(self._app_path)
        return self._app

    def tracked_app(self) -> tuple[Any, Tracker]:
        """The Celery app (-A) and the tracker its ``install()`` made."""
        from .tracker import active_tracker_or_none

        app = self.celery_app()
        tracker = active_tracker_or_none()
        if tracker is None:
            raise click.UsageError(f"{self._app_path!r} does not call jobtrack.install(app)")
        return app, tracker

    def has_app(self) -> bool:
        return bool(self._app_path)

    def tracker(self) -> Tracker:
        """A tracker on the database this command uses (for what needs no Celery app)."""
        from .tracker import Tracker

        if self._tracker is None:
            self._tracker = Tracker(
                self.settings().replace(create_tables=False), store=self.open_store()
            )
        return self._tracker

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def settings(self) -> Settings:
        return self._resolved()[0]

    def _resolved(self) -> tuple[Settings, str]:
        """The settings and where the database URL came from. With -A the app's own
        ``install()`` decides (the database its workers write to), unless
        ``--database-url`` is given on the command line."""
        if self._settings is None:
            self._settings = self._resolve()
        return self._settings

    def _resolve(self) -> tuple[Settings, str]:
        from .tracker import active_tracker_or_none

        if self._url_from_command_line:
            conf = self.celery_app().conf if self._app_path else None
            return Settings.resolve(conf, database_url=self._database_url), "--database-url"
        if self._app_path:
            app = self.celery_app()
            tracker = active_tracker_or_none()
            if tracker is not None:
                return tracker.settings, f"the install() of {self._app_path}"
            settings = Settings.resolve(app.conf, database_url=self._database_url)
            return settings, (
                f"{self._app_path}'s configuration"
                if self._database_url is None
                else "JOBTRACK_DATABASE_URL"
            )
        settings = Settings.resolve(None, database_url=self._database_url)
        return settings, (
            "JOBTRACK_DATABASE_URL" if self._database_url is not None else "the default"
        )

    def open_store(self, *, create: bool = False) -> Store:
        """The tracking database, said on stderr (unless the output is JSON). A default
        SQLite file that does not exist is not created, except by ``create``."""
        from .store import describe_url
        from .tracker import open_store

        if self._store is None:
            settings, source = self._resolved()
            if source == "the default" and not create and _missing_sqlite(settings.database_url):
                raise click.UsageError(
                    f"no jobtrack database here ({settings.database_url} does not exist): "
                    "name one with --database-url, JOBTRACK_DATABASE_URL or -A app"
                )
            ctx = click.get_current_context(silent=True)
            if not (ctx is not None and ctx.params.get("as_json")):
                errors.print(
                    f"[dim]database: {describe_url(settings.database_url)} (from {source})[/]",
                    highlight=False,
                )
            self._store = open_store(settings, create_tables=False)
        return self._store

    @property
    def store(self) -> Store:
        return self.open_store()

    def job_id(self, given: str, *, must_exist: bool = True) -> str:
        """The whole id of the job ``given`` names (its id, or a unique start of it);
        a usage error when the start is ambiguous, or names no job and ``must_exist``
        (else ``given`` as it is: a filter that matches nothing)."""
        try:
            return self.store.resolve_id(given)
        except AmbiguousJobId as exc:
            raise click.UsageError(str(exc)) from exc
        except JobNotFound as exc:
            if must_exist:
                raise click.ClickException(str(exc)) from exc
            return given


def _load_app(path: str) -> Any:
    """``celery -A``'s lookup, as Celery does it (the module imported with the current
    folder first on the path: ``--workdir`` changes that folder), with a plain message
    for each way it can go wrong."""
    from celery.app.utils import find_app
    from celery.utils.imports import import_from_cwd

    module, colon, attribute = path.partition(":")
    try:
        import_from_cwd(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module and not module.startswith(missing + "."):
            raise click.UsageError(
                f"cannot load Celery app {path!r}: importing {module!r} "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc
        if colon or missing == module.partition(".")[0] or "." not in module:
            raise click.UsageError(
                f"cannot load Celery app {path!r}: no module named {missing!r} in the "
                f"current folder ({Path.cwd()}) or on the Python path (--workdir names "
                "another folder)"
            ) from exc
        # proj.app: a module's attribute, which Celery's lookup below finds
    except Exception as exc:
        raise click.UsageError(
            f"cannot load Celery app {path!r}: importing {module!r} "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return find_app(path)
    except Exception as exc:  # find_app raises many kinds for a bad path
        detail = f"module {module!r} has no attribute {attribute!r}" if attribute else str(exc)
        raise click.UsageError(f"cannot load Celery app {path!r}: {detail}") from exc


def _missing_sqlite(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).exists()
    )


def _since(value: str | None) -> datetime | None:
    """``30m``, ``2h``, ``7d`` ago, or an ISO timestamp."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if value[-1:] in units and value[:-1].isdigit():
        try:
            return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
        except OverflowError:
            raise click.BadParameter(f"{value!r}: reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use 30m, 2h, 7d or an ISO timestamp") from exc
    try:
        return as_utc(moment)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _reads(command: Callable[..., None]) -> Callable[..., None]:
    """A read-only command: its reads go to a replica when ``read_database_url`` names
    any (the primary when none can serve, or an error with ``read_fallback=error``)."""

    @functools.wraps(command)
    def run(obj: Context, *args: Any, **kwargs: Any) -> None:
        with obj.store.reading():
            command(obj, *args, **kwargs)

    return run


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, JobStatus):
        return value.value
    return str(value)


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))


@click.group(
    context_settings={
        "auto_envvar_prefix": "JOBTRACK",
        "show_default": True,
        "help_option_names": ["-h", "--help"],
    }
)
@option(
    "--database-url",
    envvar="JOBTRACK_DATABASE_URL",
    show_envvar=True,
    help="Tracking database (default: with -A, the one the app's "
    "jobtrack.install() uses; else sqlite:///jobtrack.db).",
)
@option(
    "-A",
    "--app",
    envvar="JOBTRACK_APP",
    show_envvar=True,
    help="Celery app, as for celery -A (module or module:attribute), found from the "
    "current folder first.",
)
@option(
    "--workdir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=lambda _ctx, _param, folder: os.chdir(folder) if folder else None,
    help="Change to this folder first, as celery --workdir (where -A is looked for).",
)
@click.pass_context
def main(ctx: click.Context, database_url: str | None, app: str | None) -> None:
    """jobtrack: durable job records for Celery tasks."""
    from_command_line = (
        ctx.get_parameter_source("database_url") is click.core.ParameterSource.COMMANDLINE
    )
    ctx.obj = Context(database_url, app, from_command_line)
    ctx.call_on_close(ctx.obj.close)


@main.group()
def db() -> None:
    """Schema management (Alembic)."""


@db.command("upgrade")
@option("--sql", is_flag=True, help="Print the SQL instead of running it.")
@click.pass_obj
def db_upgrade(obj: Context, sql: bool) -> None:
    """Create or upgrade jobtrack's tables to the newest revision."""
    from .migrate import head_revision

    if sql:
        from alembic import command

        from .migrate import alembic_config

        config = alembic_config(None)
        config.attributes["offline_url"] = obj.settings().database_url
        command.upgrade(config, "head", sql=True)
        return
    obj.open_store(create=True).ensure_schema()
    console.print(f"jobtrack schema is at revision [green]{head_revision()}[/]")


@db.command("current")
@click.pass_obj
def db_current(obj: Context) -> None:
    """Show the revision the database is at."""
    from .migrate import head_revision

    console.print(f"current: {obj.store.schema_revision() or '(none)'}   head: {head_revision()}")


@db.command("check")
@click.pass_obj
def db_check(obj: Context) -> None:
    """Exit 1 unless the database is at the newest revision."""
    from .migrate import head_revision

    current = obj.store.schema_revision()
    if current != head_revision():
        console.print(
            f"[red]database at {current or '(none)'}, jobtrack needs "
            f"{head_revision()}[/]: run jobtrack db upgrade"
        )
        sys.exit(1)
    console.print("[green]up to date[/]")


@db.command("partition")
@option(
    "--by",
    "period",
    type=click.Choice(["month", "day"]),
    help="Convert the job tables into tables partitioned by this period.",
)
@option("--json", "as_json", is_flag=True)
@click.pass_obj
def db_partition(obj: Context, period: str | None, as_json: bool) -> None:
    """Partitioned job tables (PostgreSQL): show them, or convert with --by.

    Converting rebuilds jobs, job_items, job_events and job_logs in one transaction,
    holding them meanwhile: stop the workers first (docs/operations.md). Retention then
    drops whole periods instead of deleting rows."""
    from rich.table import Table

    store = obj.open_store(create=True)
    store.ensure_schema()
    if period is not None:
        store.partition(period)
    parts = store.partitions()
    if as_json:
        _dump(
            {
                "period": store.partitioned(),
                "partitions": [
                    {
                        "name": p.name,
                        "start": p.start.isoformat() if p.start else None,
                        "end": p.end.isoformat() if p.end else None,
                        "jobs_estimate": max(p.jobs, 0),
                    }
                    for p in parts
                ],
            }
        )
        return
    if not parts:
        console.print("the job tables are not partitioned (jobtrack db partition --by month)")
        return
    table = Table("partition", "from", "to", "jobs (estimate)", box=None)
    for p in parts:
        table.add_row(
            p.name,
            p.start.isoformat() if p.start else "(default)",
            p.end.isoformat() if p.end else "",
            f"{max(p.jobs, 0):,}",
        )
    console.print(f"partitioned by [green]{store.partitioned()}[/]")
    console.print(table)


@db.group("rls", invoke_without_command=True)
@click.pass_context
def db_rls(ctx: click.Context) -> None:
    """Row-level security (PostgreSQL): whether it binds the job tables; enable, disable."""
    if ctx.invoked_subcommand is None:
        _show_rls(ctx.obj.store.row_security())


@db_rls.command("enable")
@click.pass_obj
def db_rls_enable(obj: Context) -> None:
    """Enable and force row-level security on jobs, job_items and job_events: a session
    then sees only the rows of its jobtrack.owner_id (or every owner's with '*')."""
    _show_rls(obj.store.row_security(True))


@db_rls.command("disable")
@click.pass_obj
def db_rls_disable(obj: Context) -> None:
    """Disable row-level security on the job tables (the policies stay, unused)."""
    _show_rls(obj.store.row_security(False))


def _show_rls(state: dict[str, bool]) -> None:
    for table, on in sorted(state.items()):
        console.print(f"{table}: row-level security {'[green]on[/]' if on else 'off'}")


@main.group()
def jobs() -> None:
    """List and inspect jobs."""


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The job filter's options (``jobs ls`` and the bulk actions share them)."""
    for decorator in reversed(
        [
            option("--status", type=click.Choice(STATUSES), multiple=True, help="Repeatable."),
            option("--type", "job_type", help="job_type"),
            option("--task", "task_name", help="Celery task name"),
            option("--owner", "owner_id", help="owner_id"),
            option("--queue"),
            option("--since", help="30m, 2h, 7d or an ISO timestamp"),
            option("--until", help="30m, 2h, 7d or an ISO timestamp"),
            option("--search", help="Text in the name or error message, or an exact id."),
            option("--stage", help="Jobs in this stage (progress_stage)."),
            option(
                "--ref", help="Jobs working on this ref; a final * matches every ref it starts."
            ),
            option("--workflow", help="Every job of the workflow whose root is this job id."),
            option("--group", help="The members of this group or chord header (group id)."),
            option(
                "--unhandled",
                is_flag=True,
                help="Only jobs no operator retried or replayed yet (no retried_by).",
            ),
            option("--error-group", help="The jobs of this failure group (failures ls)."),
        ]
    ):
        command = decorator(command)
    return command


def _job_filter(
    status: tuple[str, ...],
    since: str | None,
    until: str | None,
    ids: tuple[str, ...] = (),
    unhandled: bool = False,
    **fields: str | None,
) -> JobFilter:
    return JobFilter.of(
        status=list(status) or None,
        ids=list(ids) or None,
        since=_since(since),
        until=_since(until),
        handled=False if unhandled else None,
        **fields,
    )


@jobs.command("ls")
@filter_options
@option("--limit", type=click.IntRange(1, 10_000), default=50)
@option("--offset", type=click.IntRange(0), default=0)
@option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@_reads
def jobs_ls(obj: Context, /, limit: int, offset: int, as_json: bool, **filters: Any) -> None:
    """Jobs, newest first."""
    from .views import job_list_table

    found = obj.store.list_jobs(_job_filter(**filters), limit=limit, offset=offset)
    if as_json:
        _dump([dataclasses.asdict(j) for j in found])
        return
    console.print(job_list_table(found, console.width))


@jobs.command("show")
@click.argument("job_id")
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def jobs_show(obj: Context, job_id: str, as_json: bool) -> None:
    """One job: its row, attempt trace, failing items and traceback. JOB_ID may be the
    start of an id (4 characters or more) that only one job's id starts with."""
    from .views import job_detail

    job_id = obj.job_id(job_id)
    try:
        job = obj.store.get_job(job_id)
    except JobNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    events = obj.store.list_events(job_id)
    failing = obj.store.list_items(job_id, status="error", limit=10)
    if as_json:
        _dump(
            {
                "job": dataclasses.asdict(job),
                "events": [dataclasses.asdict(e) for e in events],
                "failing_items": [dataclasses.asdict(i) for i in failing],
            }
        )
        return
    for part in job_detail(job, events, failing):
        console.print(part)
    if job.traceback:
        console.rule("traceback")
        console.print(job.traceback, markup=False, highlight=False)


@jobs.command("tree")
@click.argument("job_id")
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def jobs_tree(obj: Context, job_id: str, as_json: bool) -> None:
    """The workflow JOB_ID belongs to (chain, groups, chords, tasks its tasks started)
    as a tree, each job with its status and progress. Act on it with the bulk
    commands: jobs retry --workflow ROOT_ID, jobs cancel --group GROUP_ID."""
    from .views import tree_view
    from .workflows import build_tree

    job_id = obj.job_id(job_id)
    try:
        found = obj.store.workflows.jobs(job_id)
    except JobNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    tree = build_tree(found.jobs, job_id, truncated=found.truncated)
    if as_json:
        _dump(tree.to_json())
        return
    console.print(tree_view(tree))


@jobs.command("logs")
@click.argument("job_id")
@option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
@option("--after", type=click.IntRange(0), default=0, help="Only lines after this seq.")
@option("--limit", type=click.IntRange(1, 10_000), default=10_000, help="Lines at most.")
@option("--interval", type=click.FloatRange(0.05), default=1.0, help="Seconds between reads.")
@option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@_reads
def jobs_logs(
    obj: Context,
    job_id: str,
    follow: bool,
    after: int,
    limit: int,
    interval: float,
    as_json: bool,
) -> None:
    """What the job's task logged while it ran (job_log_level and up), oldest first."""
    from .views import log_lines

    store = obj.store
    job_id = obj.job_id(job_id)
    job = store.find_job(job_id)
    if job is None:
        raise click.ClickException(str(JobNotFound(job_id)))
    shown = 0
    while True:
        lines = store.logs.lines(job_id, after=after, limit=min(limit - shown, 1000))
        for line in lines:
            if as_json:
                click.echo(json.dumps(dataclasses.asdict(line), default=_json_default))
            else:
                console.print(*log_lines([line]), markup=False, highlight=False)
        if lines:
            after, shown = lines[-1].seq, shown + len(lines)
        if shown >= limit:
            return
        if len(lines) == 1000:
            continue  # more waiting: no pause
        if not follow:
            return
        if job.status in FINISHED:  # read once more after it ended: then done
            return
        time.sleep(interval)
        job = store.find_job(job_id) or job


@jobs.command("items")
@click.argument("job_id")
@option("--status", type=click.Choice([s.value for s in ItemStatus]))
@option("--limit", type=click.IntRange(1, 100_000), default=100)
@option("--after", type=click.IntRange(0), help="Only items after this item id (a page).")
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def jobs_items(
    obj: Context, job_id: str, status: str | None, limit: int, after: int | None, as_json: bool
) -> None:
    """A job's items, in the order they were recorded."""
    from .views import items_table

    job_id = obj.job_id(job_id)
    found = obj.store.list_items(job_id, status=status, limit=limit, after=after)
    if as_json:
        _dump([dataclasses.asdict(i) for i in found])
        return
    console.print(items_table(found))


def _bulk_command(action: str, summary: str) -> None:
    """``jobtrack jobs ACTION FILTERS``: ``action`` on every job the filter matches."""

    @jobs.command(action, help=summary + _BULK_HELP)
    @filter_options
    @option("--id", "ids", multiple=True, help="A job id (repeatable): these jobs.")
    @option("--all", "every", is_flag=True, help="Every job, when no filter is given.")
    @option("--dry-run", is_flag=True, help="Print how many jobs match; change nothing.")
    @option("--yes", "-y", is_flag=True, help="Do not ask before acting.")
    @option(
        "--rate",
        type=click.FloatRange(min=0.1),
        help="Jobs per second (default: the action_rate_per_s setting).",
    )
    @click.pass_obj
    def command(
        obj: Context,
        /,
        ids: tuple[str, ...],
        every: bool,
        dry_run: bool,
        yes: bool,
        rate: float | None,
        terminate: bool = False,
        include_retried: bool = False,
        **filters: Any,
    ) -> None:
        from .actions import CLI, BulkRun, bulk_filter, start_bulk

        if filters.get("workflow"):
            filters["workflow"] = obj.job_id(filters["workflow"], must_exist=False)
        ids = tuple(obj.job_id(given, must_exist=False) for given in ids)
        where = _job_filter(ids=ids, **filters)
        if where.is_empty() and not every:
            raise click.UsageError(
                "an empty filter: give filter options or --id, or --all for every job"
            )
        matched = obj.store.actions.count_matching(
            bulk_filter(action, where, include_retried=include_retried)
        )
        console.print(f"{matched:,} job(s) match", highlight=False)
        if dry_run or not matched:
            return
        if not yes:
            click.confirm(f"{action} {matched:,} job(s)?", abort=True)
        if action == "delete":
            app, tracker = obj.tracked_app() if obj.has_app() else (None, obj.tracker())
        else:
            app, tracker = obj.tracked_app()
        chosen = {"terminate": terminate, "include_retried": include_retried}
        options = {k: True for k, v in chosen.items() if v} or None
        action_id = start_bulk(tracker, CLI, action, where, every=every, options=options)
        console.print(f"action #{action_id}: {action}", highlight=False)
        _run_bulk(BulkRun(app, tracker, action_id, rate_per_s=rate))
        tracker.flush()

    if action == "cancel":
        option("--terminate", is_flag=True, help="Also stop running jobs at once (SIGTERM).")(
            command
        )
    if action == "retry":
        option(
            "--include-retried",
            is_flag=True,
            help="Also the jobs an operator retried (or replayed) already; left out otherwise.",
        )(command)


_BULK_HELP = """

    The matching jobs are counted first (and you are asked, unless --yes); their ids
    are taken then, so jobs arriving later are not included. Every job acted on is
    recorded in the audit trail (jobtrack actions ls). An empty filter is refused
    unless --all is given."""

for _action, _summary in (
    (
        "retry",
        "Retry every failed, cancelled or lost job the filter matches (needs -A); "
        "jobs retried already (unless --include-retried) and jobs whose input was not "
        "stored whole are skipped.",
    ),
    ("cancel", "Cancel every job the filter matches (needs -A); finished ones are skipped."),
    ("pause", "Pause every job the filter matches (needs -A)."),
    ("resume", "Resume every paused job the filter matches (needs -A)."),
    (
        "delete",
        "Delete every finished job the filter matches, with its items and events; "
        "running and queued jobs are skipped (clear completed: --status completed).",
    ),
):
    _bulk_command(_action, _summary)


def _run_bulk(run: Any) -> None:
    """Run a bulk action with a progress line; exit 1 if any job failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=errors.rich
    ) as bar:
        task = bar.add_task(f"action #{run.action_id}", total=None)

        def step(action: Any) -> None:
            bar.update(
                task, total=action.matched, completed=action.done + action.skipped + action.failed
            )

        run.on_batch = step
        try:
            done = run.run()
        except JobtrackError as exc:
            raise click.ClickException(str(exc)) from exc
    console.print(
        f"action #{done.id} {done.status}: {done.done:,} done, {done.skipped:,} skipped, "
        f"{done.failed:,} failed (of {done.matched:,})",
        highlight=False,
    )
    if done.failed:
        sys.exit(1)


@main.group()
def failures() -> None:
    """Failed jobs grouped by what failed: task, error type and masked message."""


@failures.command("ls")
@option("--task", "task_name", help="Celery task name")
@option("--type", "job_type", help="job_type")
@option("--queue")
@option("--owner", "owner_id", help="owner_id")
@option("--limit", type=click.IntRange(1, 1000), default=50)
@option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def failures_ls(obj: Context, /, limit: int, as_json: bool, **filters: str | None) -> None:
    """Failure groups: failed and lost jobs nobody retried or replayed yet, grouped by
    task, error type and message (numbers, ids and quoted values masked), the most
    recently seen first, with their counts over the last 24 hours. Retry a group with
    jobs retry --error-group KEY --status failed --status lost."""
    from .store.failures import HOURS as FAILURE_HOURS
    from .views import failures_table

    now = datetime.now(UTC)
    found = obj.store.failures.groups(JobFilter.of(**filters), now=now, limit=limit)
    if as_json:
        _dump(
            {
                "groups": [dataclasses.asdict(g) for g in found],
                "hours_from": now - timedelta(hours=FAILURE_HOURS),
            }
        )
        return
    if not found:
        console.print("no unhandled failures")
        return
    console.print(failures_table(found))


def _survey(obj: Context) -> Any:
    from .fleet import survey

    app = obj.celery_app() if obj.has_app() else None
    return survey(app, obj.store, now=datetime.now(UTC))


def _survey_json(found: Any, part: str) -> None:
    _dump(
        {
            "at": found.at,
            "inspected": found.inspected,
            "answered": found.answered,
            part: [
                {**dataclasses.asdict(x), **({"paused": x.paused} if part == "queues" else {})}
                for x in getattr(found, part)
            ],
            **({"rate_limits": found.rate_limits} if part == "workers" else {}),
        }
    )


@main.group(invoke_without_command=True)
@option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """The workers: pool and size, busy slots, tasks a minute, last heartbeat, the
    queues each consumes (from jobtrack's rows, and with -A from the workers
    themselves). Subcommands change them (needs -A; recorded in the audit trail)."""
    from .views import workers_view

    if ctx.invoked_subcommand is not None:
        return
    found = _survey(ctx.obj)
    if as_json:
        _survey_json(found, "workers")
        return
    if not found.workers:
        console.print("no worker seen (none running a job or finishing one lately)")
    else:
        console.print(workers_view(found))
    for task, rate in sorted(found.rate_limits.items()):
        console.print(f"rate limit in effect: {task} {rate}", highlight=False)
    if not found.inspected:
        errors.print("without -A the workers are not asked: their rows only")


def _control(obj: Context, action: str, **given: Any) -> None:
    from .actions import CLI, change_workers

    app, tracker = obj.tracked_app()
    try:
        console.print(change_workers(app, tracker, CLI, action, **given), highlight=False)
    except JobtrackError as exc:
        raise click.ClickException(str(exc)) from exc


@workers.command("scale")
@click.argument("worker")
@click.argument("concurrency", type=click.IntRange(1, 1000))
@click.pass_obj
def workers_scale(obj: Context, worker: str, concurrency: int) -> None:
    """Grow or shrink WORKER's pool (celery@host, or the host) to CONCURRENCY
    processes (prefork pools; needs -A)."""
    _control(obj, "worker-scale", worker=worker, concurrency=concurrency)


@workers.command("rate-limit")
@click.argument("task")
@click.argument("rate")
@click.pass_obj
def workers_rate_limit(obj: Context, task: str, rate: str) -> None:
    """Set TASK's rate limit on every live worker: 10/s, 100/m, 1000/h, or 0 for none
    (needs -A)."""
    _control(obj, "rate-limit", task=task, rate=rate)


@main.group(invoke_without_command=True)
@option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """The queues: depth in the broker, jobs queued per jobtrack, the oldest one's
    wait, which live workers consume each; a queue with jobs and no consumer is a
    problem (with -A; without it, jobtrack's rows only)."""
    from .views import queues_view

    if ctx.invoked_subcommand is not None:
        return
    found = _survey(ctx.obj)
    if as_json:
        _survey_json(found, "queues")
        return
    console.print(queues_view(found))
    if not found.inspected:
        errors.print(
            "without -A neither the workers nor the broker are asked: jobtrack's rows only"
        )


@queues.command("pause")
@click.argument("queue")
@click.pass_obj
def queues_pause(obj: Context, queue: str) -> None:
    """Every live worker stops consuming QUEUE: its jobs wait in the broker (needs -A)."""
    _control(obj, "queue-pause", queue=queue)


@queues.command("resume")
@click.argument("queue")
@click.pass_obj
def queues_resume(obj: Context, queue: str) -> None:
    """Every live worker consumes QUEUE again (needs -A)."""
    _control(obj, "queue-resume", queue=queue)


@main.group()
def actions() -> None:
    """The audit trail of operator actions; resume an interrupted bulk action."""


@actions.command("ls")
@option("--job", "job_id", help="Only actions that touched this job.")
@option("--limit", type=click.IntRange(1, 1000), default=50)
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def actions_ls(obj: Context, job_id: str | None, limit: int, as_json: bool) -> None:
    """Operator actions, newest first: who did what, when, to which jobs, and the counts."""
    from .views import actions_table

    if job_id is not None:  # a deleted job's entries stay: an id that names none is kept
        job_id = obj.job_id(job_id, must_exist=False)
    found = obj.store.actions.list_actions(limit=limit, job_id=job_id)
    if as_json:
        _dump([dataclasses.asdict(a) for a in found])
        return
    console.print(actions_table(found))


@actions.command("show")
@click.argument("action_id", type=int)
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def actions_show(obj: Context, action_id: int, as_json: bool) -> None:
    """One action: its filter, progress and counts."""
    from .views import actions_table

    try:
        found = obj.store.actions.get_action(action_id)
    except JobNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _dump(dataclasses.asdict(found))
        return
    console.print(actions_table([found]))
    console.print(f"filter: {json.dumps(found.filter, ensure_ascii=False)}", highlight=False)
    if found.outcome:
        console.print(f"outcome: {found.outcome}", highlight=False)


@actions.command("resume")
@click.argument("action_ids", type=int, nargs=-1)
@option("--all", "every", is_flag=True, help="Every unfinished bulk action.")
@click.pass_obj
def actions_resume(obj: Context, action_ids: tuple[int, ...], every: bool) -> None:
    """Run interrupted bulk actions on to their end (needs -A, except for delete). Jobs
    already acted on are not acted on again."""
    from .actions import BulkRun

    if every:
        action_ids = tuple(a.id for a in obj.store.actions.unfinished_actions())
    elif not action_ids:
        raise click.UsageError("name actions, or give --all")
    for action_id in action_ids:
        try:
            kind = obj.store.actions.get_action(action_id).action
        except JobNotFound as exc:
            raise click.ClickException(str(exc)) from exc
        app, tracker = (
            obj.tracked_app() if kind != "delete" or obj.has_app() else (None, obj.tracker())
        )
        _run_bulk(BulkRun(app, tracker, action_id))
        tracker.flush()


@main.group()
def alerts() -> None:
    """Alert rules (see docs/alerts.md): check the rule file, run the runner, test a rule."""


def _alert_config(obj: Context, rules_file: str | None) -> Any:
    from .alerts import RuleFileError, config_from, load

    try:
        config = load(rules_file) if rules_file else config_from(obj.settings())
    except RuleFileError as exc:
        errors.print(f"[red]{exc}[/]", highlight=False)
        sys.exit(1)
    if config is None:
        raise click.UsageError(
            "no alert rules: give --file, or set JOBTRACK_ALERTS_FILE (alerts_file)"
        )
    return config


@alerts.command("check")
@option("--file", "rules_file", help="The rule file (default: the alerts_file setting).")
@click.pass_obj
def alerts_check(obj: Context, rules_file: str | None) -> None:
    """Validate the rules and channels; on a problem print file:line and exit 1."""
    config = _alert_config(obj, rules_file)
    for rule in config.rules:
        console.print(
            f"rule {rule.name}: {rule.kind} of {rule.scope.describe()} -> "
            f"{', '.join(rule.channels)}",
            highlight=False,
            soft_wrap=True,
        )
    for name, channel in sorted(config.channels.items()):
        console.print(f"channel {name}: {channel.describe()}", highlight=False)
    console.print(
        f"[green]{config.source}: {len(config.rules)} rule(s), "
        f"{len(config.channels)} channel(s), OK[/]",
        highlight=False,
        soft_wrap=True,
    )


@alerts.command("run")
@option("--file", "rules_file", help="The rule file (default: the alerts_file setting).")
@option("--once", is_flag=True, help="One pass, then exit.")
@option("--interval", "interval_s", type=click.FloatRange(0.1), help="Seconds between passes.")
@click.pass_obj
def alerts_run(obj: Context, rules_file: str | None, once: bool, interval_s: float | None) -> None:
    """Evaluate the rules and deliver their messages, every --interval (alerts_interval_s);
    one runner per database evaluates at a time (a lease)."""
    import threading

    from .alerts import AlertRunner

    config = _alert_config(obj, rules_file)
    settings = obj.settings()
    if interval_s is not None:
        settings = settings.replace(alerts_interval_s=interval_s)
    runner = AlertRunner(obj.store, config, settings)
    if once:
        report = runner.run_once()
        console.print(
            f"{len(report.alerts)} alert(s), {len(report.sent)} delivered, "
            f"{len(report.failed)} failed"
            + ("" if report.evaluated else " (another runner holds the lease)"),
            highlight=False,
        )
        return
    console.print(
        f"evaluating {len(config.rules)} rule(s) every {settings.alerts_interval_s:g} s "
        "(Ctrl-C to stop)",
        highlight=False,
    )
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        runner.run_forever(stop)


@alerts.command("test")
@click.argument("rule")
@option("--file", "rules_file", help="The rule file (default: the alerts_file setting).")
@click.pass_obj
def alerts_test(obj: Context, rule: str, rules_file: str | None) -> None:
    """Send a sample message of RULE to each of its channels; exit 1 if one failed."""
    from .alerts import AlertRunner

    config = _alert_config(obj, rules_file)
    try:
        config.rule(rule)
    except KeyError:
        raise click.UsageError(
            f"no rule named {rule!r} (rules: {', '.join(r.name for r in config.rules)})"
        ) from None
    report = AlertRunner(obj.store, config, obj.settings()).send_test(rule)
    for delivery_id in report.sent:
        console.print(f"delivery {delivery_id}: sent", highlight=False)
    for delivery_id, problem in report.failed:
        errors.print(f"[red]delivery {delivery_id}: {problem}[/]", highlight=False)
    if report.failed:
        sys.exit(1)


@main.command()
@option("--since", default="24h", help="Window: 30m, 2h, 7d or an ISO timestamp.")
@option(
    "--by",
    type=click.Choice(["task", "type"]),
    help="Trends per task name (or job type), per bucket of --every.",
)
@option("--every", default="1h", help="With --by: the bucket, 1m to 7d.")
@option("--key", help="With --by: one task name (or job type) only.")
@option("--json", "as_json", is_flag=True)
@click.pass_obj
@_reads
def stats(
    obj: Context, since: str, by: str | None, every: str, key: str | None, as_json: bool
) -> None:
    """Counts by status and type, failure rate and durations; with --by, per task (or
    type) and per bucket: completed, failed, failure rate, run time and queue wait
    p50/p95 (jobs count in the bucket they finished in)."""
    from .insights import BadWindow, report, window
    from .views import stats_view, trends_view

    if by is not None:
        try:
            found = report(obj.store, window(since, every), by=by, key=key, limit=10_000)
        except BadWindow as exc:
            raise click.BadParameter(str(exc)) from exc
        if as_json:
            _dump(found.to_json())
            return
        for table in trends_view(found):
            console.print(table)
        return
    result = obj.store.stats(since=_since(since))
    if as_json:
        _dump(dataclasses.asdict(result))
        return
    for part in stats_view(result, since):
        console.print(part)


@main.command()
@option("--interval", type=click.FloatRange(0.1), default=1.0, help="Seconds.")
@option("--type", "job_type", help="Only this job_type.")
@option("--limit", type=click.IntRange(1, 500), default=30)
@option("--once", is_flag=True, help="Print one view and exit (scripts, tests).")
@click.pass_obj
def watch(obj: Context, interval: float, job_type: str | None, limit: int, once: bool) -> None:
    """A live view of running jobs with progress bars (Ctrl-C to leave)."""
    from rich.live import Live

    from .views import progress_table

    active = ["running", "retrying", "pending"]

    def view() -> Table:
        with obj.store.reading():  # each refresh chooses its server again
            return read_view()

    def read_view() -> Table:
        found = obj.store.list_jobs(JobFilter.of(status=active, job_type=job_type), limit=limit)
        found.sort(
            key=lambda j: (
                active.index(j.status.value),
                j.started_at or j.created_at or datetime.min.replace(tzinfo=UTC),
            )
        )
        counts = obj.store.count_by_status(active, where=JobFilter.of(job_type=job_type))
        title = "   ".join(f"{s}: {counts.get(s, 0)}" for s in active)
        return progress_table(found, title)

    if once:
        console.print(view())
        return
    with (
        contextlib.suppress(KeyboardInterrupt),
        Live(view(), console=console.rich, refresh_per_second=4) as live,
    ):
        while True:
            time.sleep(interval)
            live.update(view())


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@option(
    "--failed-items",
    is_flag=True,
    help="Run a finished job again under its own id, its task given only the failed "
    "items' keys (job.retry_items).",
)
@click.pass_obj
def retry(obj: Context, job_ids: tuple[str, ...], failed_items: bool) -> None:
    """Publish failed, cancelled or lost jobs again with their original arguments
    (needs -A). Each becomes a new job; its metadata names the old one."""
    from .actions import CLI, perform

    app, tracker = obj.tracked_app()

    def run(job_id: str) -> str:
        new_id = perform(app, tracker, CLI, "retry", job_id, failed_items=failed_items)
        return "retrying its failed items" if failed_items else f"new job {new_id}"

    ok = _for_each(tracker, job_ids, run)
    tracker.flush()
    if not ok:
        sys.exit(1)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@option("--terminate", is_flag=True, help="Also stop running jobs at once (SIGTERM, prefork).")
@click.pass_obj
def cancel(obj: Context, job_ids: tuple[str, ...], terminate: bool) -> None:
    """Cancel jobs (needs -A): queued and paused ones at once, running ones at their
    next progress, item or check call (in every pool)."""
    from .actions import CLI, perform

    app, tracker = obj.tracked_app()
    if not _for_each(
        tracker,
        job_ids,
        lambda job_id: perform(app, tracker, CLI, "cancel", job_id, terminate=terminate),
    ):
        sys.exit(1)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_obj
def pause(obj: Context, job_ids: tuple[str, ...]) -> None:
    """Pause jobs (needs -A): queued ones at once, running ones at their next progress,
    item, stage, checkpoint or check call (within one heartbeat interval)."""
    from .actions import CLI, perform

    app, tracker = obj.tracked_app()
    if not _for_each(tracker, job_ids, lambda job_id: perform(app, tracker, CLI, "pause", job_id)):
        sys.exit(1)


@main.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_obj
def resume(obj: Context, job_ids: tuple[str, ...]) -> None:
    """Resume paused jobs (needs -A): each runs again under its own id and reads
    job.last_checkpoint to go on from where it stopped."""
    from .actions import CLI, perform

    app, tracker = obj.tracked_app()
    if not _for_each(tracker, job_ids, lambda job_id: perform(app, tracker, CLI, "resume", job_id)):
        sys.exit(1)


def _for_each(tracker: Tracker, job_ids: tuple[str, ...], action: Callable[[str], str]) -> bool:
    """Run ``action`` on the job each id names (or starts: a unique start of an id is
    taken for it), printing its outcome; False if any failed."""
    outcomes = [_report(tracker, job_id, action) for job_id in job_ids]  # every id
    return all(outcomes)


def _report(tracker: Tracker, given: str, action: Callable[[str], str]) -> bool:
    try:
        job_id = tracker.store.resolve_id(given)
        console.print(f"{job_id}: {action(job_id)}")
    except JobtrackError as exc:
        errors.print(f"[red]{exc}[/]", highlight=False)
        return False
    return True


@main.group(invoke_without_command=True)
@click.pass_context
def spool(ctx: click.Context) -> None:
    """Spooled and dead-lettered tracking data (see docs/reliability.md).

    Without a subcommand: list both. Dead letters are rows the database refused even
    after cleaning; ``replay`` tries them again (after you fixed the cause), ``discard``
    deletes them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(spool_ls)


def _spool(obj: Context) -> Spool:
    from .spool import Spool
    from .writer import default_spool_dir

    settings = obj.settings()
    return Spool(settings.spool_dir or default_spool_dir(), settings.database_url)


@spool.command("ls")
@option("--json", "as_json", is_flag=True)
@click.pass_obj
def spool_ls(obj: Context, as_json: bool) -> None:
    """Spool files waiting for replay, and dead letters."""
    from .views import dead_letters_table

    found = _spool(obj)
    pending, dead = found.pending(), found.dead_letters()
    if as_json:
        _dump(
            {
                "spooled": [str(p) for p in pending],
                "dead_letters": [dataclasses.asdict(d) for d in dead],
            }
        )
        return
    console.print(
        f"{len(pending)} spool file(s) waiting in {found.directory} (replayed "
        "by any tracking process of this database)",
        highlight=False,
    )
    console.print(dead_letters_table(dead))


def _letters(obj: Context, names: tuple[str, ...], every: bool) -> list[DeadLetter]:
    letters = _spool(obj).dead_letters()
    if every:
        return letters
    if not names:
        raise click.UsageError("name dead letters (their file names) or give --all")
    chosen = [d for d in letters if d.path.name in names]
    missing = set(names) - {d.path.name for d in chosen}
    if missing:
        raise click.ClickException(f"no dead letter named {', '.join(sorted(missing))}")
    return chosen


@spool.command("replay")
@click.argument("names", nargs=-1)
@option("--all", "every", is_flag=True, help="Every dead letter of this database.")
@click.pass_obj
def spool_replay(obj: Context, names: tuple[str, ...], every: bool) -> None:
    """Write dead letters to the database again (cleaned once more); each one written is
    removed, each one still refused is kept and said why."""
    from .errors import DataRefused
    from .models import Batch
    from .spool import Spool
    from .writer import cleaner_for

    store, clean = obj.store, cleaner_for(obj.settings())
    found, refused = _spool(obj), 0
    for letter in _letters(obj, names, every):
        try:
            raw = Spool.read(letter.path)
        except Exception as exc:  # an unreadable file stays for a person to look at
            errors.print(f"[red]{letter.path.name}: unreadable ({exc})[/]", highlight=False)
            refused += 1
            continue
        batch = Batch(
            [clean.deep(u) for u in raw.updates],
            [clean.deep(e) for e in raw.events],
            [clean.deep(i) for i in raw.items],
            [clean.deep(line) for line in raw.logs],
        )
        try:
            store.write_batch(batch)
        except DataRefused as exc:
            errors.print(f"[red]{letter.path.name}: still refused: {exc}[/]", highlight=False)
            refused += 1
            continue
        found.discard(letter)
        console.print(f"{letter.path.name}: written")
    if refused:
        sys.exit(1)


@spool.command("discard")
@click.argument("names", nargs=-1)
@option("--all", "every", is_flag=True, help="Every dead letter of this database.")
@click.pass_obj
def spool_discard(obj: Context, names: tuple[str, ...], every: bool) -> None:
    """Delete dead letters."""
    found = _spool(obj)
    for letter in _letters(obj, names, every):
        found.discard(letter)
        console.print(f"{letter.path.name}: discarded")


@main.command()
@option("--older-than", help="30d, 12h …; without it, the keep_*_days settings.")
@option(
    "--status",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Repeatable (default: completed, failed, cancelled, lost).",
)
@option("--batch-size", type=click.IntRange(1, 100_000), default=5000)
@option("--json", "as_json", is_flag=True)
@click.pass_obj
def prune(
    obj: Context, older_than: str | None, status: tuple[str, ...], batch_size: int, as_json: bool
) -> None:
    """Delete finished jobs (with their items and events) in batches."""
    from .maintenance import prune_by_retention

    if older_than is None:
        if status:
            raise click.UsageError("--status needs --older-than")
        removed = prune_by_retention(obj.store, obj.settings())
    else:
        statuses = list(status) or sorted(s.value for s in FINISHED)
        removed = {
            ",".join(statuses): obj.store.prune(
                finished_before=_since(older_than) or datetime.now(UTC),
                statuses=statuses,
                batch_size=batch_size,
            )
        }
    if as_json:
        _dump(removed)
        return
    for statuses_, count in removed.items():
        if statuses_ == "partitions":
            console.print(f"dropped {count} period(s) of partitions")
        elif statuses_ == "jobs":
            console.print(f"pruned {count} job(s) with them")
        elif statuses_ == "actions":
            console.print(f"pruned {count} audit entries")
        elif statuses_ == "alerts":
            console.print(f"pruned {count} alert messages")
        else:
            console.print(f"pruned {count} {statuses_} job(s)")


@main.command()
@option(
    "--lost-after",
    "lost_after_s",
    type=float,
    help="Seconds without heartbeat (default: the lost_after_s setting).",
)
@option(
    "--pending-after",
    "pending_after_s",
    type=float,
    help="With -A (Redis): seconds a job stays pending before it is marked lost if its "
    "message is gone from the broker (default: the pending_lost_after_s setting).",
)
@option("--json", "as_json", is_flag=True)
@click.pass_obj
def reap(
    obj: Context, lost_after_s: float | None, pending_after_s: float | None, as_json: bool
) -> None:
    """Mark running jobs whose worker stopped beating as lost; with -A, also pending
    jobs whose message the broker no longer has (purged, expired: Redis only)."""
    from .maintenance import reap as reap_lost
    from .maintenance import reap_vanished

    settings = obj.settings()
    lost = reap_lost(obj.store, settings.lost_after_s if lost_after_s is None else lost_after_s)
    if obj.has_app():
        after = settings.pending_lost_after_s if pending_after_s is None else pending_after_s
        lost += reap_vanished(obj.celery_app(), obj.store, after)
    if as_json:
        _dump(lost)
        return
    console.print(f"marked {len(lost)} job(s) lost" + (": " + ", ".join(lost) if lost else ""))


@main.command()
@option("--port", type=click.IntRange(1, 65535), default=9808)
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option(
    "--window",
    "window_s",
    type=float,
    default=3600.0,
    help="Seconds covered by the duration histogram and failure ratio.",
)
@click.pass_obj
def metrics(obj: Context, port: int, host: str, window_s: float) -> None:
    """Serve Prometheus metrics read from the tracking database at each scrape."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server

        from .metrics import JobtrackCollector
    except ImportError as exc:
        raise click.UsageError("metrics need the prometheus extra (prometheus-client)") from exc
    registry = CollectorRegistry()
    registry.register(
        JobtrackCollector(obj.store, window_s=window_s, stale_after_s=obj.settings().lost_after_s)
    )
    server, thread = start_http_server(port, addr=host, registry=registry)
    console.print(f"serving metrics on http://{host}:{port}/metrics")
    with contextlib.suppress(KeyboardInterrupt):
        thread.join()
    server.shutdown()


@main.command()
@option("--port", type=click.IntRange(1, 65535), default=8808)
@option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on; off loopback, set JOBTRACK_WEB_TOKENS.",
)
@click.pass_obj
def web(obj: Context, port: int, host: str) -> None:
    """Serve the dashboard, the JSON API and /metrics (Retry and Cancel need -A)."""
    try:
        from .web import create_app
        from .web.auth import LOOPBACK_HOSTS
        from .web.server import ListeningServer, server_config
    except ImportError as exc:
        raise click.UsageError(
            "the dashboard needs the web extra (fastapi, uvicorn, jinja2)"
        ) from exc
    from .control import JobControl

    settings = obj.settings()
    control = JobControl(*obj.tracked_app()) if obj.has_app() else None
    if not settings.web_tokens and host not in LOOPBACK_HOSTS:
        errors.print(
            "[yellow]warning:[/] no JOBTRACK_WEB_TOKENS: only loopback clients will be served",
            highlight=False,
        )
    shown = f"[{host}]" if ":" in host else host

    def listening() -> None:  # once the socket is bound: a port in use says so instead
        console.print(
            f"dashboard on http://{shown}:{port}/  (API: /api/docs, live stream: "
            "/api/stream, metrics: /metrics)",
            highlight=False,
        )

    asgi = create_app(obj.store, settings, control=control)
    server = ListeningServer(server_config(asgi, settings, host=host, port=port), listening)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down already
        server.run()
    if not server.started:
        sys.exit(1)


@main.command()
@option(
    "--timeout", "timeout_s", type=float, default=120.0, help="Give up after this many seconds."
)
def demo(timeout_s: float) -> None:
    """Run the demo: a real worker, a realistic batch, the table live."""
    from .demo import run

    sys.exit(run(timeout_s=timeout_s))


def run() -> None:  # pragma: no cover - console entry point wrapper
    try:
        main()
    except JobtrackError as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    run()
