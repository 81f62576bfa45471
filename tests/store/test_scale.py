"""Store contract for the reads that must stay fast on a big table: a tab's newest page
merged per status, search (text, exact id, id prefix, hostile strings), keyset item
pages, and the read time limit. On SQLite and PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from jobtrack.errors import QueryTimeout
from jobtrack.models import Batch, Item, ItemStatus, JobFilter, JobStatus, JobUpdate
from jobtrack.schema import WORDS_INDEX
from jobtrack.schema import jobs as jobs_table
from jobtrack.store import Store, _page, time_limit

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def jobs(n: int, seed: int = 7) -> list[JobUpdate]:
    rng = random.Random(seed)
    made = []
    for i in range(n):
        status = rng.choice(list(JobStatus))
        made.append(
            JobUpdate.transition(
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                status,
                at=T0 + timedelta(seconds=rng.randrange(100_000)),
                job_type=rng.choice(["import", "export"]),
                owner_id=rng.choice(["a", "b", "c"]),
                task_name=rng.choice(["t.one", "t.two"]),
                queue=rng.choice(["q1", "q2"]),
                name=f"Import {i} of shop {i % 13}",
                error_message=f"upstream db-{i % 7} timed out" if status.is_terminal else None,
            )
        )
    return made


def newest(found: list[JobUpdate], keep: object, limit: int, offset: int = 0) -> list[str]:
    chosen = [u for u in found if keep(u)]  # type: ignore[operator]
    chosen.sort(key=lambda u: (u.created_at, u.id), reverse=True)
    return [u.id for u in chosen[offset : offset + limit]]


def test_a_tabs_page_merged_per_status_is_the_newest_page(store: Store) -> None:
    made = jobs(400)
    store.write_batch(Batch(made))
    tab = (JobStatus.FAILED, JobStatus.LOST)
    cases = [
        (
            JobFilter(job_type="import", status=tab),
            lambda u: u.job_type == "import" and u.status in tab,
        ),
        (JobFilter(owner_id="b"), lambda u: u.owner_id == "b"),
        (
            JobFilter(
                task_name="t.two", queue="q1", status=(JobStatus.COMPLETED, JobStatus.RUNNING)
            ),
            lambda u: (
                u.task_name == "t.two"
                and u.queue == "q1"
                and u.status in (JobStatus.COMPLETED, JobStatus.RUNNING)
            ),
        ),
    ]
    for where, keep in cases:
        for limit, offset in ((10, 0), (7, 5), (500, 0)):
            got = [j.id for j in store.list_jobs(where, limit=limit, offset=offset)]
            assert got == newest(made, keep, limit, offset), (where, limit, offset)
        # The keyset cursor pages the merged list like any other.
        first = store.list_jobs(where, limit=9)
        after = store.list_jobs(where, limit=9, before=(first[-1].created_at, first[-1].id))
        assert [j.id for j in first + after] == newest(made, keep, 18)


@pytest.mark.parametrize(
    ("search", "expect"),
    [
        ("shop 12", lambda u: u.name.endswith("of shop 12")),
        # whole words inside the search (MySQL: read by the FULLTEXT index, then checked)
        ("4 OF SHOP 1", lambda u: "4 of shop 1" in u.name.lower()),
        ("m db-3 timed o", lambda u: "m db-3 timed o" in (u.error_message or "")),
        ("t 12 of shop 1", lambda u: u.name == "Import 12 of shop 12"),
        ("DB-3 TIMED", lambda u: (u.error_message or "").startswith("upstream db-3 ")),
        ("100%", lambda u: False),  # a wildcard is a literal character
        ("of_shop", lambda u: False),
        (".*", lambda u: False),  # so is a regular expression
        ("x" * 300, lambda u: False),
        ("a\x00b", lambda u: False),  # NUL matches nothing
    ],
)
def test_search_matches_text_literally(store: Store, search: str, expect: object) -> None:
    made = jobs(300)
    store.write_batch(Batch(made))
    got = {j.id for j in store.list_jobs(JobFilter(search=search), limit=1000)}
    assert got == {u.id for u in made if expect(u)}  # type: ignore[operator]
    every = [s.value for s in JobStatus]
    counted = store.count_by_status(every, cap=1000, where=JobFilter(search=search))
    assert sum(counted.values()) == len(got)
    capped = store.count_by_status(every, cap=2, where=JobFilter(search=search))
    assert capped == {k: min(n, 3) for k, n in counted.items()}


def test_search_finds_an_exact_id_or_its_prefix(store: Store) -> None:
    made = jobs(200)
    store.write_batch(Batch(made))
    target = made[123].id
    assert [j.id for j in store.list_jobs(JobFilter(search=target))] == [target]
    for length in (8, 9, 20):  # a word-sized prefix, one with its dash, a long one
        prefix = target[:length]
        expected = sorted(u.id for u in made if u.id.startswith(prefix))
        assert sorted(j.id for j in store.list_jobs(JobFilter(search=prefix))) == expected
    assert store.list_jobs(JobFilter(search=target[:20].upper())) == []  # ids keep case
    assert store.actions.count_matching(JobFilter(search=target)) == 1


def test_search_uses_the_trigram_and_id_prefix_indexes(pg_url: str) -> None:
    """PostgreSQL only: SQLite has neither index (a search reads its rows)."""
    from jobtrack.store.common import SearchText

    store = Store(pg_url)
    store.delete_all()
    store.write_batch(Batch(jobs(50)))
    with store.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # a 50-row table: make it choose
        searched = str(SearchText().compile(dialect=conn.dialect))
        plan = (
            conn.execute(
                text(f"EXPLAIN SELECT id FROM jobs WHERE {searched} ILIKE :p"),
                {"p": "%shop 12%"},
            )
            .scalars()
            .all()
        )
        prefix = conn.execute(
            text("EXPLAIN SELECT id FROM jobs WHERE id LIKE :p"), {"p": "5f0c1a2b%"}
        )
        by_id = prefix.scalars().all()
    store.delete_all()
    store.close()
    assert any("ix_jobs_search_trgm" in line for line in plan), plan
    assert any("ix_jobs_id_prefix" in line for line in by_id), by_id


def test_the_stores_sessions_never_compile_with_jit(pg_url: str) -> None:
    """PostgreSQL compiles a statement whose estimated cost passes ``jit_above_cost``;
    the store's sessions have JIT off, so none of its reads pays for compilation."""
    explain = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM jobs WHERE retries >= 0"
    store = Store(pg_url)
    store.ensure_schema()
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as plain:
        available = plain.execute("SELECT pg_jit_available()").fetchone()
        plain.execute("SET jit_above_cost = 0")
        default = plain.execute(explain).fetchone()
    with store.engine.connect() as conn:
        conn.execute(text("SET jit_above_cost = 0"))
        ours = conn.execute(text(explain)).scalar_one()
        setting = conn.execute(text("SHOW jit")).scalar_one()
    store.close()
    assert default is not None and available is not None
    assert setting == "off" and "JIT" not in ours[0]
    if available[0]:  # the server has JIT: an ordinary session would have used it here
        assert "JIT" in default[0][0]


