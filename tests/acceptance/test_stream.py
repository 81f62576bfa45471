"""The live stream (GET /api/stream, Server-Sent Events) over a real uvicorn server and a
real worker: PostgreSQL delivers changes through LISTEN/NOTIFY, SQLite through polling.
An owner-bound token's stream never carries another owner's jobs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from tests.acceptance.webkit import World, read_events, serve, tracked_worker
from tests.conftest import pg_connections, wait_for

RUN = uuid.uuid4().hex[:8]
MINE, THEIRS = f"s1-{RUN}", f"s2-{RUN}"


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with tracked_worker(db_url) as w:
        yield w


def stream(base: str, token: str | None = None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.stream("GET", f"{base}/api/stream", params=params, headers=headers,
                        timeout=httpx.Timeout(30.0, connect=5.0))


def connected(lines: Iterator[str]) -> None:
    for line in lines:
        if line == ": connected":
            return
    raise AssertionError("the stream ended before it was connected")


def test_stream_delivers_a_workers_changes(world: World, db_url: str) -> None:
    app = world.web(web_poll_interval_s=0.2)
    with serve(app) as base, stream(base) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        connected(lines)
        job_id = world.tasks["report"].delay("live", user=MINE).id
        events = read_events(lines, lambda evs: any(
            e["id"] == job_id and e["status"] == "completed" for e in evs))
        mine = [e for e in events if e["id"] == job_id]
        assert mine[-1]["name"] == "Report live" and mine[-1]["processed_items"] == 2
        written = f"latency-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        world.tracker.upsert_job(written, name="latency probe")  # committed on return
        read_events(lines, lambda evs: any(e["id"] == written for e in evs))
        backend = db_url.split(":", 1)[0]
        print(f"\nFIGURE stream, commit -> event ({backend}): "
              f"{(time.monotonic() - started) * 1000:.0f} ms (poll interval 200 ms)")
    if db_url.startswith("postgresql"):  # the LISTEN connection went with the app
        wait_for(lambda: pg_connections(db_url, "jobtrack-listen") == 0, 10,
                 message="the listener closed")


def test_stream_of_one_job_and_of_one_owner(world: World) -> None:
    app = world.web(web_poll_interval_s=0.2, web_tokens=f"mine-token-0123456=viewer:{MINE}")
    tasks = world.tasks
    with serve(app) as base:
        assert httpx.get(f"{base}/api/stream", timeout=5).status_code == 401
        with stream(base, "mine-token-0123456") as response:
            lines = response.iter_lines()
            connected(lines)
            theirs = tasks["report"].delay("theirs", user=THEIRS).id
            world.finished(theirs)
            ours = tasks["report"].delay("ours", user=MINE).id
            events = read_events(lines, lambda evs: any(
                e["id"] == ours and e["status"] == "completed" for e in evs))
        assert {e["owner_id"] for e in events} == {MINE}
        assert theirs not in {e["id"] for e in events}

        single = tasks["stepper"].delay("one", 2, user=MINE).id
        wait_for(lambda: single in world.gates, message="the stepper started")
        with stream(base, "mine-token-0123456", job_id=single) as response:
            lines = response.iter_lines()
            connected(lines)
            other = tasks["report"].delay("noise", user=MINE).id
            world.finished(other)
            world.gates[single].set()
            events = read_events(lines, lambda evs: evs[-1]["status"] == "completed")
        assert {e["id"] for e in events} == {single}
        assert events[-1]["processed_items"] == 2
