"""The dashboard and API on the reads that must stay bounded: a search too short to use
an index is 422, a read past ``web_query_timeout_s`` is 503 with a clear message (and
the next request is served at once), items page by keyset. PostgreSQL, real rows."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from jobtrack.models import Batch, Item, ItemStatus, JobStatus, JobUpdate
from jobtrack.settings import Settings
from jobtrack.store import Store
from jobtrack.web import create_app

pytestmark = pytest.mark.postgres

TOKEN = "scale-viewer-token"
JOB = f"scale-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.write_batch(
        Batch([JobUpdate.transition(JOB, JobStatus.COMPLETED, name="Scale check import")])
    )
    store.write_batch(
        Batch(
            items=[
                Item(JOB, f"row-{n:03d}", ItemStatus.SUCCESS, processed_at=datetime.now(UTC))
                for n in range(250)
            ]
        )
    )
    yield store
    store.close()


def client(store: Store, **settings: object) -> TestClient:
    web = create_app(
        store, Settings(database_url="unused", web_tokens=f"{TOKEN}=viewer", **settings)
    )
    return TestClient(web, headers={"Authorization": f"Bearer {TOKEN}"})


def test_short_searches_are_422_and_hostile_ones_are_text(store: Store) -> None:
    c = client(store)
    short = c.get("/api/jobs", params={"search": "ab"})
    assert short.status_code == 422 and "at least 3 characters" in short.text
    page = c.get("/", params={"tab": "all", "search": "a"})
    assert page.status_code == 422 and "at least 3 characters" in page.text
    assert c.get("/api/jobs", params={"search": "x" * 201}).status_code == 422
    for hostile in ("%%%", "___", ".*(", "'; DROP TABLE jobs; --", "\\\\%"):
        answer = c.get("/api/jobs", params={"search": hostile})
        assert answer.status_code == 200 and answer.json()["jobs"] == []
    found = c.get("/api/jobs", params={"search": JOB}).json()["jobs"]
    assert [j["id"] for j in found] == [JOB]


def test_a_read_past_the_time_limit_is_503_and_frees_the_connection(
    store: Store, pg_url: str
) -> None:
    c = client(store, web_query_timeout_s=0.3)
    holder = psycopg.connect(pg_url, autocommit=False)
    holder.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # every read must wait
    try:
        api = c.get("/api/jobs", params={"search": "Scale check"})
        assert api.status_code == 503
        assert "longer than 0.3 s" in api.json()["detail"] and api.headers["Retry-After"]
        page = c.get("/", params={"tab": "all"})
        assert page.status_code == 503 and "narrow the search or the filters" in page.text
    finally:
        holder.rollback()
        holder.close()
    assert c.get("/api/jobs", params={"search": "Scale check"}).status_code == 200


def test_items_page_by_keyset_in_the_api_and_on_the_page(store: Store) -> None:
    c = client(store)
    keys: list[str] = []
    after = None
    while True:
        params: dict[str, object] = {"limit": 100}
        if after is not None:
            params["after"] = after
        answer = c.get(f"/api/jobs/{JOB}/items", params=params).json()
        keys += [i["key"] for i in answer["items"]]
        after = answer["next_after"]
        if after is None:
            break
    assert keys == [f"row-{n:03d}" for n in range(250)]
    first = c.get(f"/jobs/{JOB}").text
    assert "row-000" in first and "row-099" in first and "row-100" not in first
    assert 'id="items-next"' in first and "item_after=" in first
    last = store.list_items(JOB, limit=100)[-1].id
    second = c.get(f"/jobs/{JOB}", params={"item_after": last}).text
    assert "row-100" in second and "row-099" not in second and "First page" in second


def test_tab_counts_of_a_common_search_are_estimates_the_page_and_api_say_so(
    store: Store,
) -> None:
    """A word 2,400 jobs hold: past what a count reads exactly, so completed (2,160 jobs)
    is estimated from its newest jobs; failed (240, fewer than the sample) is counted.
    The dashboard marks the estimate, the API says ``exact: false``. One job's own
    name is counted exactly. The jobs are the newest (an hour ahead), so the jobs other
    tests left behind do not dilute the sample; they do add to completed's total."""
    with store.engine.begin() as conn:
        others = conn.execute(
            text("SELECT count(*) FROM jobs WHERE status = 'completed'")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO jobs (id, task_name, name, status, state_seq, created_at, "
                "updated_at) SELECT 'common-' || g, 't', 'Resize thumbnail ' || g, "
                "CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, 0, "
                "now() + interval '1 hour' - make_interval(secs => g), now() "
                "FROM generate_series(1, 2400) AS g"
            )
        )
    with store.engine.connect() as conn:  # the estimate's totals come from the statistics:
        conn.execute(text("ANALYZE jobs"))  # made now, not whenever autovacuum comes by
        conn.commit()
    try:
        c = client(store)
        counted = c.get("/api/counts", params={"search": "thumbnail"}).json()
        assert counted["cap"] == 10_000
        completed, failed = counted["counts"]["completed"], counted["counts"]["failed"]
        assert completed["exact"] is False and completed["estimated"] is True
        assert 1_900 <= completed["count"] <= round(1.1 * (2_160 + others))
        assert failed == {"count": 240, "exact": True, "estimated": False}
        assert counted["counts"]["paused"] == {"count": 0, "exact": True, "estimated": False}
        one = c.get("/api/counts", params={"search": "thumbnail 1234", "status": "completed"})
        assert one.json()["counts"] == {
            "completed": {"count": 1, "exact": True, "estimated": False}
        }
        page = c.get("/", params={"tab": "all", "search": "thumbnail"})
        assert page.status_code == 200
        tabs = re.findall(
            r'data-tab="(\w+)">\w+ <span class="count([^"]*)"[^>]*>([^<]*)<', page.text
        )
        shown = {name: (kind.strip(), text_) for name, kind, text_ in tabs}
        assert shown["completed"][0] == "estimate" and shown["completed"][1].startswith("~")
        assert shown["failed"] == ("", "240")
        assert shown["all"][1].startswith("~")  # a sum with an estimate in it is one
        listed = c.get("/api/jobs", params={"search": "thumbnail", "limit": 5}).json()
        assert [j["id"] for j in listed["jobs"]] == [f"common-{g}" for g in range(1, 6)]
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE id LIKE 'common-%'"))