def test_items_page_by_keyset(store: Store) -> None:
    store.write_batch(Batch([JobUpdate.transition("big", JobStatus.RUNNING)]))
    store.write_batch(
        Batch(
            items=[
                Item(
                    "big",
                    f"k{n:04d}",
                    ItemStatus.ERROR if n % 3 == 0 else ItemStatus.SUCCESS,
                    processed_at=T0,
                )
                for n in range(250)
            ]
        )
    )
    seen: list[str] = []
    after = None
    while True:
        page = store.list_items("big", limit=40, after=after)
        if not page:
            break
        seen += [i.key for i in page]
        after = page[-1].id
    assert seen == [f"k{n:04d}" for n in range(250)]
    failed = store.list_items(
        "big",
        status="error",
        limit=10,
        after=store.list_items("big", status="error", limit=5)[-1].id,
    )
    assert [i.key for i in failed] == [f"k{n:04d}" for n in range(15, 45, 3)]


def test_a_read_past_its_time_limit_stops_and_frees_the_connection(
    store: Store, db_url: str
) -> None:
    store.write_batch(Batch(jobs(20)))
    if store.dialect == "postgresql":
        # Another session holds the table: the read waits, and is stopped at the limit.
        holder = psycopg.connect(db_url, autocommit=False)
        holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        try:
            with time_limit(0.3), pytest.raises(QueryTimeout, match=r"after 0\.3 s"):
                store.list_jobs(JobFilter(search="shop"))
        finally:
            holder.rollback()
            holder.close()
    else:
        store.write_batch(Batch(jobs(20_000, seed=3)))
        # One word with nothing around it: no index answers it (MySQL's FULLTEXT index
        # would answer a whole word inside the search at once), every row is read.
        with time_limit(0.001), pytest.raises(QueryTimeout):
            store.list_jobs(JobFilter(search="nosuchtextanywhere"), limit=10)
    # The same store reads again at once, without a limit and within one.
    assert len(store.list_jobs(limit=5)) == 5
    with time_limit(5):
        assert store.count_jobs() >= 20


