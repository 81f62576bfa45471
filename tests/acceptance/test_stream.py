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
    return httpx.stream(
        "GET",
        f"{base}/api/stream",
        params=params,
        headers=headers,
        timeout=httpx.Timeout(30.0, connect=5.0),
    )


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
        events = read_events(
            lines, lambda evs: any(e["id"] == job_id and e["status"] == "completed" for e in evs)
        )
        mine = [e for e in events if e["id"] == job_id]
        assert mine[-1]["name"] == "Report live" and mine[-1]["processed_items"] == 2
        written = f"latency-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        world.tracker.upsert_job(written, name="latency probe")  # committed on return
        read_events(lines, lambda evs: any(e["id"] == written for e in evs))
        backend = db_url.split(":", 1)[0]
        print(
            f"\nFIGURE stream, commit -> event ({backend}): "
            f"{(time.monotonic() - started) * 1000:.0f} ms (poll interval 200 ms)"
        )
    if db_url.startswith("postgresql"):  # the LISTEN connection went with the app
        wait_for(
            lambda: pg_connections(db_url, "jobtrack-listen") == 0,
            10,
            message="the listener closed",
        )


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
            events = read_events(
                lines, lambda evs: any(e["id"] == ours and e["status"] == "completed" for e in evs)
            )
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


def test_streams_are_capped_and_leave_nothing_behind(world: World) -> None:
    """Open streams are capped per token and per client address (429 past it); every
    stream of a round reads the changed rows once through the feed; closing them gives
    back their slots, and no thread stays behind."""
    import contextlib
    import threading

    app = world.web(
        web_poll_interval_s=0.2,
        web_max_streams=10,
        web_tokens=f"mine-token-0123456=viewer:{MINE},all-token-012345678=viewer",
    )
    with serve(app) as base:
        with stream(base, "mine-token-0123456") as warm:  # the feed's own thread starts
            connected(warm.iter_lines())
        wait_for(lambda: app.state.streams.open() == 0, 10, message="warm-up released")
        threads = threading.active_count()
        with contextlib.ExitStack() as stack:
            opened = [stack.enter_context(stream(base, "mine-token-0123456")) for _ in range(10)]
            readers = [response.iter_lines() for response in opened]
            for lines in readers:
                connected(lines)
            with stream(base, "mine-token-0123456") as refused:
                assert refused.status_code == 429
            with stream(base, "all-token-012345678") as same_address:
                assert same_address.status_code == 429  # the address's streams are full
            job_id = world.tasks["report"].delay("fan-out", user=MINE).id
            for lines in readers:  # one change, read once, reaches every stream
                read_events(
                    lines,
                    lambda evs: any(e["id"] == job_id and e["status"] == "completed" for e in evs),
                )
        wait_for(
            lambda: app.state.streams.open() == 0 and app.state.feed.subscribers == 0,
            10,
            message="every stream's slot given back",
        )
        with stream(base, "all-token-012345678") as again:
            assert again.status_code == 200
        # A stream holds no thread: at most the server's own pools (AnyIO's worker for
        # the sync auth check, asyncio's executor) may have grown by one each.
        wait_for(
            lambda: threading.active_count() <= threads + 2,
            10,
            message=f"threads back to {threads}",
        )
