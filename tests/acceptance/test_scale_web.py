"""The dashboard and API on the reads that must stay bounded: a search too short to use
an index is 422, a read past ``web_query_timeout_s`` is 503 with a clear message (and
the next request is served at once), items page by keyset. PostgreSQL, real rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

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
