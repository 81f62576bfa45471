"""Reads on streaming replicas (PostgreSQL): which server each read goes to.

A store given replicas (the ``read_database_url`` setting) sends the reads made inside
``Store.reading()`` to one of them: the web app's GET requests, the CLI's read
commands, the alert rules' reads. Writes, operator actions, leases, the workers, and any
read outside ``reading()``, stay on the primary.

* Each replica is checked at most once per ``check_interval_s``, by the read that needs
  it: is it up, is it a standby, what has it replayed, how far behind is it. One that is
  down, not a standby, or more than ``max_lag_s`` behind is left out, logged once when it
  goes and once when it is back; one that does not answer is checked less and less
  often (the wait doubles, up to a minute), as a check may wait for its connect timeout.
* The reads of one ``reading()`` block go to one server, chosen at its first read: a
  healthy replica (each in turn), else the primary (``fallback`` "primary") or
  :class:`~jobtrack.errors.ReplicaUnavailable` with the reason (``fallback`` "error").
  A replica that cannot be reached at that moment is left out at once and the read
  chooses again.
* Read-your-writes: ``reading(min_lsn=...)``, given the primary's WAL position after a
  write (``Store.primary_lsn()``), waits until a replica has replayed past it, at most
  ``wait_s``; after that it reads on the primary (fallback "primary"), or on the replica
  saying it is behind (fallback "error", where reads never go to the primary).
* How far behind: the seconds since the oldest primary position (sampled at each check)
  the replica has not replayed, or since the last transaction it replayed committed,
  whichever is less (the latter alone would count an idle primary's quiet as lag).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import QueryTimeout, ReplicaUnavailable, StoreError

__all__ = [
    "FALLBACKS",
    "ReadRoute",
    "ReplicaPolicy",
    "Replicas",
    "current_route",
    "lsn_number",
    "lsn_text",
    "unreachable",
]

log = logging.getLogger("jobtrack.store")

#: What reads do when no replica can serve them: read the primary, or refuse.
FALLBACKS = ("primary", "error")
#: How often a read waiting for a replica to replay a write asks it again, in seconds.
_POLL_S = 0.02
#: Primary positions kept to tell a replica's lag (one per check).
_HISTORY = 600

_STATE_CHECK = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
)
_REPLAYED = text("SELECT pg_last_wal_replay_lsn()::text")


@dataclass(frozen=True)
class ReplicaPolicy:
    """Which replicas serve reads and how (see the module's text)."""

    urls: tuple[str, ...]
    #: A replica further behind than this (seconds) is left out.
    max_lag_s: float = 30.0
    #: "primary" or "error": what reads do when no replica can serve them.
    fallback: str = "primary"
    #: Read-your-writes: how long a read waits for a replica to replay a write.
    wait_s: float = 2.0
    #: How often each replica's state is checked, at most.
    check_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}")


def lsn_number(lsn: str) -> int:
    """A WAL position (``16/B374D848``) as a number; ``ValueError`` for anything else."""
    high, sep, low = lsn.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not a WAL position: {lsn!r}")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(number: int) -> str:
    """A WAL position as PostgreSQL spells it."""
    return f"{number >> 32:X}/{number & 0xFFFFFFFF:X}"


