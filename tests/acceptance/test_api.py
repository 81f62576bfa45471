"""The JSON API over real rows a worker produced (PostgreSQL): filters, cursor paging,
owner-scoped tokens (404 across owners), 401/403/422/429/503, retry through the app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

import jobtrack
from jobtrack.control import JobControl
from jobtrack.settings import Settings
from jobtrack.store import Store
from jobtrack.web import create_app
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:8]  # owner ids of this run only: the database is shared
U1, U2 = f"u1-{RUN}", f"u2-{RUN}"
U3 = f"u3-{RUN}"
VIEW, OP, OWNED = "viewer-token-0001", "operator-token-01", "owner-u1-token-01"
OP3, OP2 = "operator-u3-token1", "operator-u2-token1"  # operators bound to one owner
TOKENS = f"{VIEW}=viewer,{OP}=operator,{OWNED}=viewer:{U1},{OP3}=operator:{U3},{OP2}=operator:{U2}"


@pytest.fixture(scope="module")
def world(pg_url: str) -> Iterator[dict[str, Any]]:
    app = Celery(f"api{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name=f"{app.main}.export", bind=True)
    @jobtrack.track(job_type="export", name="Export <{month}>", owner="user")
    def export(self: Any, month: str, user: str) -> str:
        jobtrack.current_job().item(f"{month}-row", status="error", message="<b>bad</b>")
        return month

    @app.task(name=f"{app.main}.explode")
    @jobtrack.track(job_type="export", owner="user")
    def explode(user: str) -> None:
        raise ValueError("disk full")

    tracker = jobtrack.install(app, pg_url)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        ids = {
            "u1": [export.delay(f"2026-0{n}", user=U1).id for n in range(1, 6)],
            "u2": [export.delay("2026-09", user=U2).id],
            "failed": [explode.delay(user=U2).id],
        }
        every = [i for group in ids.values() for i in group]
        wait_for(
            lambda: (
                jobtrack.flush()
                and all(
                    (j := tracker.store.find_job(i)) is not None and j.status.is_terminal
                    for i in every
                )
            ),
            message="all finished",
        )
    yield {"app": app, "tracker": tracker, "ids": ids}
    jobtrack.uninstall()
    tracker.store.close()


@pytest.fixture
def client(world: dict[str, Any]) -> TestClient:
    tracker = world["tracker"]
    settings = Settings(database_url="unused", web_tokens=TOKENS)
    return TestClient(
        create_app(tracker.store, settings, control=JobControl(world["app"], tracker))
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_required(client: TestClient) -> None:
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/api/jobs", headers=auth("nope")).status_code == 401
    assert client.get("/api/openapi.json").status_code == 200


def test_filters_and_cursor_paging(client: TestClient, world: dict[str, Any]) -> None:
    ids = world["ids"]
    failed = client.get(
        "/api/jobs",
        params={"status": "failed", "job_type": "export", "owner_id": U2},
        headers=auth(VIEW),
    ).json()["jobs"]
    assert [j["id"] for j in failed] == ids["failed"]
    assert failed[0]["error_message"] == "disk full"
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"owner_id": U1, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/jobs", params=params, headers=auth(VIEW)).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids["u1"]) and len(seen) == len(set(seen)) == 5
    found = client.get(
        "/api/jobs", params={"search": "2026-09", "owner_id": U2}, headers=auth(VIEW)
    )
    assert [j["id"] for j in found.json()["jobs"]] == ids["u2"]


def test_owner_bound_token_sees_only_its_own(client: TestClient, world: dict[str, Any]) -> None:
    ids = world["ids"]
    mine = client.get("/api/jobs", headers=auth(OWNED)).json()["jobs"]
    assert {j["owner_id"] for j in mine} == {U1}
    assert client.get(f"/api/jobs/{ids['u1'][0]}", headers=auth(OWNED)).status_code == 200
    other = client.get(f"/api/jobs/{ids['u2'][0]}", headers=auth(OWNED))
    missing = client.get("/api/jobs/does-not-exist", headers=auth(OWNED))
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(ids["u2"][0], "X") == (
        missing.json()["detail"].replace("does-not-exist", "X")
    )
    assert client.get(f"/api/jobs/{ids['u2'][0]}/items", headers=auth(OWNED)).status_code == 404
    assert (
        client.get("/api/jobs", params={"owner_id": U2}, headers=auth(OWNED)).json()["jobs"] == []
    )
    assert client.get("/api/stats", headers=auth(OWNED)).status_code == 403


def test_job_detail_items_and_stats(client: TestClient, world: dict[str, Any]) -> None:
    job_id = world["ids"]["u1"][0]
    detail = client.get(f"/api/jobs/{job_id}", headers=auth(VIEW)).json()
    assert detail["job"]["name"] == "Export <2026-01>"  # JSON carries it as text
    assert [e["status"] for e in detail["events"]] == ["pending", "running", "completed"]
    items = client.get(
        f"/api/jobs/{job_id}/items", params={"status": "error"}, headers=auth(VIEW)
    ).json()["items"]
    assert items[0]["message"] == "<b>bad</b>"
    stats = client.get("/api/stats", headers=auth(VIEW)).json()
    assert stats["by_type"]["export"]["failed"] >= 1


def test_retry_needs_the_operator_role(client: TestClient, world: dict[str, Any]) -> None:
    failed = world["ids"]["failed"][0]
    assert client.post(f"/api/jobs/{failed}/retry", headers=auth(VIEW)).status_code == 403
    done = client.post(f"/api/jobs/{failed}/retry", headers=auth(OP))
    assert done.status_code == 200
    new_id = done.json()["result"]
    world["tracker"].flush()
    assert world["tracker"].store.get_job(new_id).metadata == {"retry_of": failed}
    completed = world["ids"]["u1"][0]
    refused = client.post(f"/api/jobs/{completed}/retry", headers=auth(OP))
    assert refused.status_code == 409 and "only failed" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/api/jobs", {"status": "exploded"}),
        ("/api/jobs", {"limit": 0}),
        ("/api/jobs", {"limit": 100000}),
        ("/api/jobs", {"since": "yesterday"}),
        ("/api/jobs", {"cursor": "%%%not-a-cursor"}),
        ("/api/jobs/has space", {}),
        ("/api/jobs/x/items", {"status": "meh"}),
    ],
)
def test_bad_input_is_a_clear_422(client: TestClient, url: str, params: Any) -> None:
    answer = client.get(url, params=params, headers=auth(VIEW))
    assert answer.status_code == 422 and answer.json()["detail"]


@pytest.mark.usefixtures("still_rate_windows")
def test_rate_limit_and_unavailable_database(world: dict[str, Any]) -> None:
    limited = TestClient(
        create_app(
            world["tracker"].store,
            Settings(database_url="unused", web_tokens=TOKENS, web_rate_limit_per_min=3),
        )
    )
    codes = [limited.get("/api/jobs", headers=auth(VIEW)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    dead = Store("postgresql://root@127.0.0.1:1/none", connect_timeout_s=1)
    down = TestClient(create_app(dead, Settings(database_url="unused", web_tokens=TOKENS)))
    assert down.get("/api/jobs", headers=auth(VIEW)).status_code == 503
    dead.close()


def test_jobtrack_web_serves_loopback_without_tokens(pg_url: str, world: dict[str, Any]) -> None:
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "JOBTRACK_WEB_TOKENS"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobtrack.cli",
            "--database-url",
            pg_url,
            "web",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answer() -> Any:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/jobs?limit=1", timeout=2
            ) as response:
                return response.status, response.read()
        except OSError:
            return None

    try:
        status, body = wait_for(answer, 30, interval_s=0.2, message="jobtrack web answering")
    finally:
        server.terminate()
        server.wait(10)
    assert status == 200 and b'"jobs"' in body


def test_pause_resume_and_retry_failed_items(client: TestClient, world: dict[str, Any]) -> None:
    """The actions' answers; the worker side is black-box tested with real workers
    (tests/integration/test_pause_resume.py). No worker runs here: a new job stays queued."""
    app, tracker = world["app"], world["tracker"]
    store: Store = tracker.store
    queued = app.tasks[f"{app.main}.export"].delay("2026-12", user=U3).id
    tracker.flush()

    def post(job_id: str, action: str, token: str, **params: Any) -> Any:
        return client.post(f"/api/jobs/{job_id}/{action}", params=params, headers=auth(token))

    assert post(queued, "pause", VIEW).status_code == 403
    assert post("no-such-job", "pause", OP).status_code == 404
    assert post(queued, "pause", OP2).status_code == 404  # another owner's operator
    paused = post(queued, "pause", OP3)  # its owner's operator
    assert paused.status_code == 200 and paused.json() == {"job_id": queued, "result": "paused"}
    job = store.get_job(queued)
    assert job.status.value == "paused" and job.pause_requested_at is not None
    assert post(queued, "pause", OP).json()["result"] == "already paused"
    listed = client.get("/api/jobs", params={"status": "paused"}, headers=auth(OP3)).json()
    assert [j["id"] for j in listed["jobs"]] == [queued]
    assert post(queued, "resume", VIEW).status_code == 403
    resumed = post(queued, "resume", OP3)
    assert resumed.json()["result"] == "resumed (it was still queued)"
    assert store.get_job(queued).status.value == "pending"
    again = post(queued, "resume", OP3)
    assert again.status_code == 409
    assert again.json()["detail"].endswith("it is pending; only paused jobs can be resumed")
    detail = client.get(f"/api/jobs/{queued}", headers=auth(OP3)).json()
    assert [e["note"] for e in detail["events"] if e["note"]] == [
        "paused in the queue",
        "resumed",
    ]

    completed = world["ids"]["u1"][1]  # completed, with one failed item
    refused = post(completed, "pause", OP)
    assert (
        refused.status_code == 409
        and "only pending, running and retrying" in (refused.json()["detail"])
    )
    assert post(completed, "resume", OP).status_code == 409
    assert post(completed, "retry", VIEW, failed_items="true").status_code == 403
    retried = post(completed, "retry", OP, failed_items="true")
    assert retried.json() == {"job_id": completed, "result": completed}  # its own id
    job = store.get_job(completed)
    assert (job.status.value, job.retries, job.failed_items) == ("pending", 1, 1)
    twice = post(completed, "retry", OP, failed_items="true")
    assert twice.status_code == 409 and "only a finished job" in twice.json()["detail"]


def queued(app: Any) -> int:
    """Messages waiting in the app's (memory) default queue: no worker runs here now."""
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare("celery", passive=True).message_count)