def test_a_page_no_bounded_read_finds_says_so_and_offers_the_full_search(
    store: Store,
) -> None:
    """2,500 old jobs hold a word, the newest 4,000 none: more matches than a page reads
    by the index, none among the newest jobs a page reads. The page says it searched
    the newest jobs only and links to the full search, which finds them; the API's list
    reads them all."""
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, task_name, name, status, state_seq, created_at, "
                "updated_at) SELECT 'older-' || g, 't', CASE WHEN g > 4000 "
                "THEN 'Reindex zqxjkv ' || g ELSE 'Newer ' || g END, 'completed', 0, "
                "now() - make_interval(secs => g), now() FROM generate_series(1, 6500) AS g"
            )
        )
    try:
        c = client(store)
        page = c.get("/", params={"tab": "all", "search": "zqxjkv"})
        assert page.status_code == 200
        assert "Only the newest jobs were searched, and none of them matches" in page.text
        assert 'data-job-id="older-' not in page.text
        full = re.search(r'href="(/\?[^"]*full=1[^"]*)"', page.text)
        assert full
        every = c.get(full.group(1).replace("&amp;", "&"))
        assert every.status_code == 200 and "Only the newest jobs" not in every.text
        assert 'data-job-id="older-4001"' in every.text  # the newest match
        assert re.search(r'data-tab="completed">Completed <span class="count">2,500<', every.text)
        listed = c.get("/api/jobs", params={"search": "zqxjkv", "limit": 3}).json()
        assert [j["id"] for j in listed["jobs"]] == ["older-4001", "older-4002", "older-4003"]
        # Its count: none among the newest completed jobs, but the index read found
        # 2,001 before it stopped: an estimate no lower than that.
        counts = c.get("/api/counts", params={"search": "zqxjkv", "status": "completed"})
        completed = counts.json()["counts"]["completed"]
        assert completed["estimated"] is True and completed["count"] == 2_001
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE id LIKE 'older-%'"))