def server_name(url: str) -> str:
    """A database URL as a footer shows it: host, port and database, nothing secret."""
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def unreachable(exc: BaseException) -> bool:
    """Whether a store error says its server could not be reached or went away (not a
    refused statement, nor a read stopped by its time limit)."""
    if isinstance(exc, QueryTimeout):
        return False
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if not isinstance(cause, DBAPIError):
        return False
    if cause.connection_invalidated:
        return True
    state = getattr(cause.orig, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


@dataclass
class ReadRoute:
    """Where the reads of one ``Store.reading()`` block go, and why: what the
    dashboard's footer says. Decided at the block's first read."""

    #: Read-your-writes: the primary's WAL position the reads must see.
    min_lsn: int | None = None
    #: The server's host:port/database, once decided (the primary's or a replica's).
    server: str | None = None
    #: How far behind the replica was, in seconds, when chosen.
    lag_s: float | None = None
    #: Why the primary serves, or why the replica may not show everything yet.
    note: str | None = None
    owner: Any = field(default=None, repr=False)
    engine: Engine | None = field(default=None, repr=False)
    replica: Replica | None = field(default=None, repr=False)

    @property
    def decided(self) -> bool:
        return self.server is not None

    @property
    def on_replica(self) -> bool:
        return self.replica is not None

    def describe(self) -> str | None:
        """The footer's words: "replica db2:5432/jobs, 0.3 s behind" or "primary"."""
        if self.server is None:
            return None
        if self.replica is None:
            said = f"the primary ({self.server})"
        else:
            behind = "" if self.lag_s is None else f", {_seconds(self.lag_s)} behind"
            said = f"replica {self.server}{behind}"
        return f"{said}: {self.note}" if self.note else said


_route: contextvars.ContextVar[ReadRoute | None] = contextvars.ContextVar(
    "jobtrack_read_route", default=None
)


def current_route() -> ReadRoute | None:
    """The route of the innermost ``Store.reading()`` block here, or None."""
    return _route.get()


@contextmanager
def routed(route: ReadRoute) -> Iterator[ReadRoute]:
    token = _route.set(route)
    try:
        yield route
    finally:
        _route.reset(token)


class Replica:
    """One replica: its engine (made on first use) and what its last check found."""

    def __init__(self, url: str, make_engine: Callable[[str], Engine]) -> None:
        self.url = url
        self.name = server_name(url)
        self._make_engine = make_engine
        self._engine: Engine | None = None
        self.state = "unchecked"  # ok, down, behind, primary
        self.problem: str | None = None
        self.replayed: int | None = None
        self.lag_s: float | None = None
        self.checked_at = float("-inf")
        #: Seconds until the next check: the policy's interval, doubled after each
        #: failed connection (at most a minute), so a replica that does not answer
        #: stalls one read per that long, not one a second.
        self.wait_s = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine(self.url)
        return self._engine

    def close(self, *, after_fork: bool = False) -> None:
        if self._engine is not None:
            self._engine.dispose(close=not after_fork)
            if not after_fork:
                self._engine = None


class Replicas:
    """The replicas of one store (see the module's text)."""

    def __init__(
        self,
        policy: ReplicaPolicy,
        make_engine: Callable[[str], Engine],
        primary_lsn: Callable[[], int],
        primary: str = "primary",
    ) -> None:
        self.policy = policy
        #: The primary as the footer names it (host:port/database).
        self.primary = primary
        self.replicas = [Replica(url, make_engine) for url in policy.urls]
        self._primary_lsn = primary_lsn
        self._history: deque[tuple[float, int]] = deque(maxlen=_HISTORY)
        self._lock = threading.Lock()
        self._turn = itertools.count()

    # -- choosing ----------------------------------------------------------------------

    def choose(self, route: ReadRoute) -> Engine | None:
        """Decide ``route`` (once) and return its engine: a replica's, or None for the
        primary. Raises :class:`ReplicaUnavailable` where the primary may not serve."""
        if route.decided:
            return route.engine
        self.refresh()
        healthy = [r for r in self.replicas if r.state == "ok"]
        if not healthy:
            return self._fallback(route, self._why_none())
        start = next(self._turn) % len(healthy)
        order = healthy[start:] + healthy[:start]
        if route.min_lsn is None:
            return self._take(route, order[0])
        ready = self._replayed_past(order, route.min_lsn)
        if ready is not None:
            return self._take(route, ready)
        waited = f"{_seconds(self.policy.wait_s)}"
        if self.policy.fallback == "error":
            return self._take(
                route,
                order[0],
                note=f"it had not replayed your last change after {waited}; it may not show yet",
            )
        return self._fallback(route, f"no replica had replayed your last change after {waited}")

    def failed(self, route: ReadRoute, exc: BaseException) -> None:
        """The route's replica could not be reached: leave it out now; the route is
        decided again at its next read."""
        replica = route.replica
        if replica is not None:
            self._set(replica, "down", _short(exc))
        route.server = route.note = route.lag_s = None
        route.engine = route.replica = None

    def _take(self, route: ReadRoute, replica: Replica, note: str | None = None) -> Engine:
        route.server, route.lag_s, route.note = replica.name, replica.lag_s, note
        route.replica, route.engine = replica, replica.engine
        return replica.engine

    def _fallback(self, route: ReadRoute, why: str) -> Engine | None:
        """The primary for ``route`` (None), or :class:`ReplicaUnavailable` where reads
        may not fall back to it."""
        if self.policy.fallback == "error":
            raise ReplicaUnavailable(why)
        route.server, route.note = self.primary, why
        route.replica = route.engine = None
        return None

    def _why_none(self) -> str:
        return "; ".join(f"replica {r.name} {r.problem or r.state}" for r in self.replicas)

    def _replayed_past(self, order: Sequence[Replica], lsn: int) -> Replica | None:
        """The first of ``order`` that has replayed ``lsn``, asking them again until
        ``wait_s`` has passed; None if none has."""
        deadline = time.monotonic() + self.policy.wait_s
        while True:
            for replica in order:
                if replica.replayed is not None and replica.replayed >= lsn:
                    return replica
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S)
            for replica in order:
                if replica.state != "ok":
                    continue
                try:
                    with replica.engine.connect() as conn:
                        replayed = conn.execute(_REPLAYED).scalar()
                except SQLAlchemyError as exc:
                    self._set(replica, "down", _short(exc))
                    continue
                if replayed is not None:
                    replica.replayed = lsn_number(replayed)

    # -- checking ----------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Check every replica whose next check is due (one thread checks; the others
        use what it last found)."""
        now = time.monotonic()
        stale = [r for r in self.replicas if force or now - r.checked_at >= r.wait_s]
        if not stale or not self._lock.acquire(
            blocking=not any(r.checked_at > float("-inf") for r in stale)
        ):
            return
        try:
            try:
                primary = self._primary_lsn()
            except StoreError as exc:
                primary = None
                log.debug("replica check: primary position unknown: %s", exc)
            if primary is not None:
                self._history.append((now, primary))
            for replica in stale:
                self._check(replica, now, primary)
        finally:
            self._lock.release()

    def _check(self, replica: Replica, now: float, primary: int | None) -> None:
        replica.checked_at = now
        try:
            with replica.engine.connect() as conn:
                standby, replayed, since_commit = conn.execute(_STATE_CHECK).one()
        except SQLAlchemyError as exc:
            self._set(replica, "down", _short(exc))
            replica.wait_s = min(max(2 * replica.wait_s, self.policy.check_interval_s), 60.0)
            return
        replica.wait_s = self.policy.check_interval_s
        if not standby:
            self._set(replica, "primary", "is not a standby (pg_is_in_recovery() is false)")
            return
        replica.replayed = None if replayed is None else lsn_number(replayed)
        replica.lag_s = self._lag(replica.replayed, primary, since_commit, now)
        if replica.lag_s > self.policy.max_lag_s:
            limit = _seconds(self.policy.max_lag_s)
            self._set(replica, "behind", f"is {_seconds(replica.lag_s)} behind (over {limit})")
        else:
            self._set(replica, "ok", None)

    def _lag(
        self, replayed: int | None, primary: int | None, since_commit: Any, now: float
    ) -> float:
        if replayed is not None and primary is not None and replayed >= primary:
            return 0.0
        by_position = None
        if replayed is not None:
            for at, position in self._history:  # oldest first
                if position > replayed:
                    by_position = now - at
                    break
        by_commit = None if since_commit is None else max(float(since_commit), 0.0)
        known = [v for v in (by_position, by_commit) if v is not None]
        return min(known) if known else 0.0

    def _set(self, replica: Replica, state: str, problem: str | None) -> None:
        before = replica.state
        replica.state, replica.problem = state, problem
        if state == before:
            return
        extra = {"action": "replica", "job_id": None}
        if state == "ok":
            if before != "unchecked":
                log.warning("replica %s serves reads again", replica.name, extra=extra)
        else:
            how = (
                "reads go to the primary"
                if self.policy.fallback == "primary"
                else "reads it would serve answer 503"
            )
            log.warning("replica %s %s; %s while it lasts", replica.name, problem, how, extra=extra)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        for replica in self.replicas:
            replica.close(after_fork=True)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 100 else f"{value:,.0f} s"


def _short(exc: BaseException) -> str:
    if isinstance(exc, StoreError) and exc.__cause__ is not None:
        exc = exc.__cause__
    cause = getattr(exc, "orig", None) or exc
    words = str(cause).strip().splitlines()
    return f"is down ({words[0][:200]})" if words else f"is down ({type(cause).__name__})"