def test_start_a_job_over_http(world: dict[str, Any]) -> None:
    app, tracker = world["app"], world["tracker"]
    export = f"{app.main}.export"
    settings = Settings(
        database_url="unused",
        web_tokens=TOKENS,
        web_publishable_tasks=(export,),
        web_max_body_bytes=2000,
    )
    client = TestClient(create_app(tracker.store, settings, control=JobControl(app, tracker)))

    def start(token: str, body: Any, **headers: str) -> Any:
        return client.post("/api/jobs", json=body, headers={**auth(token), **headers})

    before = queued(app)
    made = start(OP, {"task": export, "args": ["2027-01"], "kwargs": {"user": U3}})
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    assert made.json() == {"id": job_id, "status": "pending"}
    assert made.headers["location"] == f"/api/jobs/{job_id}"
    job = tracker.store.get_job(job_id)  # committed before the answer
    assert (job.status.value, job.task_name, job.owner_id) == ("pending", export, U3)
    assert job.name == "Export <2027-01>"
    assert queued(app) == before + 1

    # An owner-bound operator's jobs are its owner's, whatever the arguments say.
    mine = start(OP3, {"task": export, "args": ["2027-02"], "kwargs": {"user": U1}})
    assert tracker.store.get_job(mine.json()["id"]).owner_id == U3

    # The same Idempotency-Key: the first job again, nothing published.
    key = {"Idempotency-Key": f"import-{RUN}"}
    first = start(OP, {"task": export, "args": ["2027-03"], "kwargs": {"user": U3}}, **key)
    again = start(OP, {"task": export, "args": ["2027-03"], "kwargs": {"user": U3}}, **key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"] and again.headers["location"]
    assert queued(app) == before + 3
    other = start(OP3, {"task": export, "args": ["2027-03"], "kwargs": {"user": U3}}, **key)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]

    refused = {
        403: [
            start(VIEW, {"task": export}),  # not an operator
            start(OP, {"task": f"{app.main}.explode", "kwargs": {"user": U3}}),  # not listed
            start(OP, {"task": "no.such.task"}),  # the same answer: names cannot be probed
        ],
        413: [start(OP, {"task": export, "args": ["x" * 3000]})],
        422: [
            start(OP, {"task": export, "args": {"not": "a list"}}),
            start(OP, {"task": export, "surprise": 1}),
            start(OP, {"task": export, "countdown": -1}),
            client.post("/api/jobs", content=b"{not json", headers=auth(OP)),
        ],
    }
    for status, answers in refused.items():
        for answer in answers:
            assert answer.status_code == status, answer.text
    known, unknown = (answer.json()["detail"] for answer in refused[403][1:])
    assert known == f"task '{app.main}.explode' is not in web_publishable_tasks"
    assert unknown == "task 'no.such.task' is not in web_publishable_tasks"
    assert queued(app) == before + 4  # nothing refused was published