WORDY = [  # names and error texts with punctuation, case and letters beyond ASCII
    "Import batch {i} of customer {c}",
    "Export: ÉTÉ-{i}/Straße {c}",
    "re-run #{i} (ticket_{c}) 100% done",
    "İstanbul.{c}.report v{i}",
]


def _wordy_jobs(n: int) -> list[JobUpdate]:
    rng = random.Random(11)
    return [
        JobUpdate.transition(
            f"w-{i}",
            JobStatus.FAILED if i % 3 == 0 else JobStatus.COMPLETED,
            at=T0 + timedelta(seconds=i),
            name=rng.choice(WORDY).format(i=i, c=i % 17),
            error_message=f"upstream db-{i % 7} timed out" if i % 3 == 0 else None,
        )
        for i in range(n)
    ]


def _ids(conn: Any, query: Any) -> set[str]:
    return set(conn.execute(query).scalars())


def test_a_search_read_by_one_of_its_words_finds_what_the_trigrams_find(pg_url: str) -> None:
    """PostgreSQL: for every whole word of a search (between two non-word characters),
    the jobs holding it that contain the search are exactly the search's jobs."""
    from jobtrack.store.common import _WHOLE_WORDS, searching

    store = Store(pg_url)
    store.delete_all()
    made = _wordy_jobs(400)
    store.write_batch(Batch(made))
    texts = [f"{u.name}\x1f{u.error_message or ''}" for u in made]
    rng = random.Random(5)
    searches = [(s, False) for s in ("db-3 timed", "ÉTÉ-12/STRASSE", "été-12/straße 12", ".5.r")]
    for text_ in rng.sample(texts, 40):  # pieces of real texts, cut anywhere, case changed
        start = rng.randrange(len(text_) - 4)
        piece = text_[start : start + rng.randrange(4, 20)]
        upper = rng.random() < 0.3  # "ß".upper() is "SS": an upper piece may match nothing
        searches.append((piece.upper() if upper else piece, not upper))
    with store.engine.connect() as conn:
        tried = 0
        for search, must_match in searches:
            if "\x1f" in search:
                continue
            expected = _ids(conn, select(jobs_table.c.id).where(searching(search)))
            assert expected or not must_match, search
            words = conn.execute(_WHOLE_WORDS, {"search": search}).scalar_one() or []
            for word in (w for w in words if w):
                got = _ids(conn, select(jobs_table.c.id).where(searching(search, word=word)))
                assert got == expected, (search, word)
                tried += 1
    store.delete_all()
    store.close()
    assert tried >= 30  # most pieces hold a whole word


