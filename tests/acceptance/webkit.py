"""What the web tests share: a tracked Celery app with an in-process worker, and a real
uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from celery import Celery, chord, group
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.control import JobControl
from jobtrack.settings import Settings
from jobtrack.tracker import Tracker
from jobtrack.web import create_app
from tests.conftest import wait_for

#: Hostile strings every page must show as text.
XSS_NAME = '<script>window.__xss="name"</script>'
XSS_ERROR = "<img src=x onerror=\"window.__xss='error'\">"
XSS_KEY = '"><svg onload="window.__xss=\'key\'">'


@dataclass
class World:
    app: Celery
    tracker: Tracker
    tasks: dict[str, Any]
    gates: dict[str, threading.Event] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def settings(self, **changes: Any) -> Settings:
        return Settings(database_url="unused", **changes)

    def web(self, **settings: Any) -> Any:
        return create_app(
            self.tracker.store,
            self.settings(**settings),
            control=JobControl(self.app, self.tracker),
        )

    def finished(self, *ids: str, timeout_s: float = 30.0) -> None:
        def done() -> bool:
            self.tracker.flush()
            return all(
                (j := self.tracker.store.find_job(i)) is not None and j.status.is_terminal
                for i in ids
            )

        wait_for(done, timeout_s, message=f"jobs {ids} finished")


@contextlib.contextmanager
def tracked_worker(db_url: str) -> Iterator[World]:
    """A tracked app (memory broker) with tasks for the web tests, and a thread-pool
    worker running them in this process."""
    app = Celery(f"web{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True
    world = World(app=app, tracker=None, tasks={})  # type: ignore[arg-type]

    @app.task(name=f"{app.main}.report", bind=True)
    @jobtrack.track(job_type="report", name="Report {title}", owner="user")
    def report(self: Any, title: str, user: str) -> dict[str, str]:
        job = jobtrack.current_job()
        job.item(XSS_KEY, status="error", message=XSS_ERROR)
        job.item("row-2", status="success")
        return {"title": title}

    @app.task(name=f"{app.main}.explode")
    @jobtrack.track(job_type="report", owner="user")
    def explode(user: str) -> None:
        raise ValueError(XSS_ERROR)

    @app.task(name=f"{app.main}.stepper", bind=True)
    @jobtrack.track(job_type="import", name="Import {source}", owner="user")
    def stepper(self: Any, source: str, steps: int, user: str) -> int:
        """Advances one step each time the test opens its gate."""
        job = jobtrack.current_job()
        gate = world.gates.setdefault(self.request.id, threading.Event())
        for step in range(1, steps + 1):
            job.item(f"part-{step}")
            job.progress(current=step, total=steps, stage=f"step {step} of {steps}")
            jobtrack.flush()
            if step < steps:
                assert gate.wait(60), "the test never opened the gate"
                gate.clear()
        return steps

    @app.task(name=f"{app.main}.flaky")
    @jobtrack.track(job_type="sync", name="Sync {account}", owner="user")
    def flaky(account: str, user: str) -> str:
        """Fails on its first run for an account, succeeds after (a retry fixes it)."""
        world.calls[account] = world.calls.get(account, 0) + 1
        if world.calls[account] == 1:
            raise ConnectionError(f"upstream timed out for {account}")
        return "synced"

    @app.task(name=f"{app.main}.long", bind=True)
    @jobtrack.track(job_type="import", name="Long import {source}", owner="user")
    def long(self: Any, source: str, rows: int, user: str) -> int:
        """Checkpoints each row; at row 3 it waits for its gate, checking for a pause
        (so an operator can pause it there); a resumed run goes on from the checkpoint."""
        job = jobtrack.current_job()
        gate = world.gates.setdefault(self.request.id, threading.Event())
        start = (job.last_checkpoint or {}).get("row", 0)
        for n in range(start, rows):
            job.item(f"row-{n}")
            job.progress(current=n + 1, total=rows)
            job.checkpoint({"row": n + 1})
            while n == 2 and not gate.is_set():
                job.check()
                time.sleep(0.02)
        return rows

    @app.task(name=f"{app.main}.check_rows", bind=True)
    @jobtrack.track(
        job_type="check", name="Check {source}", owner="user", fail_when="any_item_failed"
    )
    def check_rows(self: Any, source: str, user: str) -> list[str]:
        """Rows 1 and 3 fail on the first run; a retry of the failed items redoes them."""
        job = jobtrack.current_job()
        keys = job.retry_items
        world.calls[self.request.id] = world.calls.get(self.request.id, 0) + 1
        for key in keys if keys is not None else [f"row-{n}" for n in range(5)]:
            bad = keys is None and key in ("row-1", "row-3")
            job.item(key, status="error" if bad else "success")
        return list(keys or [])

    @app.task(name=f"{app.main}.talker", bind=True)
    @jobtrack.track(job_type="talk", name="Talk about {topic}", owner="user")
    def talker(self: Any, topic: str, lines: int, user: str) -> int:
        """Logs a line per step, each after the test opens its gate; then starts a
        chord of reports (a workflow: three in a group, then one more)."""
        job = jobtrack.current_job()
        gate = world.gates.setdefault(self.request.id, threading.Event())
        for n in range(lines):
            logging.getLogger("web.talker").info("said %d about %s", n, topic)
            job.progress(current=n + 1, total=lines)
            jobtrack.flush()
            if n < lines - 1:
                assert gate.wait(60), "the test never opened the gate"
                gate.clear()
        header = group(report.s(f"{topic} {n}", user=user) for n in range(3))
        chord(header, report.si(f"{topic} summed", user=user)).apply_async()
        return lines

    @app.task(name=f"{app.main}.starter")
    @jobtrack.track(job_type="start", name="Start {source}", owner="user")
    def starter(source: str, user: str) -> None:
        """Starts a group of two steppers (one workflow) and ends."""
        group(stepper.s(f"{source} {n}", 4, user=user) for n in (1, 2)).apply_async()

    logging.getLogger("web.talker").setLevel(logging.INFO)  # the root is at ERROR here
    world.tasks = {
        "talker": talker,
        "report": report,
        "explode": explode,
        "stepper": stepper,
        "flaky": flaky,
        "long": long,
        "check_rows": check_rows,
        "starter": starter,
    }
    world.tracker = jobtrack.install(app, db_url, flush_interval_s=0.05, heartbeat_interval_s=0.2)
    try:
        with start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10
        ):
            yield world
    finally:
        for gate in world.gates.values():
            gate.set()
        jobtrack.uninstall()
        world.tracker.store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(asgi: Any) -> Iterator[str]:
    """Serve ``asgi`` with uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            asgi,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 15, message="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not stop"


def read_events(lines: Iterator[str], want: Any, timeout_s: float = 20.0) -> list[Any]:
    """Parse SSE ``job`` events from ``lines`` until ``want(events)`` is true."""
    import json

    events: list[Any] = []
    deadline = time.monotonic() + timeout_s
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "job":
            events.append(json.loads(line[6:]))
            if want(events):
                return events
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the stream ended or timed out; events: {events}")
