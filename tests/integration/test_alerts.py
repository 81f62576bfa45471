"""Alerts on real parts: real workers make the failures, stalls and losses; a local HTTP
receiver (started here) checks webhook bodies and signatures; a local SMTP server
(aiosmtpd) takes the emails. A receiver answering 500 gets retries with backoff and
nothing twice once it recovers; a runner killed mid-pass resends nothing delivered."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from celery import Celery
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner

import jobtrack
from jobtrack.alerts import AlertRunner, load
from jobtrack.cli import main
from jobtrack.models import JobStatus
from jobtrack.settings import Settings
from tests.acceptance.webkit import free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
SECRET = "hmac-shared-secret-for-tests"


class Receiver:
    """An HTTP server on loopback that records what it gets; ``fail`` answers 500 that
    many times first; a path in ``hold`` waits until ``release`` is set."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes, int]] = []
        self.arrived: list[str] = []  # paths, as each request comes in (before any hold)
        self.fail = 0
        self.hold: set[str] = set()
        self.release = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.arrived.append(self.path)
                if self.path in outer.hold:
                    outer.release.wait(30)
                with outer.lock:
                    code = 500 if outer.fail > 0 else 200
                    outer.fail -= 1 if outer.fail > 0 else 0
                    outer.got.append((self.path, dict(self.headers), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self, path: str) -> list[dict[str, Any]]:
        """Bodies answered 200 on ``path``."""
        with self.lock:
            return [json.loads(body) for p, _, body, code in self.got if p == path and code == 200]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Inbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(message_from_bytes(envelope.content))
        return "250 OK"

    def __init__(self) -> None:
        self.mails: list[Any] = []


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def rules(receiver: Receiver, smtp_port: int, body: str) -> str:
    return f"""
[channels.hook]
type = "webhook"
url = "{receiver.url}/hook"
secret = "{SECRET}"
retry_after = "0.2s"
max_attempts = 5

[channels.chat]
type = "slack"
url = "{receiver.url}/slack/T00/B00/SLACKTOKENPART"
retry_after = "0.2s"

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
starttls = false
from = "jobtrack@example.com"
to = ["ops@example.com"]
{body}
"""


def documented_bodies() -> list[dict[str, Any]]:
    """The webhook bodies docs/alerts.md shows: a rule about jobs, then a rate rule."""
    import re

    text = (ROOT / "docs" / "alerts.md").read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def assert_documented(sent: dict[str, Any], documented: dict[str, Any]) -> None:
    """``sent`` has exactly the documented keys (its jobs too), each value of the
    documented type where both have one."""

    def same(actual: dict[str, Any], shown: dict[str, Any], where: str) -> None:
        assert sorted(actual) == sorted(shown), where
        for key, value in shown.items():
            if value is not None and actual[key] is not None:
                assert type(actual[key]) is type(value), (where, key, actual[key])

    same(sent, documented, "body")
    for job in sent["jobs"]:
        same(job, documented["jobs"][0], "job")


@pytest.fixture
def world(pg_url: str) -> Iterator[dict[str, Any]]:
    app = Celery(f"al{uuid.uuid4().hex[:6]}", broker="memory://")
    app.conf.broker_connection_retry_on_startup = True
    kind = f"imp-{uuid.uuid4().hex[:6]}"
    gates: dict[str, threading.Event] = {}

    @app.task(name=f"{app.main}.load", max_retries=0)
    @jobtrack.track(job_type=kind, name="Load {n}")
    def load_rows(n: int, fail: bool) -> int:
        if fail:
            raise ConnectionError(f"upstream refused batch {n}")
        return n

    @app.task(name=f"{app.main}.stall", bind=True)
    @jobtrack.track(job_type=f"{kind}-stall", name="Stall {n}")
    def stall(self: Any, n: int) -> int:
        job = jobtrack.current_job()
        job.progress(current=1, total=10)
        jobtrack.flush()
        assert gates.setdefault(self.request.id, threading.Event()).wait(60)
        return n

    tracker = jobtrack.install(app, pg_url, heartbeat_interval_s=0.2, flush_interval_s=0.05)
    with start_worker(app, pool="threads", concurrency=3, perform_ping_check=False):
        yield {
            "app": app,
            "tracker": tracker,
            "load": load_rows,
            "stall": stall,
            "kind": kind,
            "gates": gates,
        }
        for gate in gates.values():
            gate.set()
    jobtrack.uninstall()
    tracker.store.close()


def finished(tracker: Any, ids: list[str]) -> None:
    wait_for(
        lambda: (
            tracker.flush()
            and all(
                (j := tracker.store.find_job(i)) is not None and j.status.is_terminal for i in ids
            )
        ),
        message="jobs finished",
    )


def passes_until(runner: AlertRunner, done: Any, timeout_s: float = 20.0) -> None:
    wait_for(lambda: (runner.run_once(), done())[1], timeout_s, 0.1, message="the alert passes")


def test_a_burst_of_failures_is_one_signed_message_on_every_channel(
    world: dict[str, Any], receiver: Receiver, inbox: tuple[Inbox, int]
) -> None:
    box, smtp_port = inbox
    kind, tracker = world["kind"], world["tracker"]
    config = load(
        text=rules(
            receiver,
            smtp_port,
            f"""
[[rules]]
name = "failed-{kind}"
kind = "failed"
job_types = "{kind}"
channels = ["hook", "chat", "mail"]
group_wait = "1s"
""",
        )
    )
    settings = Settings(database_url="unused", web_public_url="https://jobs.example.com")
    runner = AlertRunner(tracker.store, config, settings)
    receiver.fail = 2  # the webhook and Slack answer 500 twice before they recover
    failed = [world["load"].delay(n, True).id for n in range(12)]
    fine = world["load"].delay(99, False).id
    finished(tracker, [*failed, fine])
    passes_until(
        runner,
        lambda: (
            len(box.mails) == 1
            and len(receiver.delivered("/hook")) == 1
            and len(receiver.delivered("/slack/T00/B00/SLACKTOKENPART")) == 1
        ),
    )
    sent = [d for d in tracker.store.alerts.recent_deliveries() if d.rule == f"failed-{kind}"]
    assert {d.status for d in sent} == {"sent"}  # nothing left to retry, ever
    for _ in range(3):
        assert runner.run_once().alerts == []  # later passes make no second message
    (hook,) = receiver.delivered("/hook")
    assert hook["count"] == 12 and hook["kind"] == "firing"
    assert hook["title"].startswith(f"12 {kind} jobs failed in ")  # "… in 1 s"
    assert {j["id"] for j in hook["jobs"]} == set(failed)
    assert hook["jobs"][0]["url"].startswith("https://jobs.example.com/jobs/")
    assert "ConnectionError: upstream refused batch" in hook["jobs"][0]["error"]
    assert_documented(hook, documented_bodies()[0])  # the shape docs/alerts.md shows
    # Signed with the shared secret, one delivery id across its retries.
    posts = [(h, body, code) for p, h, body, code in receiver.got if p == "/hook"]
    ok_headers, ok_body, _ = next(x for x in posts if x[2] == 200)
    expected = hmac.new(SECRET.encode(), ok_body, hashlib.sha256).hexdigest()
    assert ok_headers["X-Jobtrack-Signature"] == f"sha256={expected}"
    assert {h["X-Jobtrack-Delivery"] for h, _, _ in posts} == {str(hook["delivery"])}
    slack = [json.loads(b) for p, _, b, c in receiver.got if p.startswith("/slack") and c == 200]
    assert len(slack) == 1 and "<https://jobs.example.com/jobs/" in slack[0]["text"]
    assert "12 " in slack[0]["text"] and "… and 2 more" in slack[0]["text"]
    (mail,) = box.mails
    assert mail["Subject"].startswith(f"[jobtrack] 12 {kind} jobs failed")
    assert "https://jobs.example.com/jobs/" in mail.get_payload()
    deliveries = {
        d.channel: d for d in tracker.store.alerts.recent_deliveries() if d.rule == f"failed-{kind}"
    }
    assert deliveries["hook"].status == deliveries["chat"].status == "sent"
    assert deliveries["mail"].attempts == 1
    assert sum(d.attempts for d in deliveries.values()) == 5  # two 500s were retried
    # The dashboard shows the deliveries, never a secret.
    from fastapi.testclient import TestClient

    from jobtrack.web import create_app

    page = (
        TestClient(
            create_app(tracker.store, Settings(database_url="unused")),
            base_url="http://localhost",
            client=("127.0.0.1", 50000),
        )
        .get("/alerts")
        .text
    )
    assert f"failed-{kind}" in page and "sent" in page
    assert SECRET not in page and "SLACKTOKENPART" not in page


def test_a_failure_rate_fires_then_resolves_and_a_stall_is_reported(
    world: dict[str, Any], receiver: Receiver, inbox: tuple[Inbox, int]
) -> None:
    kind, tracker = world["kind"], world["tracker"]
    config = load(
        text=rules(
            receiver,
            inbox[1],
            f"""
[[rules]]
name = "rate-{kind}"
kind = "failure_rate"
job_types = "{kind}"
threshold = 50
window = "3s"
min_jobs = 4
cooldown = "0s"
channels = ["hook"]

[[rules]]
name = "stuck-{kind}"
kind = "stuck"
job_types = "{kind}-stall"
after = "1s"
channels = ["hook"]
""",
        )
    )
    runner = AlertRunner(tracker.store, config, Settings(database_url="unused"))
    stalled = world["stall"].delay(1).id
    failed = [world["load"].delay(n, True).id for n in range(4)]
    finished(tracker, failed)
    passes_until(runner, lambda: len(receiver.delivered("/hook")) >= 1)
    firing = receiver.delivered("/hook")[0]
    assert (firing["rule"], firing["kind"], firing["rate_percent"]) == (
        f"rate-{kind}",
        "firing",
        100.0,
    )
    assert_documented(firing, documented_bodies()[1])
    assert tracker.store.alerts.alert_states()[f"rate-{kind}"].firing is True
    from fastapi.testclient import TestClient

    from jobtrack.web import create_app

    tokens = "alerts-viewer-token=viewer,alerts-owned-token=viewer:someone"
    web = TestClient(create_app(tracker.store, Settings(database_url="unused", web_tokens=tokens)))
    listed = web.get("/api/alerts", headers={"Authorization": "Bearer alerts-viewer-token"})
    rule_state = next(r for r in listed.json()["rules"] if r["rule"] == f"rate-{kind}")
    assert (rule_state["firing"], rule_state["value"]) == (True, 100.0)
    owned = web.get("/api/alerts", headers={"Authorization": "Bearer alerts-owned-token"})
    assert owned.status_code == 403
    page = TestClient(
        create_app(tracker.store, Settings(database_url="unused")),
        base_url="http://localhost",
        client=("127.0.0.1", 50000),
    ).get("/alerts")
    assert f'rate-{kind}</td><td><span class="badge failed">firing' in page.text
    # The stalled job beats but makes no progress: reported once its progress stood 1 s.
    wait_for(lambda: stalled in world["gates"], message="the stall started")
    passes_until(
        runner, lambda: any(b["rule"] == f"stuck-{kind}" for b in receiver.delivered("/hook"))
    )
    stuck = next(b for b in receiver.delivered("/hook") if b["rule"] == f"stuck-{kind}")
    assert [j["id"] for j in stuck["jobs"]] == [stalled] and "no progress" in stuck["title"]
    assert tracker.store.get_job(stalled).status is JobStatus.RUNNING
    world["gates"][stalled].set()
    # The failures leave the window and successes come: resolved, once.
    fine = [world["load"].delay(n, False).id for n in range(5)]
    finished(tracker, fine)
    passes_until(
        runner, lambda: any(b["kind"] == "resolved" for b in receiver.delivered("/hook")), 30
    )
    runner.run_once()
    kinds = [b["kind"] for b in receiver.delivered("/hook") if b["rule"] == f"rate-{kind}"]
    assert kinds == ["firing", "resolved"]
    assert tracker.store.alerts.alert_states()[f"rate-{kind}"].firing is False


@pytest.mark.slow
@pytest.mark.redis
def test_a_lost_job_from_a_killed_worker_and_a_killed_runner_resends_nothing_delivered(
    start_worker: Any,
    publisher: Any,
    pg_url: str,
    receiver: Receiver,
    tmp_path: Path,
    inbox: tuple[Inbox, int],
) -> None:
    app, store = publisher
    worker = start_worker(env={"JOBTRACK_HEARTBEAT_INTERVAL_S": "0.5"})
    job_id = app.send_task("wa.sleep", args=[60], queue=worker.queue).id
    wait_for(
        lambda: (j := store.find_job(job_id)) is not None and j.status is JobStatus.RUNNING,
        message="the job runs",
    )
    worker.kill_all()  # no signal at all: only the reaper can tell
    wait_for(
        lambda: (
            job_id
            in store.upkeep.mark_lost(heartbeat_before=datetime.now(UTC) - timedelta(seconds=2))
        ),
        message="the reaper marks the job lost",
    )
    rule_file = tmp_path / "alerts.toml"
    rule_file.write_text(
        rules(
            receiver,
            inbox[1],
            """
[channels.second]
type = "webhook"
url = "RECEIVER/second"
secret = "another-secret-value"
retry_after = "0.2s"

[[rules]]
name = "lost"
kind = "lost"
group_wait = "0s"
channels = ["hook", "second"]
""".replace("RECEIVER", receiver.url),
        )
    )
    receiver.hold = {"/second"}  # the second channel hangs: the runner is killed there
    env = {**os.environ, "JOBTRACK_DATABASE_URL": pg_url}
    command = [sys.executable, "-m", "jobtrack.cli", "alerts", "run", "--file", str(rule_file)]
    runner = subprocess.Popen(
        [*command, "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(receiver.delivered("/hook")) == 1, message="the first channel got it")
        wait_for(lambda: "/second" in receiver.arrived, message="the second delivery is held")
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
    receiver.hold = set()
    receiver.release.set()
    once = subprocess.run(
        [*command, "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 0, once.stdout + once.stderr
    (first,) = receiver.delivered("/hook")  # delivered before the kill: never again
    assert [j["id"] for j in first["jobs"]] == [job_id]
    assert first["title"] == "wa.sleep lost (no heartbeat from their worker)"
    seconds = receiver.delivered("/second")
    assert len({b["delivery"] for b in seconds}) == 1 and seconds[-1]["alert"] == first["alert"]
    assert [d.status for d in store.alerts.recent_deliveries() if d.alert_id == first["alert"]] == [
        "sent",
        "sent",
    ]


def test_check_and_test_from_the_command_line(
    pg_url: str, receiver: Receiver, inbox: tuple[Inbox, int], tmp_path: Path
) -> None:
    rule_file = tmp_path / "alerts.toml"
    good = rules(
        receiver,
        inbox[1],
        '\n[[rules]]\nname = "nightly"\nkind = "failed"\nchannels = ["hook", "mail"]\n',
    )
    rule_file.write_text(good)
    cli = CliRunner()
    assert cli.invoke(main, ["--database-url", pg_url, "db", "upgrade"]).exit_code == 0
    checked = cli.invoke(
        main, ["--database-url", pg_url, "alerts", "check", "--file", str(rule_file)]
    )
    assert checked.exit_code == 0 and "1 rule(s), 3 channel(s), OK" in checked.output
    assert SECRET not in checked.output and "SLACKTOKENPART" not in checked.output
    tested = cli.invoke(
        main, ["--database-url", pg_url, "alerts", "test", "nightly", "--file", str(rule_file)]
    )
    assert tested.exit_code == 0, tested.output
    (sample,) = receiver.delivered("/hook")
    assert sample["kind"] == "test" and "Test of alert rule nightly" in sample["title"]
    assert inbox[0].mails and inbox[0].mails[0]["Subject"].startswith(
        "[jobtrack] Test of alert rule"
    )
    rule_file.write_text(good.replace('kind = "failed"', 'kind = "failled"'))
    bad = cli.invoke(main, ["--database-url", pg_url, "alerts", "check", "--file", str(rule_file)])
    line = good.splitlines().index('kind = "failed"') + 1
    assert bad.exit_code == 1 and f"{rule_file}:{line}: rule 'nightly': unknown kind" in bad.output


def test_an_unreachable_smtp_server_is_retried_and_shown_without_its_password(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from jobtrack.models import Batch, Event, JobUpdate
    from jobtrack.store import Store

    store = Store(pg_url)
    kind = f"mail-{uuid.uuid4().hex[:6]}"
    update = JobUpdate.transition(
        f"{kind}-1", JobStatus.FAILED, job_type=kind, completed_at=datetime.now(UTC)
    )
    store.write_batch(Batch([update], [Event.of(update)]))
    password = "smtp-password-never-shown"
    config = load(
        text=f"""
[channels.mail]
type = "email"
host = "127.0.0.1"
port = {free_port()}
starttls = false
username = "jobtrack"
password = "{password}"
from = "jobtrack@example.com"
to = "ops@example.com"
retry_after = "1m"

[[rules]]
name = "{kind}"
kind = "failed"
job_types = "{kind}"
group_wait = "0s"
channels = "mail"
"""
    )
    try:
        with caplog.at_level(logging.WARNING, logger="jobtrack.alerts"):
            report = AlertRunner(store, config, Settings(database_url="unused")).run_once()
        ((delivery_id, problem),) = report.failed
        assert "ConnectionRefusedError" in problem and password not in problem
        (shown,) = [d for d in store.alerts.recent_deliveries() if d.rule == kind]
        assert (shown.id, shown.status, shown.attempts) == (delivery_id, "pending", 1)
        assert (shown.next_attempt_at - datetime.now(UTC)).total_seconds() > 50  # backoff
        logged = [r.getMessage() for r in caplog.records if r.name == "jobtrack.alerts"]
        assert logged and all(password not in line for line in logged)
        assert "ConnectionRefusedError" in logged[0]
    finally:
        store.close()


def test_a_server_echoing_the_password_in_its_refusal_never_shows_it(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An SMTP server that quotes the password back in its refusal: the client's error
    holds it as Python prints bytes (backslashes doubled, quotes escaped), which the
    masking as spelled missed. No rendering of it reaches the log, the stored error,
    ``/api/alerts`` or the Alerts page."""
    from aiosmtpd.smtp import AuthResult
    from fastapi.testclient import TestClient

    from jobtrack.models import Batch, Event, JobUpdate
    from jobtrack.store import Store
    from jobtrack.web import create_app

    marker = "Xyzzy"  # in every rendering of the password, in none of anything else
    password = f"p\\q'{marker}\"r%2F&<s>"

    def refuse(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        echoed = data.password.decode()
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 refused {echoed}")

    port = free_port()
    controller = Controller(
        Inbox(), hostname="127.0.0.1", port=port, authenticator=refuse, auth_require_tls=False
    )
    controller.start()
    store = Store(pg_url)
    kind = f"echo-{uuid.uuid4().hex[:6]}"
    update = JobUpdate.transition(
        f"{kind}-1", JobStatus.FAILED, job_type=kind, completed_at=datetime.now(UTC)
    )
    store.write_batch(Batch([update], [Event.of(update)]))
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    config = load(
        text=f"""
[channels.mail]
type = "email"
host = "127.0.0.1"
port = {port}
starttls = false
username = "jobtrack"
password = "{escaped}"
from = "jobtrack@example.com"
to = "ops@example.com"
retry_after = "1m"

[[rules]]
name = "{kind}"
kind = "failed"
job_types = "{kind}"
group_wait = "0s"
channels = "mail"
"""
    )
    assert config.channels["mail"].secrets() == [password]
    try:
        with caplog.at_level(logging.WARNING, logger="jobtrack.alerts"):
            report = AlertRunner(store, config, Settings(database_url="unused")).run_once()
        ((_, problem),) = report.failed
        assert "SMTPAuthenticationError" in problem and "refused [secret]" in problem, problem
        logged = [r.getMessage() for r in caplog.records if r.name == "jobtrack.alerts"]
        (shown,) = [d for d in store.alerts.recent_deliveries() if d.rule == kind]
        web = TestClient(
            create_app(store, Settings(database_url="unused")),
            base_url="http://localhost",
            client=("127.0.0.1", 50000),
        )
        api, page = web.get("/api/alerts").text, web.get("/alerts").text
        assert "refused [secret]" in (shown.last_error or "")
        for text in (problem, *logged, shown.last_error or "", api, page):
            assert marker not in text, text
    finally:
        controller.stop()
        store.close()