def test_jobs_by_ref(client: TestClient, world: dict[str, Any]) -> None:
    tracker = world["tracker"]
    repo = f"repo:{RUN}"
    for n, sha in enumerate(("aaa", "bbb")):
        tracker.upsert_job(f"ref-{RUN}-{n}", ref=f"{repo}@{sha}", owner_id=U3, name=f"Build {sha}")
    newest = jobtrack.jobs_for_ref(f"{repo}@*", limit=1)
    assert [j.id for j in newest] == [f"ref-{RUN}-1"]
    assert [j.id for j in jobtrack.jobs_for_ref(f"{repo}@aaa")] == [f"ref-{RUN}-0"]

    def listed(token: str, ref: str) -> list[str]:
        found = client.get("/api/jobs", params={"ref": ref}, headers=auth(token)).json()
        return [j["id"] for j in found["jobs"]]

    assert listed(OP, f"{repo}@*") == [f"ref-{RUN}-1", f"ref-{RUN}-0"]
    assert listed(OP3, f"{repo}@bbb") == [f"ref-{RUN}-1"]
    assert listed(OP2, f"{repo}@*") == []  # another owner's token
    page = client.get("/", params={"tab": "all", "ref": f"{repo}@*"}, headers=auth(OP)).text
    assert "Build aaa" in page and "Build bbb" in page
    detail = client.get(f"/jobs/ref-{RUN}-0", headers=auth(OP)).text
    assert f"{repo}@aaa" in detail
