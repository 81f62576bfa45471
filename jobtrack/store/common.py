"""SQL pieces shared by the store's modules: the job filter and the change notification.

Builders only (and two reads run on a caller's connection: the change notification and
the search's word); no transactions here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Text,
    and_,
    bindparam,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    union,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from ..models import ERROR_GROUP_CHARS, ERROR_MASKS, Job, JobFilter, JobStatus, error_group_of
from ..schema import MYSQL, SEARCH_TEXT, SEARCH_WORDS, WORDS_INDEX, jobs

__all__ = [
    "CHANGES_CHANNEL",
    "WORD_ROWS_MAX",
    "ErrorGroupOf",
    "FullTextWords",
    "ReadingPart",
    "SearchWords",
    "Transactions",
    "WritingPart",
    "escape_like",
    "filtered",
    "fulltext_words",
    "id_only",
    "job_of",
    "notify",
    "notify_payload",
    "search_matches",
    "searching",
    "sqlite_functions",
]


class Transactions(Protocol):
    """The store's transactions, as a part that may write a user's data is given them:
    with ``writes_data``, a value the driver cannot even send counts as refused data
    (see ``Store._begin``)."""

    def __call__(
        self, action: str, *, writes_data: bool = False
    ) -> AbstractContextManager[Connection]: ...


class ReadingPart:
    """What a part of the store that only reads is given by the store: its reads, each
    one transaction, on a replica where reads are routed to one."""

    def __init__(self, read: Callable[[str], AbstractContextManager[Connection]]) -> None:
        self._read = read


class WritingPart:
    """What a part of the store that writes to a job's trace is given by the store: its
    transactions, its writer of trace rows (and items and log lines), and its clock,
    read at each call (tests set the store module's)."""

    def __init__(
        self,
        begin: Callable[[str], AbstractContextManager[Connection]],
        write_rows: Callable[[Connection, str, Sequence[Sequence[Any]]], None],
        now: Callable[[], datetime],
    ) -> None:
        self._begin = begin
        self._write_rows = write_rows
        self._now = now


#: The PostgreSQL channel every write notifies with the ids of the jobs it changed
#: (a JSON array; ``*`` when they do not fit in one notification).
CHANGES_CHANNEL = "jobtrack_changes"
NOTIFY_MAX_BYTES = 7000  # PostgreSQL's payload limit is 8000 bytes


def filtered(query: Any, where: JobFilter, *, columns: Any = None) -> Any:
    """``query`` narrowed by ``where``; every value a bound parameter. A value holding a
    NUL character matches nothing (PostgreSQL text cannot hold one; writes strip them),
    on every backend alike. ``columns``: those of what the query reads, when not the
    ``jobs`` table itself (:func:`search_matches`; its search is then its own)."""
    c = jobs.c if columns is None else columns
    given = [
        where.ref,
        where.stage,
        where.job_type,
        where.owner_id,
        where.task_name,
        where.queue,
        where.search,
        where.workflow,
        where.group,
        *(where.ids or ()),
    ]
    if any(isinstance(v, str) and "\x00" in v for v in given):
        return query.where(false())
    if where.ids is not None:
        query = query.where(c.id.in_(list(where.ids)))
    if where.status is not None:
        query = query.where(c.status.in_([s.value for s in where.status]))
    for column, value in (
        (c.job_type, where.job_type),
        (c.owner_id, where.owner_id),
        (c.task_name, where.task_name),
        (c.queue, where.queue),
        (c.progress_stage, where.stage),
        (c.group_id, where.group),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.ref is not None:
        if where.ref.endswith("*"):  # a prefix: LIKE finds it in the index (PostgreSQL),
            prefix = where.ref[:-1]  # substr keeps it case-sensitive (SQLite's LIKE is not)
            query = query.where(
                c.ref.like(escape_like(prefix) + "%", escape="\\"),
                func.substr(c.ref, 1, len(prefix)) == prefix,
            )
        else:
            query = query.where(c.ref == where.ref)
    if where.workflow is not None:
        query = query.where(or_(c.root_id == where.workflow, c.id == where.workflow))
    if where.since is not None:
        query = query.where(c.created_at >= where.since)
    if where.until is not None:
        query = query.where(c.created_at < where.until)
    if where.search:
        query = query.where(searching(where.search))
    if where.handled is not None:
        query = query.where(c.retried_by.is_not(None) if where.handled else c.retried_by.is_(None))
    if where.error_group is not None:
        query = query.where(
            ErrorGroupOf(c.task_name, c.error_type, c.error_message) == where.error_group
        )
    return query


#: A search that looks like a Celery task id, or the start of one (hex digits and
#: dashes, 8 or more): it means a job by its id.
_ID_LIKE = re.compile(r"[0-9a-fA-F]{8}[0-9a-fA-F-]*")
#: An id-like search up to this long may be a word too ("deadbeef"): it is looked for in
#: names and error text as well. Longer, it is an id (or the start of one) only.
_WORD_CHARS = 12


def id_only(search: str) -> bool:
    """Whether a search can only mean an id, or the start of one (see :func:`searching`)."""
    return bool(_ID_LIKE.fullmatch(search)) and len(search) > _WORD_CHARS


def _by_id(search: str) -> ColumnElement[bool]:
    """The id half of a search: the exact id, and for an id-like search its prefix."""
    by_id: ColumnElement[bool] = jobs.c.id == search
    if _ID_LIKE.fullmatch(search):
        prefix = and_(
            jobs.c.id.like(escape_like(search) + "%", escape="\\"),
            func.substr(jobs.c.id, 1, len(search)) == search,  # SQLite's LIKE ignores case
        )
        by_id = or_(by_id, prefix)
    return by_id


def searching(search: str, *, word: str | None = None) -> ColumnElement[bool]:
    """The condition of a search: the name or error text containing it (any case, taken
    literally), or the exact id. An id-like search (see :data:`_ID_LIKE`) is also an id
    prefix (the id prefix index, case-sensitive as ids are); past :data:`_WORD_CHARS`
    it is that only.

    ``word`` (PostgreSQL): a whole word of the search (see :class:`SearchWords`), which
    every job containing the search holds among its words. The jobs holding it are found
    by the word index and each is checked for the whole search: the same jobs as the
    trigram condition, without reading the trigram lists of the search's common parts.
    On MySQL and MariaDB it is a :class:`FullTextWords`: the search's whole words, which
    the FULLTEXT index finds, each job then checked for the whole search alike.
    """
    by_id = _by_id(search)
    if _ID_LIKE.fullmatch(search) and len(search) > _WORD_CHARS:
        return by_id
    if isinstance(word, FullTextWords):
        pattern = "%" + escape_like(search) + "%"
        indexed = mysql.match(jobs.c.name, jobs.c.error_message, against=str(word))
        literal = SearchText().ilike(pattern, escape="\\")
        return and_(or_(indexed.in_boolean_mode(), by_id), or_(literal, by_id))
    if word is not None:
        # (word or id) and (text or id): the first is the index's bitmap, exact, so only
        # the text is checked row by row. ILIKE is lower() on both sides (UTF-8), and
        # strpos() of it is a condition no index takes, so the planner keeps to the words.
        holds = literal_column(SEARCH_WORDS, ARRAY(Text)).contains(
            bindparam("search_word", [word], ARRAY(Text))
        )
        contains = func.strpos(func.lower(SearchText()), func.lower(search)) > 0
        return and_(or_(holds, by_id), or_(contains, by_id))
    pattern = "%" + escape_like(search) + "%"
    return or_(SearchText().ilike(pattern, escape="\\"), by_id)


#: A word whose jobs the statistics estimate above this many is not worth the word index
#: (each is read to check the search): the trigram index answers instead.
WORD_ROWS_MAX = 20_000

#: The element statistics of the word index (its partitions' indexes when partitioned):
#: the words ANALYZE found common and their frequencies (the last but two is the lowest
#: listed), and the rows of the table part each describes. None where a part with rows
#: has no statistics yet.
_WORD_STATS = text(
    """
    SELECT s.most_common_elems::text::text[] AS words, s.most_common_elem_freqs AS freqs,
           greatest(t.reltuples, 0) AS total, s.tablename IS NOT NULL AS known
    FROM pg_class i
    JOIN pg_namespace n ON n.oid = i.relnamespace
    JOIN pg_index x ON x.indexrelid = i.oid
    JOIN pg_class t ON t.oid = x.indrelid
    LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = i.relname
    WHERE i.relkind = 'i' AND (
        i.oid = to_regclass(:index)
        OR i.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(:index))
    )
    """
)
#: The whole words of a search that every job containing it must hold: those between two
#: non-word characters of the search (its first and last runs may be parts of longer
#: words), split by the same expression as the index.
_WHOLE_WORDS = text(
    "SELECT a[2:cardinality(a) - 1] "
    "FROM regexp_split_to_array(lower(:search), '[^[:alnum:]]+') AS a"
)


#: The ``created_at`` histograms of the jobs table, or of each of its partitions: bounds
#: splitting a table's rows into parts of equal size, oldest first, and how many rows
#: the table holds. A table without statistics yet is left out (its rows uncounted).
_CREATED_STATS = text(
    """
    SELECT s.histogram_bounds::text::timestamptz[] AS bounds,
           greatest(c.reltuples, 0) AS total
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
         AND s.attname = 'created_at' AND NOT s.inherited
    WHERE c.relkind = 'r' AND s.histogram_bounds IS NOT NULL AND (
        c.oid = to_regclass('jobs')
        OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('jobs'))
    )
    """
)
#: How long a search whose index read stopped short skips that read, and how many such
#: searches are remembered.
_PROBED_FOR_S = 60.0
_PROBED_KEPT = 256
#: A search's runs of letters and digits (the index splits words at anything else).
_RUNS = re.compile(r"[^\W_]+")

#: One table's ``created_at`` histogram: its bounds and its rows.
Histogram = tuple[list[datetime], float]

#: A newest slice is read first when it is likely to hold this many times the page.
_SLICE_MARGIN = 2
#: What one entry of an index range costs, against reading one job (measured on 10 M
#: jobs: a range of 110,000 ``created_at`` entries in 13.5 ms, 11,200 jobs read from the
#: OS cache in 118 ms; from shared buffers a job costs less, hence the margin).
_ENTRY_COST = 1 / 50


class SearchWords:
    """Picks a search's word for :func:`searching`: its rarest whole word by the word
    index's statistics, if they estimate at most :data:`WORD_ROWS_MAX` jobs holding it.
    The statistics are read once per ``refresh_s`` (they change at each ANALYZE); then a
    search costs one small query (its words, split by PostgreSQL as the index splits).

    For a list page it also says where the newest jobs start (:meth:`newest_since`):
    the word index answers in no order, so a page of a word that thousands of jobs hold
    reads them all to keep the newest few, unless the page is first looked for among the
    newest jobs only."""

    def __init__(self, refresh_s: float = 300.0) -> None:
        self.refresh_s = refresh_s
        self._read_at = -refresh_s
        self._parts: list[tuple[dict[str, float], float, float]] = []  # freqs, floor, rows
        #: The table's histogram, or each partition's, and all their bounds in order.
        self._created: tuple[list[Histogram], list[datetime]] = ([], [])
        self._lock = threading.Lock()
        #: Searches whose index read stopped short: until when to skip it, what it saw.
        self._probed: dict[str, tuple[float, Counter[str]]] = {}

    def word(self, conn: Connection, search: str) -> str | None:
        """The word, or None (no whole word, all of them common, no index or statistics
        yet, not PostgreSQL): the trigram index answers. On MySQL and MariaDB the
        search's whole words for the FULLTEXT index (:func:`fulltext_words`)."""
        if conn.dialect.name in MYSQL and "\x00" not in search:
            if _ID_LIKE.fullmatch(search) and len(search) > _WORD_CHARS:
                return None  # an id only
            return fulltext_words(search)
        if conn.dialect.name != "postgresql" or "\x00" in search:
            return None
        if _ID_LIKE.fullmatch(search) and len(search) > _WORD_CHARS:
            return None  # an id only
        parts = self._stats(conn)
        if not parts:
            return None
        words = conn.execute(_WHOLE_WORDS, {"search": search}).scalar_one() or []
        best: tuple[float, int, str] | None = None
        for word in {w for w in words if w}:
            key = (self._estimate(parts, word), -len(word), word)
            best = key if best is None or key < best else best
        if best is None or best[0] > WORD_ROWS_MAX:
            return None
        return best[2]

    def newest_since(
        self, conn: Connection, word: str, need: int, before: datetime | None = None
    ) -> datetime | None:
        """A ``created_at`` from which the newest ``need`` jobs holding ``word`` (older
        than ``before``, a page's cursor) are likely all found, by the statistics; None
        when reading every job holding it costs less than first trying that slice.

        Only a guess of cost, never of the answer: a page read from the slice is the
        page if the slice yields a whole page, as every job outside it is older. The
        slice is chosen to hold :data:`_SLICE_MARGIN` times ``need`` of the word's jobs
        if they are spread over time like the table's rows; it is tried when its range
        of the ``created_at`` index costs at most half the reads of the word's other
        jobs (:data:`_ENTRY_COST`)."""
        if before is not None and before.tzinfo is None:
            return None  # not comparable with the statistics' times: no guess
        if conn.dialect.name != "postgresql":
            return None  # no statistics to guess from
        holding = self._estimate(self._stats(conn), word)
        tables, bounds_all = self._created
        total = sum(rows for _, rows in tables)
        if holding <= 0 or total <= 0:
            return None
        share = _SLICE_MARGIN * need / holding
        if share >= 1 or share * total * _ENTRY_COST * 2 > holding:
            return None
        want = share * total
        upto = total if before is None else sum(_below(t, before) for t in tables)

        def newer(moment: datetime) -> float:  # rows from ``moment`` up to the cursor
            return upto - sum(_below(t, moment) for t in tables)

        starts = bounds_all if before is None else bounds_all[: bisect_left(bounds_all, before)]
        low, high, found = 1, len(starts) - 1, None  # the oldest start is the whole table
        while low <= high:  # the newest start with ``want`` rows after it (fewer, newer)
            mid = (low + high) // 2
            if newer(starts[mid]) >= want:
                found, low = mid, mid + 1
            else:
                high = mid - 1
        return None if found is None else starts[found]

    def probed(self, key: str) -> Counter[str] | None:
        """What the index read of a search's matches (``key``: the search and its
        filters) found when it last stopped at its bound or its time limit, in the last
        minute: the matches it saw, by status (a floor of each count). None: no such
        read lately; the next may try the index again."""
        with self._lock:
            found = self._probed.get(key)
            return found[1] if found is not None and found[0] > time.monotonic() else None

    def remember(self, key: str, floors: Counter[str]) -> None:
        """The index read of ``key`` stopped at its bound or its time limit: skip it for
        a minute (a live page asks again every few seconds)."""
        with self._lock:
            now = time.monotonic()
            if len(self._probed) >= _PROBED_KEPT:
                self._probed = {k: v for k, v in self._probed.items() if v[0] > now}
            if len(self._probed) < _PROBED_KEPT:
                self._probed[key] = (now + _PROBED_FOR_S, floors)

    def holding(self, conn: Connection, word: str) -> float:
        """How many jobs the statistics say hold ``word``."""
        return self._estimate(self._stats(conn), word)

    def all_common(self, conn: Connection, search: str, jobs_at_least: float) -> bool:
        """Whether every run of letters and digits in the search lies inside a word the
        statistics put in at least ``jobs_at_least`` jobs. Its trigrams are then all
        that common too, so reading the trigram index for it means reading long lists,
        however few jobs match (with one uncommon part, the index's scan is led by that
        part's short lists)."""
        if conn.dialect.name != "postgresql":
            return False
        parts = self._stats(conn)
        words = {w for freqs, _, _ in parts for w in freqs}
        common = {w for w in words if self._estimate(parts, w) >= jobs_at_least}
        runs = _RUNS.findall(search.lower())
        return bool(runs) and all(any(run in w for w in common) for run in runs)

    @staticmethod
    def _estimate(parts: list[tuple[dict[str, float], float, float]], word: str) -> float:
        return sum(rows * freqs.get(word, floor) for freqs, floor, rows in parts)

    def _stats(self, conn: Connection) -> list[tuple[dict[str, float], float, float]]:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self.refresh_s:
                return self._parts
        parts: list[tuple[dict[str, float], float, float]] = []
        tables = [
            (list(r.bounds), float(r.total))
            for r in conn.execute(_CREATED_STATS)
            if len(r.bounds) >= 2
        ]
        created = (tables, sorted({b for bounds, _ in tables for b in bounds}))
        rows = conn.execute(_WORD_STATS, {"index": WORDS_INDEX}).all()
        if any(r.known for r in rows):
            for r in rows:
                if not r.known:
                    parts.append(({}, 1.0, float(r.total)))  # no statistics: every row
                elif r.words is None:
                    parts.append(({}, 0.0, float(r.total)))  # no word is common
                else:
                    freqs = dict(zip(r.words, r.freqs, strict=False))
                    parts.append((freqs, float(r.freqs[-3]), float(r.total)))
        with self._lock:
            self._parts, self._created, self._read_at = parts, created, now
        return parts


class FullTextWords(str):
    """A boolean-mode FULLTEXT query (``+word +word``): every job containing the search
    holds each of these words (MySQL, MariaDB; revision 0017's index)."""


#: InnoDB's default stopwords (``INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD``): not in
#: the FULLTEXT index, so never required of a job.
_STOPWORDS = frozenset(
    "a about an are as at be by com de en for from how i in is it la of on or that the "
    "this to was what when where who will with und www".split()
)
#: InnoDB's default token sizes (``innodb_ft_min_token_size``, ``..._max_...``).
_TOKEN_CHARS = (3, 84)


def fulltext_words(search: str) -> FullTextWords | None:
    """The whole words of ``search`` every job containing it holds as FULLTEXT tokens:
    runs of ASCII letters and digits with a separator on both sides inside the search
    (one at its start or end may be part of a longer word in the job), of a size InnoDB
    indexes, not a stopword, and not next to characters InnoDB joins into a word (``_``,
    ``'``, letters beyond ASCII). None when there are none: the text is read instead."""
    found = []
    for match in re.finditer(r"[0-9A-Za-z]+", search):
        start, end = match.span()
        if start == 0 or end == len(search):
            continue
        if not (_separates(search[start - 1]) and _separates(search[end])):
            continue
        word = match.group().lower()
        if _TOKEN_CHARS[0] <= len(word) <= _TOKEN_CHARS[1] and word not in _STOPWORDS:
            found.append(word)
    if not found:
        return None
    return FullTextWords(" ".join(f"+{w}" for w in dict.fromkeys(found)))


def _separates(char: str) -> bool:
    """Whether InnoDB's FULLTEXT parser ends a word at ``char`` (ASCII punctuation other
    than ``_`` and ``'``, or white space)."""
    return char.isascii() and not char.isalnum() and char not in "_'"


def _below(histogram: Histogram, moment: datetime) -> float:
    """How many of a table's rows its histogram puts before ``moment`` (spread evenly in
    time within each of its parts)."""
    bounds, rows = histogram
    if moment <= bounds[0]:
        return 0.0
    if moment > bounds[-1]:
        return rows
    at = bisect_left(bounds, moment)  # bounds[at - 1] < moment <= bounds[at]
    low, high = bounds[at - 1], bounds[at]
    within = (moment - low) / (high - low) if high > low else 1.0
    return rows * (at - 1 + within) / (len(bounds) - 1)


def search_matches(search: str, word: str, since: datetime | None = None) -> Any:
    """The jobs holding the search's ``word`` that contain the search (see
    :func:`searching`), as a subquery of every ``jobs`` column; with ``since``, only
    those created then or later (the word index's rows and a range of the ``created_at``
    index, intersected before any job is read). ``OFFSET 0`` has it planned on its own:
    a read of the word's few jobs by the word index, whatever the query around it
    filters, sorts or limits (planned together, a page's small limit or a filter's large
    index would draw the planner off the word index)."""
    if isinstance(word, FullTextWords):
        return _fulltext_matches(search, word)
    query = select(jobs).where(searching(search, word=word))
    if since is not None:
        moment = bindparam("slice_since", since, type_=jobs.c.created_at.type)
        query = query.where(jobs.c.created_at >= moment)
    return query.offset(0).subquery("matches")


def _fulltext_matches(search: str, words: FullTextWords) -> Any:
    """:func:`search_matches` on MySQL and MariaDB: the jobs the FULLTEXT index finds
    holding ``words``, checked for the whole search, and the job the search names by
    id, as a UNION: each half one index read (the two conditions OR-ed in one WHERE
    make MySQL read the whole table: 830 ms against 4 ms on a million jobs)."""
    pattern = "%" + escape_like(search) + "%"
    indexed = mysql.match(jobs.c.name, jobs.c.error_message, against=str(words))
    by_text = select(jobs).where(
        indexed.in_boolean_mode(), SearchText().ilike(pattern, escape="\\")
    )
    return union(by_text, select(jobs).where(_by_id(search))).subquery("matches")


class SearchText(ColumnElement[str]):
    """What a search matches as text: a job's name and error text as one text. On
    PostgreSQL spelled exactly as the trigram index over it (``schema.SEARCH_TEXT``), so
    the index answers; SQLite reads the rows (it has no such index)."""

    inherit_cache = True
    #: No state of its own: statements holding it are cached once compiled (without
    #: this, SQLAlchemy compiles every search statement anew).
    _traverse_internals = []  # noqa: RUF012 - SQLAlchemy's own attribute
    type = Text()


@compiles(SearchText, "postgresql")
def _search_text_postgresql(element: SearchText, compiler: Any, **kw: Any) -> str:
    return SEARCH_TEXT


@compiles(SearchText, "mysql")
@compiles(SearchText, "mariadb")
def _search_text_mysql(element: SearchText, compiler: Any, **kw: Any) -> str:
    # ``||`` is OR there; CHAR() alone gives a binary string, which would make the whole
    # text binary (LIKE then ignores lower()).
    return "concat(coalesce(name, ''), char(31 USING utf8mb4), coalesce(error_message, ''))"


@compiles(SearchText)
def _search_text(element: SearchText, compiler: Any, **kw: Any) -> str:
    return SEARCH_TEXT.replace("chr(31)", "char(31)")  # SQLite's name for it


def escape_like(value: str) -> str:
    """``value`` matched literally inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def notify_payload(job_ids: Sequence[str]) -> str:
    """What a change notification says: the ids, or ``*`` when they do not fit."""
    payload = json.dumps(sorted(set(job_ids)), separators=(",", ":"))
    return "*" if len(payload.encode()) > NOTIFY_MAX_BYTES else payload


def notify(conn: Connection, job_ids: Sequence[str]) -> None:
    """Tell LISTENers (the dashboard's live stream) which jobs this transaction changed;
    delivered at commit, and only if it commits."""
    if conn.dialect.name != "postgresql" or not job_ids:
        return
    conn.execute(select(func.pg_notify(CHANGES_CHANNEL, notify_payload(job_ids))))


def job_of(row: Any) -> Job:
    """A ``jobs`` row as a :class:`~jobtrack.models.Job`. Its failure group is the
    row's (PostgreSQL keeps it), else worked out here (SQLite)."""
    values = dict(row)
    values.pop("state_seq", None)
    values["status"] = JobStatus(values["status"])
    if values.get("error_group") is None and "error_message" in values:
        values["error_group"] = error_group_of(
            values.get("task_name"), values.get("error_type"), values["error_message"]
        )
    return Job(**values)


class ErrorGroupOf(ColumnElement[str]):
    """A job's failure group (``models.error_group_of``): on PostgreSQL its
    ``error_group`` column (a trigger keeps it, an index serves it), on SQLite the
    function the store registers on each connection (:func:`sqlite_functions`)."""

    inherit_cache = True
    type = Text()

    def __init__(self, task_name: Any, error_type: Any, error_message: Any) -> None:
        self.columns = (task_name, error_type, error_message)


@compiles(ErrorGroupOf, "postgresql")
def _error_group_postgresql(element: ErrorGroupOf, compiler: Any, **kw: Any) -> str:
    task_name = element.columns[0]
    return str(compiler.process(task_name.table.c.error_group, **kw))


@compiles(ErrorGroupOf, "mysql")
@compiles(ErrorGroupOf, "mariadb")
def _error_group_mysql(element: ErrorGroupOf, compiler: Any, **kw: Any) -> str:
    """MySQL and MariaDB have no Python to call and no trigger keeping a column: the
    group is worked out in the statement, with the same masks (``models.ERROR_MASKS``,
    case-sensitive whatever the collation) and the same digest."""
    task_name, error_type, error_message = (
        compiler.process(column, **kw) for column in element.columns
    )
    masked = f"LEFT(COALESCE({error_message}, ''), {ERROR_GROUP_CHARS})"
    for pattern, replacement in ERROR_MASKS:
        found, put = _mysql_text("(?-i)" + pattern), _mysql_text(replacement)
        masked = f"REGEXP_REPLACE({masked}, {found}, {put})"
    return (
        f"(CASE WHEN {error_type} IS NULL AND {error_message} IS NULL THEN NULL ELSE "
        f"MD5(CONCAT(COALESCE({task_name}, ''), CHAR(31 USING utf8mb4), "
        f"COALESCE({error_type}, ''), CHAR(31 USING utf8mb4), {masked})) END)"
    )


def _mysql_text(value: str) -> str:
    """A MySQL string literal (backslashes and quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@compiles(ErrorGroupOf)
def _error_group(element: ErrorGroupOf, compiler: Any, **kw: Any) -> str:
    given = ", ".join(compiler.process(column, **kw) for column in element.columns)
    return f"jobtrack_error_group({given})"


def sqlite_functions(dbapi_conn: Any) -> None:
    """What SQLite lacks, from Python, on a new connection: ``jobtrack_error_group``."""
    dbapi_conn.create_function("jobtrack_error_group", 3, error_group_of, deterministic=True)
