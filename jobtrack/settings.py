"""jobtrack's configuration: one frozen object, read in this module only.

Each setting is looked up, first found wins: the keyword given to ``install()``, the
Celery configuration key ``jobtrack_<name>``, the environment variable
``JOBTRACK_<NAME>``, then the default below. One exception: ``JOBTRACK_ENABLED=0`` in the
environment always switches tracking off, whatever the code says (an operator's kill
switch).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from .errors import ConfigurationError

__all__ = ["DEFAULT_REDACT_KEYS", "ENV_PREFIX", "Settings", "WriteMode"]

ENV_PREFIX = "JOBTRACK_"
#: URL schemes of the databases jobtrack supports.
SUPPORTED_DATABASES = frozenset({"postgresql", "postgres", "sqlite", "mysql", "mariadb"})
WriteMode = Literal["buffered", "sync"]
DEFAULT_REDACT_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
)


@dataclass(frozen=True)
class Settings:
    """Every knob jobtrack has. Build it with :meth:`resolve`, or directly in tests."""

    #: SQLAlchemy URL of the tracking database.
    database_url: str = "sqlite:///jobtrack.db"
    #: Streaming replicas of the tracking database (PostgreSQL) for reads: the
    #: dashboard's, the API's, Insights', the CLI's and the alert rules'. Several:
    #: comma-separated, each read going to one in turn. Writes, actions, leases and the
    #: workers stay on ``database_url``. Empty: every read on ``database_url``.
    read_database_url: tuple[str, ...] = ()
    #: A replica further behind than this many seconds is left out of reads.
    read_max_lag_s: float = 30.0
    #: What reads do when no replica can serve them (all down or too far behind):
    #: ``primary`` reads ``database_url``; ``error`` answers 503 (the CLI: an error)
    #: with the reason.
    read_fallback: str = "primary"
    #: After an operator action, the next read waits up to this many seconds for a
    #: replica to replay it (read-your-writes); then it reads the primary (``error``:
    #: the replica, saying it is behind).
    read_wait_s: float = 2.0
    #: Track at all. ``JOBTRACK_ENABLED=0`` is the operator's kill switch.
    enabled: bool = True
    #: Track every task of the app (True) or only tasks decorated with ``@track``.
    track_all: bool = True
    #: Create or upgrade the tables (Alembic, to head) on first use.
    create_tables: bool = True
    #: A worker whose tracking database cannot be used when it starts (unreachable,
    #: refused, tables missing or behind) stops at once, saying why, instead of warning
    #: and spooling: for deployments that prefer a crash loop to a silent spool.
    require_database: bool = False
    #: ``buffered``: a background thread per process writes batches; ``sync``: every
    #: transition is committed before the task goes on.
    write_mode: WriteMode = "buffered"
    #: How often the buffered writer flushes, in seconds.
    flush_interval_s: float = 0.25
    #: Flush early once this many jobs are waiting in the buffer.
    flush_max_jobs: int = 500
    #: Flush early once this many items are waiting in the buffer.
    flush_max_items: int = 5000
    #: Most jobs (and ten times as many items) kept in memory while the database is
    #: unreachable; beyond it the buffer is moved to a spool file, replayed in order.
    buffer_max_jobs: int = 100_000
    #: Folder for spool files ("" = jobtrack-spool in the system's temp directory).
    spool_dir: str = ""
    #: Send Flower's progress event at most this often per job, in seconds. (Progress
    #: itself is written at each flush, in both write modes, and always when the task
    #: ends.)
    progress_interval_s: float = 0.5
    #: Send a ``task-progress`` Celery event with each job's progress (at most every
    #: progress_interval_s), so Flower shows running jobs as PROGRESS.
    progress_events: bool = True
    #: Largest JSON document stored for input, output, metadata and item states.
    max_payload_bytes: int = 64 * 1024
    #: Longest error message, progress message or item message, in characters.
    max_message_chars: int = 4000
    #: Longest traceback kept, in characters (the end is kept: it holds the error).
    max_traceback_chars: int = 32_000
    #: Longest job name kept, in characters (a name template filled from a huge
    #: argument is cut here).
    max_name_chars: int = 500
    #: Argument names whose values are replaced by "[redacted]" in input_data (case
    #: insensitive, matched as substrings: "db_password" is caught by "password").
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    #: Log records a task emits while it runs (its own loggers and any other, print()
    #: through Celery's redirect included) at or above this level are kept with its job
    #: in ``job_logs``. DEBUG, INFO, WARNING, ERROR or CRITICAL; OFF keeps none.
    job_log_level: str = "INFO"
    #: Most log lines kept per job; past it one line says how many were dropped.
    job_log_lines: int = 10_000
    #: How often a running job's worker refreshes heartbeat_at, in seconds.
    heartbeat_interval_s: float = 10.0
    #: A running job whose heartbeat is older than this is marked lost by the reaper.
    lost_after_s: float = 120.0
    #: A job still pending this long after it was queued (or last changed), whose
    #: message is in no queue and held by no worker (purged, expired), is marked lost
    #: by the reaper. Only where the broker can be read (Redis); 0 turns it off.
    pending_lost_after_s: float = 600.0
    #: Workers detect lost jobs themselves: each worker's main process tries every
    #: reap_interval_s, and one worker per database (a lease row) does the work.
    reap_in_workers: bool = True
    #: How often workers look for lost jobs (and the jobtrack.reap task's usual period).
    reap_interval_s: float = 30.0
    #: The reaper (in workers, or the jobtrack.reap task) re-publishes each lost job
    #: (same id, next retry) while its retries stay within max_retries, when its
    #: recorded input is complete.
    reap_republish: bool = False
    #: Days to keep completed jobs (0 = forever); used by jobtrack.prune and
    #: ``jobtrack prune`` without --older-than.
    keep_completed_days: float = 30.0
    #: Days to keep failed jobs (0 = forever).
    keep_failed_days: float = 90.0
    #: Days to keep cancelled and lost jobs (0 = forever).
    keep_cancelled_days: float = 30.0
    #: Days to keep the audit trail of operator actions (0 = forever).
    keep_actions_days: float = 365.0
    #: Days to keep alert messages, their deliveries and which jobs they reported.
    keep_alerts_days: float = 30.0
    #: The alert rules and channels: a TOML file (see docs/alerts.md).
    alerts_file: str = ""
    #: The same as TOML text, for configuration without a file (alerts_file wins).
    alerts_rules: str = ""
    #: How often ``jobtrack alerts run`` evaluates the rules and delivers, in seconds.
    alerts_interval_s: float = 30.0
    #: The dashboard's address as people reach it (``https://jobs.example.com``): alert
    #: messages link to job pages under it. Empty: no links.
    web_public_url: str = ""
    #: A bulk action (retry, cancel, ... of every job a filter matches) acts on at most
    #: this many jobs per second: its publishing never floods the broker or the workers.
    action_rate_per_s: float = 1000.0
    #: A bulk action's jobs are taken, recorded and published this many at a time; a run
    #: killed mid-way sends at most one such batch again when it is resumed.
    action_batch_size: int = 500
    #: API tokens, comma-separated ``[name:]token=role[:owner_id]`` (role ``viewer`` or
    #: ``operator``; the name is what the audit trail shows, else ``token N``). Without
    #: any, only loopback clients are served.
    web_tokens: str = ""
    #: Addresses or networks (``10.0.0.5``, ``10.0.0.0/8``; ``*`` for any) of the proxies
    #: in front of ``jobtrack web`` whose ``X-Forwarded-For`` and ``X-Forwarded-Proto``
    #: it believes. Empty: none; the client is the connection's peer.
    web_trusted_proxies: tuple[str, ...] = ()
    #: Requests a minute per principal (a token, its sessions with it), or per client
    #: address before sign-in, on every route: a token bucket of this many, which a
    #: burst may spend at once, refilled one every 60 / this seconds.
    web_rate_limit_per_min: int = 600
    #: Failed authentications (wrong bearer token or sign-in) a minute per client
    #: address: a token bucket of this many; once it is empty the address gets 429
    #: everywhere until it refills (one every 60 / this seconds).
    web_auth_failures_per_min: int = 20
    #: Key that signs dashboard sessions. Set it to keep sessions across restarts and
    #: server processes; change it to end every session. Empty: a random key per process.
    web_secret: str = ""
    #: How long a dashboard session lasts after sign-in, in seconds.
    web_session_max_age_s: float = 12 * 3600.0
    #: Open live streams (GET /api/stream) per principal and per client address; past
    #: it, 429.
    web_max_streams: int = 8
    #: Tasks ``POST /api/jobs`` may start (names, comma-separated in the environment).
    #: Empty: none; the endpoint answers 403.
    web_publishable_tasks: tuple[str, ...] = ()
    #: Largest request body ``POST /api/jobs`` reads, in bytes; past it, 413.
    web_max_body_bytes: int = 65536
    #: Every database read (and write) a dashboard or API request makes stops after this
    #: many seconds: the request answers 503 saying so, and the connection is free.
    web_query_timeout_s: float = 5.0
    #: Flower's address (e.g. ``http://localhost:5555``); job pages then link to the
    #: task's page there. Empty: no link.
    web_flower_url: str = ""
    #: Where the database has no LISTEN/NOTIFY (SQLite), the dashboard's live stream
    #: looks for changed jobs this often, in seconds.
    web_poll_interval_s: float = 1.0
    #: Seconds to wait for a database connection before giving up on a write.
    connect_timeout_s: float = 5.0
    #: At process exit (and a worker's shutdown), seconds to keep trying to write what
    #: is buffered before spooling it; no try at all during a known outage.
    exit_flush_timeout_s: float = 2.0

    @classmethod
    def resolve(
        cls,
        conf: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        **given: Any,
    ) -> Settings:
        """Build settings from keywords, a Celery conf mapping and the environment."""
        env = os.environ if env is None else env
        conf = conf or {}
        names = {f.name for f in fields(cls)}
        unknown = set(given) - names
        if unknown:
            raise ConfigurationError(
                ", ".join(sorted(unknown)), given[min(unknown)], "a known setting name"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in given and given[f.name] is not None:
                raw: Any = given[f.name]
            elif _conf_get(conf, "jobtrack_" + f.name) is not None:
                raw = _conf_get(conf, "jobtrack_" + f.name)
            elif ENV_PREFIX + f.name.upper() in env:
                raw = env[ENV_PREFIX + f.name.upper()]
            else:
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        kill = env.get(ENV_PREFIX + "ENABLED")
        if kill is not None and not _coerce("enabled", "bool", kill):
            values["enabled"] = False
        settings = cls(**values)
        settings._validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        new = dataclasses.replace(self, **changes)
        new._validate()
        return new

    def _validate(self) -> None:
        if self.write_mode not in get_args(WriteMode):
            raise ConfigurationError("write_mode", self.write_mode, "'buffered' or 'sync'")
        for name in (
            "flush_interval_s",
            "progress_interval_s",
            "heartbeat_interval_s",
            "lost_after_s",
            "connect_timeout_s",
            "web_poll_interval_s",
            "reap_interval_s",
            "web_session_max_age_s",
            "action_rate_per_s",
            "alerts_interval_s",
            "web_query_timeout_s",
            "read_max_lag_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(name, getattr(self, name), "a number above 0")
        if self.pending_lost_after_s < 0:
            raise ConfigurationError(
                "pending_lost_after_s", self.pending_lost_after_s, "a number of seconds, 0 or more"
            )
        if self.read_wait_s < 0:
            raise ConfigurationError(
                "read_wait_s", self.read_wait_s, "a number of seconds, 0 or more"
            )
        if self.read_fallback not in READ_FALLBACKS:
            raise ConfigurationError(
                "read_fallback", self.read_fallback, " or ".join(map(repr, READ_FALLBACKS))
            )
        if self.exit_flush_timeout_s < 0:
            raise ConfigurationError(
                "exit_flush_timeout_s", self.exit_flush_timeout_s, "a number of seconds, 0 or more"
            )
        for name in (
            "flush_max_jobs",
            "flush_max_items",
            "buffer_max_jobs",
            "max_payload_bytes",
            "max_message_chars",
            "max_traceback_chars",
            "max_name_chars",
            "web_rate_limit_per_min",
            "web_auth_failures_per_min",
            "web_max_streams",
            "web_max_body_bytes",
            "action_batch_size",
            "job_log_lines",
        ):
            if getattr(self, name) < 1:
                raise ConfigurationError(name, getattr(self, name), "a whole number above 0")
        if self.job_log_level.upper() not in LOG_LEVELS:
            raise ConfigurationError(
                "job_log_level", self.job_log_level, "one of " + ", ".join(LOG_LEVELS)
            )
        for proxy in self.web_trusted_proxies:
            if proxy != "*" and not _is_address_or_network(proxy):
                raise ConfigurationError(
                    "web_trusted_proxies", proxy, "IP addresses or networks (10.0.0.0/8), or *"
                )
        if not self.database_url:
            raise ConfigurationError("database_url", self.database_url, "a database URL")
        scheme = _scheme(self.database_url)
        if scheme not in SUPPORTED_DATABASES:
            raise ConfigurationError(
                "database_url",
                f"{scheme}://…",
                "a postgresql://, mysql://, mariadb:// or sqlite:/// URL "
                "(jobtrack supports PostgreSQL, MySQL, MariaDB and SQLite)",
            )
        for url in self.read_database_url:
            if _scheme(url) not in ("postgresql", "postgres") or scheme == "sqlite":
                raise ConfigurationError(
                    "read_database_url",
                    f"{_scheme(url)}://…",
                    "postgresql:// URLs of streaming replicas of a PostgreSQL database_url",
                )


def _scheme(url: str) -> str:
    return url.partition(":")[0].partition("+")[0].lower()


#: What ``read_fallback`` takes.
READ_FALLBACKS = ("primary", "error")
#: What ``job_log_level`` takes (any case), weakest first.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "OFF")


def _is_address_or_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _conf_get(conf: Mapping[str, Any], key: str) -> Any:
    try:
        return conf.get(key)
    except Exception:  # a Celery Settings object may raise on odd keys
        return None


#: Tuple settings matched without regard to case (the others, task names, keep theirs).
_CASELESS = frozenset({"redact_keys"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, type_: Any, raw: Any) -> Any:
    kind = str(type_)
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(text)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            parts = raw.split(",") if isinstance(raw, str) else raw
            fold = str.lower if name in _CASELESS else str
            return tuple(fold(str(p).strip()) for p in parts if str(p).strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(name, raw, f"a value of type {kind}") from exc
