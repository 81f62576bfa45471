"""Searches at any size: a newest page and tab counts read a bounded number of jobs.

**A newest page** (:func:`search_page`, for a search with no rare whole word: those the
word index answers). A search few jobs match is read by its index, at most
:data:`EXACT_MATCHES` of its matches, when no long index read is known (see the counts'
first step below). A search that many jobs match has its page among the newest jobs
(:func:`newest_matches`): each status of the tab (or the whole table, for the All tab
without a filter) is read backwards from the newest, at most :data:`SCAN_ROWS` jobs in
all, each checked for the search, until a page of matches is found. The page is the
answer when every range either found a page or ran past the page's oldest job (a
range stopped by the bound has its unread jobs older than where it stopped). Otherwise
the search's index answers, reading all its matches, as before.

**Tab counts** (:func:`search_counts`). A search's tab counts used to read every match
and count it by status: 4,000,000 matches for a word half the jobs hold. Here
(PostgreSQL) the counts read at most a few thousand jobs, whatever the table holds:

1. A search that few jobs match is counted exactly: its matches are read by an index
   (the word index for a rare whole word, the id indexes for an id, the trigram index
   otherwise), at most :data:`EXACT_MATCHES` of them, for at most :data:`PROBE_S`. The
   trigram index is only tried when some part of the search lies in no word the
   statistics put in that many jobs: a search made of such words only would read their
   long trigram lists first. A read stopped short (too many matches, or past its time)
   is skipped for a minute by the search's next pages and counts, what it saw kept as
   each count's floor.
2. Otherwise each status's newest :data:`SAMPLE_ROWS` jobs (under the other filters) are
   read and checked for the search. A status with fewer jobs than that is counted
   exactly; a larger one is estimated: the share of its newest jobs that match, times
   how many jobs it holds (counted up to the tab cap, past it the planner's statistics).

Builders and reads on a caller's connection only; no transactions here.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.exc import DBAPIError

from ..models import Count, JobFilter, JobStatus
from ..schema import jobs
from .common import SearchWords, filtered, id_only, search_matches, searching

__all__ = [
    "EXACT_MATCHES",
    "PROBE_S",
    "SAMPLE_ROWS",
    "SCAN_ROWS",
    "TableStats",
    "newest_matches",
    "search_counts",
    "search_page",
    "within",
]

#: A newest page is looked for among at most this many of the newest jobs (split evenly
#: between the ranges read: the tab's statuses, or one range for the whole table).
SCAN_ROWS = 4_000

#: A search matched by at most this many jobs is counted exactly (each read once).
EXACT_MATCHES = 2_000
#: The read of a search's matches by its index is given this long (seconds): an index
#: whose lists turn out long (a rare search made of common trigrams) is left for the
#: bounded reads of the newest jobs.
PROBE_S = 0.03
#: Past that, each status's newest this many jobs are read to estimate its share (a
#: share near one half is then within about six points, 19 times in 20; the eight
#: statuses' samples read in a few milliseconds on ten million jobs).
SAMPLE_ROWS = 300
#: A status the statistics put under this many times the tab cap is counted (up to the
#: cap, index-only) for its estimate's total; above it the statistics' figure is used.
_COUNTED_BELOW = 3

#: The filters whose columns have statistics an estimate can use (others are counted).
_STAT_COLUMNS = ("status", "job_type", "owner_id", "task_name", "queue")

#: The planner's statistics of the jobs table, or of each of its partitions: how many
#: rows it holds and, per filter column, the share of NULLs, the number of distinct
#: values and the most common values with their shares.
_COLUMN_STATS = text(
    """
    SELECT c.oid AS part, greatest(c.reltuples, 0) AS total, s.attname AS column_name,
           s.null_frac, s.n_distinct, s.most_common_vals::text::text[] AS vals,
           s.most_common_freqs AS freqs
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
         AND NOT s.inherited AND s.attname = ANY(:columns)
    WHERE c.relkind = 'r' AND (
        c.oid = to_regclass('jobs')
        OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('jobs'))
    )
    """
)

#: One column's statistics: null share, distinct values (absolute), common values' shares.
_Column = tuple[float, float, dict[str, float]]


class TableStats:
    """How many jobs the statistics put under a filter (independent columns, as the
    planner assumes), read once per ``refresh_s`` (they change at each ANALYZE)."""

    def __init__(self, refresh_s: float = 300.0) -> None:
        self.refresh_s = refresh_s
        self._read_at = -refresh_s
        self._tables: list[tuple[float, dict[str, _Column]]] = []
        self._lock = threading.Lock()

    def rows(self, conn: Connection, where: JobFilter, status: JobStatus) -> float | None:
        """The estimated jobs of ``status`` that ``where`` (without its search) matches;
        None when a filter has no usable statistics, or the table none yet."""
        given = {
            "status": status.value,
            "job_type": where.job_type,
            "owner_id": where.owner_id,
            "task_name": where.task_name,
            "queue": where.queue,
        }
        others = (where.ids, where.since, where.until, where.stage, where.ref)
        if any(v is not None for v in (*others, where.workflow, where.group)):
            return None
        tables = self._read(conn)
        if not tables:
            return None
        found = 0.0
        for total, columns in tables:
            share = 1.0
            for name, value in given.items():
                if value is None or total <= 0:
                    continue
                if name not in columns:
                    return None  # rows without statistics yet
                share *= _share(columns[name], total, value)
            found += total * share
        return found

    def _read(self, conn: Connection) -> list[tuple[float, dict[str, _Column]]]:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self.refresh_s:
                return self._tables
        by_part: dict[Any, tuple[float, dict[str, _Column]]] = {}
        for r in conn.execute(_COLUMN_STATS, {"columns": list(_STAT_COLUMNS)}):
            total, columns = by_part.setdefault(r.part, (float(r.total), {}))
            if r.column_name is None:
                continue
            distinct = float(r.n_distinct)
            if distinct < 0:
                distinct = -distinct * total
            common = dict(zip(r.vals or (), r.freqs or (), strict=False))
            columns[r.column_name] = (float(r.null_frac), distinct, common)
        tables = list(by_part.values())
        with self._lock:
            self._tables, self._read_at = tables, now
        return tables


def _share(column: _Column, total: float, value: str) -> float:
    """The share of rows holding ``value``: its own if it is a common value, else an
    even part of what the common values leave (the planner's rule)."""
    nulls, distinct, common = column
    if value in common:
        return common[value]
    rest = max(1.0 - nulls - sum(common.values()), 0.0)
    others = max(distinct - len(common), 1.0)
    return min(rest / others, 1.0) if total > 0 else 0.0


def search_page(
    conn: Connection,
    where: JobFilter,
    before: tuple[datetime, str] | None,
    need: int,
    words: SearchWords,
    *,
    exact_matches: int = EXACT_MATCHES,
    scan_rows: int = SCAN_ROWS,
    probe_s: float = PROBE_S,
) -> tuple[list[str], bool]:
    """Ids among which the newest ``need`` jobs ``where`` (with a search, no rare whole
    word) matches, older than the cursor ``before``, are: the newest ``need`` of them,
    with others. First, when no index read of the matches is known to be long, at most
    ``exact_matches`` of them (all, if there are no more); then the newest jobs, a
    bounded read (:func:`newest_matches`). False with the ids: neither found the page,
    and the ids are the matches among the newest jobs read (the caller reads the
    search's index, or shows them for what they are)."""
    assert where.search
    if "\x00" in where.search:
        return [], True  # nothing stored holds one (see filtered)
    rest = where.where(search=None)
    key = _probe_key(where)
    if words.probed(key) is None and not words.all_common(conn, where.search, exact_matches):
        matches = select(*jobs.c).where(searching(where.search)).offset(0).subquery("matches")
        probe = filtered(
            select(matches.c.id, matches.c.created_at, matches.c.status),
            rest,
            columns=matches.c,
        )
        if before is not None:
            probe = probe.where(_older(matches.c, before))
        found = within(conn, probe.limit(exact_matches + 1), probe_s)
        if found is not None and len(found) <= exact_matches:
            return _newest_ids(found, need), True
        # Stopped short: skipped for a while (the tab counts too), what it saw kept.
        words.remember(key, Counter(row[2] for row in found or ()) if before is None else Counter())
    return newest_matches(conn, where, before, need, scan_rows=scan_rows)


def _probe_key(where: JobFilter) -> str:
    """A search with its filters but its statuses: what an index read of its matches
    is remembered by (its floors hold for every status, a floor of 0 for those it did
    not read)."""
    return json.dumps(where.where(status=None).to_json(), sort_keys=True)


def _older(columns: Any, before: tuple[datetime, str]) -> Any:
    """Jobs older than a page's cursor (its last job's ``created_at`` and id)."""
    moment = bindparam("before_at", before[0], type_=jobs.c.created_at.type)
    cursor = tuple_(moment, bindparam("before_id", before[1]))
    return tuple_(columns.created_at, columns.id) < cursor


def _newest_ids(found: Sequence[Any], need: int) -> list[str]:
    """Of ``(id, created_at)`` rows, the ids of the newest ``need`` and of every other
    row as new as the oldest of them (the database orders ties by id its own way)."""
    times = sorted((row[1] for row in found), reverse=True)
    if len(times) <= need:
        return [row[0] for row in found]
    oldest = times[need - 1]
    return [row[0] for row in found if row[1] >= oldest]


def newest_matches(
    conn: Connection,
    where: JobFilter,
    before: tuple[datetime, str] | None,
    need: int,
    *,
    scan_rows: int = SCAN_ROWS,
) -> tuple[list[str], bool]:
    """Ids among which the newest ``need`` jobs ``where`` (with a search) matches, older
    than the cursor ``before``, are found (with at most ``need`` others per range, all
    older), and True, if a bounded read of the newest jobs finds them (see the module's
    text); else the matches it read that are surely the newest (newer than where the
    first range stopped by the bound stopped: a true start of the answer), and False.
    A tab's statuses are read one range each (so are all of them, under a filter whose
    index holds the status after it); otherwise one range."""
    assert where.search
    hit = searching(where.search)
    rest = where.where(search=None)
    indexed = any(v is not None for v in (rest.job_type, rest.owner_id, rest.task_name, rest.queue))
    statuses = rest.status
    if statuses is not None and set(statuses) == set(JobStatus) and not indexed:
        rest, statuses = rest.where(status=None), None  # every status: one range
    ranges: list[JobFilter] = [rest]
    if indexed or (statuses is not None and len(statuses) > 1):
        ranges = [rest.where(status=(s,)) for s in (statuses or tuple(JobStatus))]
    per = max(scan_rows // len(ranges), 1)
    newest = (jobs.c.created_at.desc(), jobs.c.id.desc())
    parts = []
    for n, one in enumerate(ranges):
        read = filtered(
            select(
                jobs.c.id,
                jobs.c.created_at,
                hit.label("hit"),
                func.row_number().over(order_by=newest).label("nth"),
            ),
            one,
        )
        if before is not None:
            read = read.where(_older(jobs.c, before))
        # The window is numbered over the range's rows as they are read: the last one
        # (``nth`` = ``per``) is where a range stopped by the bound stopped.
        ranged = read.order_by(*newest).limit(per).subquery()
        parts.append(
            select(
                literal(n).label("range"),
                ranged.c.id,
                ranged.c.created_at,
                ranged.c.hit,
                (ranged.c.nth == per).label("last"),
            )
            .where(or_(ranged.c.hit, ranged.c.nth == per))
            .limit(need + 1)
            .subquery()
        )
    found: list[tuple[str, datetime]] = []
    hits: Counter[int] = Counter()
    last: dict[int, datetime] = {}
    merged = union_all(*(select(part) for part in parts))
    for n, job_id, created_at, is_hit, is_last in conn.execute(merged):
        if is_hit:
            found.append((job_id, created_at))
            hits[n] += 1
        if is_last:
            last[n] = created_at
    # A range stopped by the bound before it found a page has its unread jobs older
    # than where it stopped: the page holds if its oldest job is newer than that (by
    # time alone: the database orders ids its own way).
    stops = [moment for n, moment in last.items() if hits[n] < need]
    if stops:
        times = sorted((moment for _, moment in found), reverse=True)
        if len(times) < need or any(times[need - 1] <= moment for moment in stops):
            # Not the page for sure; these are the matches read (each range's newest),
            # kept only as new as where the range that stopped first stopped.
            floor = max(stops)
            return [job_id for job_id, moment in found if moment > floor], False
    return _newest_ids(found, need), True


def search_counts(
    conn: Connection,
    statuses: Sequence[JobStatus],
    cap: int,
    where: JobFilter,
    words: SearchWords,
    stats: TableStats,
    *,
    exact_matches: int = EXACT_MATCHES,
    sample_rows: int = SAMPLE_ROWS,
    probe_s: float = PROBE_S,
) -> dict[str, Count]:
    """Each status's count of the jobs ``where`` (with a search) matches, exact when a
    few thousand reads can tell, else estimated (see the module's text)."""
    assert where.search
    search = where.search
    if "\x00" in search:  # nothing stored holds one (see filtered)
        return {s.value: Count(0) for s in statuses}
    rest = where.where(search=None, status=tuple(statuses))
    key = _probe_key(where)
    floors = words.probed(key)  # matches known to exist, by status
    probe = _cheap_matches(conn, search, words, exact_matches) if floors is None else None
    if probe is not None:
        query = filtered(select(probe.c.status), rest, columns=probe.c).limit(exact_matches + 1)
        found = within(conn, query, probe_s)
        if found is not None and len(found) <= exact_matches:
            exact = Counter(row[0] for row in found)
            return {s.value: Count(exact.get(s.value, 0)) for s in statuses}
        floors = Counter(row[0] for row in found or ())
        words.remember(key, floors)
    floors = floors or Counter()
    counts: dict[str, Count] = {}
    hit = case((searching(search), 1), else_=0)
    samples = [
        select(
            literal(status.value).label("status"),
            func.count().label("read"),
            func.coalesce(func.sum(part.c.hit), 0).label("hits"),
        )
        for status in statuses
        for part in [
            filtered(select(hit.label("hit")), rest.where(status=(status,)))
            .order_by(jobs.c.created_at.desc())
            .limit(sample_rows)
            .subquery()
        ]
    ]
    estimate: dict[JobStatus, tuple[int, int]] = {}
    for status, read, hits in conn.execute(union_all(*samples)):
        if read < sample_rows:  # every job of this status was read
            counts[status] = Count(int(hits))
        else:
            estimate[JobStatus(status)] = (int(read), int(hits))
    if estimate:
        totals = _totals(conn, list(estimate), cap, rest, stats)
        for status, (read, hits) in estimate.items():
            # The share among its newest jobs, times its jobs; no fewer than the index
            # read found (matches older than the newest jobs).
            guess = max(round(hits / read * totals[status]), floors.get(status.value, 0))
            counts[status.value] = Count(guess, exact=False, estimated=True)
    return {s.value: counts[s.value] for s in statuses}


def within(conn: Connection, query: Any, seconds: float) -> list[Any] | None:
    """The rows of ``query``, or None if it ran past ``seconds`` (PostgreSQL: the
    statement is stopped, in a savepoint, and the transaction goes on as before; other
    databases: no limit)."""
    if conn.dialect.name != "postgresql":
        return list(conn.execute(query).all())
    before = conn.execute(_TIMEOUT_NOW).scalar_one()
    try:
        with conn.begin_nested():
            conn.execute(_SET_TIMEOUT, {"ms": str(max(int(seconds * 1000), 1))})
            rows = list(conn.execute(query).all())
            conn.execute(_SET_TIMEOUT, {"ms": before})
            return rows
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled: the limit
            return None
        raise


_TIMEOUT_NOW = text("SELECT current_setting('statement_timeout')")
_SET_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")


def _cheap_matches(
    conn: Connection, search: str, words: SearchWords, exact_matches: int
) -> Any | None:
    """The search's matches as a subquery an index reads without long lists (a rare
    whole word's jobs, an id's, or the trigrams of a search with an uncommon part), or
    None when no index read of them is known to be short."""
    if id_only(search):
        return select(*jobs.c).where(searching(search)).offset(0).subquery("matches")
    word = words.word(conn, search)
    if word is not None:
        if words.holding(conn, word) > 4 * exact_matches:
            return None
        return search_matches(search, word)
    if words.all_common(conn, search, exact_matches):
        return None
    return select(*jobs.c).where(searching(search)).offset(0).subquery("matches")


def _totals(
    conn: Connection, statuses: list[JobStatus], cap: int, where: JobFilter, stats: TableStats
) -> dict[JobStatus, float]:
    """How many jobs each status holds under ``where`` (no search): by the statistics
    when they put it well past the cap; else counted up to the cap (index-only), and
    past it the statistics' figure (at least the cap)."""
    found: dict[JobStatus, float] = {}
    counted: list[JobStatus] = []
    for status in statuses:
        guess = stats.rows(conn, where, status)
        if guess is not None and guess >= _COUNTED_BELOW * cap:
            found[status] = guess
        else:
            counted.append(status)
    if counted:
        capped = select(
            *(
                select(func.count())
                .select_from(
                    filtered(select(jobs.c.status), where.where(status=(status,)))
                    .limit(cap + 1)
                    .subquery()
                )
                .scalar_subquery()
                for status in counted
            )
        )
        row = conn.execute(capped).one()
        for status, n in zip(counted, row, strict=True):
            if n <= cap:
                found[status] = float(n)
            else:
                found[status] = max(stats.rows(conn, where, status) or 0.0, float(cap + 1))
    return found