def test_a_rare_word_is_read_by_the_word_index_a_common_one_by_trigrams(pg_url: str) -> None:
    """The word is picked by the index's statistics: the rarest whole word of the search,
    only if few jobs hold it; the list and the tab counts then read the word index."""
    from jobtrack.store.common import WORD_ROWS_MAX, SearchWords

    store = Store(pg_url)
    store.delete_all()
    rows = WORD_ROWS_MAX + 5_000
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, task_name, name, status, state_seq, created_at, "
                "updated_at) SELECT 'g-' || g, 't', 'Import batch ' || g || ' of customer ' "
                "|| (g % 50), CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'completed' END, 0, "
                "now() - make_interval(secs => g), now() FROM generate_series(1, :n) AS g"
            ),
            {"n": rows},
        )
        conn.execute(text("ANALYZE jobs"))
    picker = SearchWords()
    with store.engine.connect() as conn:
        assert picker.word(conn, "batch 1234 of") == "1234"
        assert picker.word(conn, "h 12 of customer 12 ") == "12"  # rarer than "of", "customer"
        assert picker.word(conn, " of customer ") is None  # every job holds both words
        assert picker.word(conn, "batch") is None  # no whole word: may be part of one
        assert picker.word(conn, "tch 77") is None
        conn.execute(text("SET enable_seqscan = off"))  # 25,000 rows: make it choose
        page = _page(JobFilter(search="batch 1234 of"), None, 51, word="1234")
        compiled = page.compile(dialect=conn.dialect)
        list_plan = "\n".join(
            conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars()
        )
    assert WORDS_INDEX in list_plan
    every = [s.value for s in JobStatus]
    for search, job, status in (
        ("batch 1234 of", "g-1234", "completed"),  # every fourth job failed
        ("batch 4000 of c", "g-4000", "failed"),
    ):
        assert [j.id for j in store.list_jobs(JobFilter(search=search))] == [job]
        found = store.count_by_status(every, cap=10, where=JobFilter(search=search))
        assert found == {status: 1}
    # Through the store (its own picker): a word with more jobs than the tab counts' cap
    # is still counted capped; a filter besides the search narrows the word's matches.
    wide = JobFilter(search=" customer 8\x1f")
    assert store.count_by_status(every, cap=10, where=wide) == {"completed": 11, "failed": 11}
    assert store.actions.count_matching(wide) == rows // 50
    narrowed = store.list_jobs(JobFilter(search=" customer 8\x1f", status=(JobStatus.FAILED,)))
    assert narrowed and all(j.status is JobStatus.FAILED for j in narrowed)
    assert [j.id for j in narrowed] == sorted(
        (j.id for j in narrowed), key=lambda i: int(i[2:])
    )  # newest first: the smallest g
    store.delete_all()
    store.close()


def test_a_page_of_a_common_word_is_first_looked_for_among_the_newest_jobs(pg_url: str) -> None:
    """Many jobs hold the word: the page is first read from a newest slice of the table
    (chosen by the ``created_at`` statistics) and kept only if the slice holds a whole
    page. Every page, by cursor to the last, is the page the trigram path reads; a
    filter the newest jobs miss falls back to every job holding the word."""
    from jobtrack.store.common import SearchWords

    store = Store(pg_url)
    store.delete_all()
    rows = 25_000
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, task_name, name, owner_id, status, state_seq, "
                "created_at, updated_at) SELECT 'g-' || g, 't', 'Import batch ' || g || "
                "' of customer ' || (g % 50), CASE WHEN g > 24000 THEN 'old' END, "
                "CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'completed' END, 0, "
                "now() - make_interval(secs => g), now() FROM generate_series(1, :n) AS g"
            ),
            {"n": rows},
        )
        conn.execute(text("ANALYZE jobs"))
    search = " customer 8\x1f"  # the whole word "8": 500 jobs, the newest g = 8
    picker = SearchWords()
    with store.engine.connect() as conn:
        assert picker.word(conn, search) == "8"
        since = picker.newest_since(conn, "8", 11)
        assert since is not None  # 500 of 25,000 jobs: worth a slice
        newest_g = conn.execute(
            text("SELECT max(substr(id, 3)::int) FROM jobs WHERE created_at >= :s"), {"s": since}
        ).scalar_one()
        assert 100 < newest_g < rows // 2  # a slice of the newest, not the table
        assert picker.newest_since(conn, "8", 11, before=since) is not None  # deeper pages too
        oldest = conn.execute(text("SELECT min(created_at) FROM jobs")).scalar_one()
        assert picker.newest_since(conn, "8", 11, before=oldest) is None  # nothing older
        naive = since.replace(tzinfo=None)  # a library caller's cursor: no guess, no error
        assert picker.newest_since(conn, "8", 11, before=naive) is None
        assert picker.newest_since(conn, "8", 400) is None  # the page is most of the word
        # 500 jobs hold the word; 20 of them are among the oldest 1,000 (owner "old")
        assert len(every_page(store, conn, JobFilter(search=search))) == 500
        assert len(every_page(store, conn, JobFilter(search=search, owner_id="old"))) == 20
    store.delete_all()
    store.close()


def every_page(store: Store, conn: Any, where: JobFilter, size: int = 10) -> list[str]:
    """Every page of ``where`` by cursor through the store, each checked equal to the
    page the trigram path reads; the ids of them all (none twice)."""
    before = None
    seen: list[str] = []
    while True:
        got = [j.id for j in store.list_jobs(where, limit=size, before=before)]
        assert got == [r.id for r in conn.execute(_page(where, before, size))], len(seen)
        seen += got
        if len(got) < size:
            break
        last = store.get_job(got[-1])
        before = (last.created_at, last.id)
    assert len(seen) == len(set(seen))
    return seen
