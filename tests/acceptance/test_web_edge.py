"""The web edge, tried as an attacker would (the real app over its ASGI interface, a real
SQLite database): failed authentication is limited per client address, one rate budget
per principal on every route, sessions that are new at each sign-in, end at sign-out
and expire, CSRF tokens bound to the session, API docs with no script from elsewhere,
boundary dates as bad input, and text that cannot reorder itself on screen."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from jobtrack.cli import main
from jobtrack.errors import ConfigurationError
from jobtrack.settings import Settings
from jobtrack.store import Store
from jobtrack.tracker import Tracker
from jobtrack.web import auth as auth_module
from jobtrack.web import create_app
from jobtrack.web.auth import parse_tokens
from tests.acceptance.webkit import free_port

OPERATOR, VIEWER = "operator-token-0001", "viewer-token-00001"
TOKENS = f"{OPERATOR}=operator,{VIEWER}=viewer:acme"
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    tracker = Tracker(Settings(database_url=url, write_mode="sync"))
    tracker.upsert_job("spoofed", name="invoice\u202efdp.exe", owner_id="acme", job_type="report")
    yield tracker.store
    tracker.close()
    tracker.store.close()


def app_client(store: Store, address: str = "10.1.2.3", **settings: Any) -> TestClient:
    """A client of a new app (a server process of its own)."""
    values = {"database_url": "unused", "web_tokens": TOKENS, **settings}
    return client_of(create_app(store, Settings(**values)), address)


def client_of(app: Any, address: str = "10.1.2.3") -> TestClient:
    """Another client (a browser of its own) of the same app."""
    return TestClient(app, base_url="http://localhost", client=(address, 50000))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries no CSRF field"
    return found.group(1)


def sign_in(c: TestClient, token: str) -> str:
    login = c.get("/login").text
    done = c.post(
        "/login",
        headers=BROWSER,
        data={"csrf_token": csrf_of(login), "token": token},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    return str(done.cookies["jobtrack_session"])


@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        ("short=viewer", "at least 16 characters"),
        (f"{VIEWER}=viewer:", "an owner id"),
        (f"{VIEWER}=viewer,{VIEWER}=operator", "listed once"),
        (",,,", "token=role entries"),
        (" , ", "token=role entries"),
        ("aaaaaaaaaaaaaaaa=operator", "at least 8 different characters"),
        ("abababababababab12=operator", "at least 8 different characters"),
        # '*' means every owner to row-level security: a bound token would serve them all
        # there (and answered 500 everywhere before this was refused).
        (f"{VIEWER}=viewer:*", "not '\\*'"),
        (f"{VIEWER}=operator: * ", "not '\\*'"),
        (f"ann smith:{VIEWER}=viewer", "a name of up to 64"),
        (f"ann:{VIEWER}=viewer,ann:{OPERATOR}=operator", "each name given to one token"),
        ("ann:short=viewer", "at least 16 characters"),
    ],
)
def test_weak_or_ambiguous_tokens_are_refused_at_start(tokens: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_tokens(tokens)


def test_a_token_may_carry_the_name_the_audit_trail_shows() -> None:
    found = parse_tokens(f"ann.lee:{OPERATOR}=operator:acme, {VIEWER}=viewer")
    assert {t: (p.name, p.role.value, p.owner_id) for t, p in found.items()} == {
        OPERATOR: ("ann.lee", "operator", "acme"),
        VIEWER: ("token 2", "viewer", None),
    }


@pytest.mark.usefixtures("still_rate_windows")
def test_failed_authentication_is_limited_per_address(store: Store) -> None:
    c = app_client(store, web_auth_failures_per_min=5)
    codes = [
        c.get("/api/jobs", headers=bearer(f"wrong-token-{n:05d}")).status_code for n in range(8)
    ]
    assert codes == [401] * 5 + [429] * 3
    # Past the budget even the right token from that address waits for a refill (one
    # guess every 60 / 5 seconds), and is told how long ...
    waiting = c.get("/api/jobs", headers=bearer(OPERATOR))
    assert waiting.status_code == 429 and waiting.headers["Retry-After"] == "12"
    # ... and other addresses are not affected.
    assert app_client(store).get("/api/jobs", headers=bearer(OPERATOR)).status_code == 200
    # Wrong sign-ins count too, and the form itself is refused past the budget.
    form = app_client(store, address="10.9.9.9", web_auth_failures_per_min=3)
    login = form.get("/login").text
    answers = [
        form.post(
            "/login", headers=BROWSER, data={"csrf_token": csrf_of(login), "token": f"guess-{n}"}
        ).status_code
        for n in range(5)
    ]
    assert answers == [401, 401, 401, 429, 429]
    # A stale session cookie (signed, so no guess: a restart or a sign-out) is not a
    # failure: the browser that still sends it is not locked out.
    stale = app_client(store, address="10.7.7.7", web_auth_failures_per_min=3)
    stale.cookies.set("jobtrack_session", "fingerprint.1700000000.old-id.bad-signature")
    assert [stale.get("/api/jobs").status_code for _ in range(5)] == [401] * 5


@pytest.mark.usefixtures("still_rate_windows")
def test_one_budget_per_principal_over_every_route(store: Store) -> None:
    c = app_client(store, web_rate_limit_per_min=6)
    sign_in(c, VIEWER)  # sign-in page and form: two requests of the address's budget
    for _ in range(2):
        assert c.get("/api/jobs", headers=bearer(VIEWER)).status_code == 200
    for _ in range(2):
        assert c.get("/static/dashboard.css").status_code == 200  # counted, by session
    assert c.get("/api/openapi.json", headers=bearer(VIEWER)).status_code == 200
    assert c.get("/api/jobs").status_code == 200  # the session: same principal
    assert c.get("/api/jobs", headers=bearer(VIEWER)).status_code == 429
    assert c.get("/static/dashboard.css").status_code == 429


def test_rate_limits_refill_steadily_not_at_the_turn_of_a_minute(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget of three spent a tenth of a second before the turn of a minute.
    clock = [1_000 * 60 - 0.1]
    monkeypatch.setattr(auth_module, "_limit_clock", lambda: clock[0])
    c = app_client(store, web_rate_limit_per_min=3)

    def codes(n: int) -> list[int]:
        return [c.get("/api/jobs", headers=bearer(VIEWER)).status_code for _ in range(n)]

    assert codes(3) == [200] * 3
    clock[0] += 0.2  # the minute turned: a fixed window would start a new budget here
    refused = c.get("/api/jobs", headers=bearer(VIEWER))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "20"
    assert "20 s" in refused.json()["detail"]
    clock[0] += 19.8  # one request refills every 60 / 3 seconds; a refused one spent none
    assert codes(2) == [200, 429]
    clock[0] += 60  # a whole minute idle: the whole budget, at once
    assert codes(4) == [200, 200, 200, 429]


def test_sessions_are_new_at_sign_in_end_at_sign_out_and_expire(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = app_client(store, web_session_max_age_s=3600)
    before = csrf_of(c.get("/login").text)
    first = sign_in(c, OPERATOR)
    page = c.get("/").text
    assert csrf_of(page) != before  # the CSRF token is the session's, new at sign-in
    second = sign_in(c, OPERATOR)
    assert second != first
    # A form with the token of before sign-in is refused.
    stale = c.post("/jobs/spoofed/cancel", headers=BROWSER, data={"csrf_token": before})
    assert stale.status_code == 403
    # Signing out ends the session, even for a copy of its cookie kept elsewhere.
    copy = client_of(c.app)
    copy.cookies.set("jobtrack_session", second)
    assert copy.get("/api/jobs").status_code == 200
    out = c.post(
        "/logout",
        headers=BROWSER,
        data={"csrf_token": csrf_of(c.get("/").text)},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert copy.get("/api/jobs").status_code == 401
    # A session expires: the clock moves past web_session_max_age_s.
    third = sign_in(c, VIEWER)
    real = time.time
    monkeypatch.setattr(auth_module.time, "time", lambda: real() + 3601)
    later = client_of(c.app)
    later.cookies.set("jobtrack_session", third)
    assert later.get("/api/jobs").status_code == 401


def test_a_shared_secret_keeps_sessions_across_processes(store: Store) -> None:
    one = app_client(store, web_secret="s" * 32)
    cookie = sign_in(one, VIEWER)
    other = app_client(store, web_secret="s" * 32)  # another server process
    other.cookies.set("jobtrack_session", cookie)
    assert other.get("/api/jobs").status_code == 200
    stranger = app_client(store, web_secret="t" * 32)
    stranger.cookies.set("jobtrack_session", cookie)
    assert stranger.get("/api/jobs").status_code == 401


def test_api_docs_need_sign_in_and_load_nothing_from_elsewhere(store: Store) -> None:
    c = app_client(store)
    assert c.get("/api/docs", follow_redirects=False).status_code == 303  # to /login
    docs = c.get("/api/docs", headers=bearer(VIEWER))
    assert docs.status_code == 200 and "GET /api/jobs" in docs.text
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    assert docs.headers["x-frame-options"] == "DENY"
    assert '<script src="http' not in docs.text and "cdn" not in docs.text.lower()
    assert c.get("/anything/api/docs", headers=bearer(VIEWER)).status_code == 404


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_boundary_dates_are_bad_input(store: Store, moment: str) -> None:
    """A date with no UTC equivalent, wherever a caller can give one (a query, a cursor,
    a bulk action's filter, the dashboard's time range, the CLI), is bad input: never a
    500, never "the database is unavailable", and nothing is started."""
    c = app_client(store)
    for name in ("since", "until"):
        answer = c.get("/api/jobs", params={name: moment}, headers=bearer(OPERATOR))
        assert answer.status_code == 422 and name in answer.text
    assert (
        c.get("/api/stats", params={"since": moment}, headers=bearer(OPERATOR)).status_code == 422
    )
    forged = base64.urlsafe_b64encode(f"{moment}|a".encode()).decode()
    cursor = c.get("/api/jobs", params={"cursor": forged}, headers=bearer(OPERATOR))
    assert cursor.status_code == 422 and "cursor" in cursor.text
    window = c.get("/api/insights", params={"since": moment}, headers=bearer(OPERATOR))
    assert window.status_code == 422
    for name in ("since", "until"):
        bulk = c.post(
            "/api/actions",
            json={"action": "delete", "filter": {name: moment}},
            headers=bearer(OPERATOR),
        )
        assert bulk.status_code == 422 and "out of range" in bulk.text
    assert store.actions.list_actions() == []
    sign_in(c, OPERATOR)
    for params in ({"window": "custom", "from": moment}, {"window": "custom", "to": moment}):
        page = c.get("/", params=params)
        assert page.status_code == 422 and "unavailable" not in page.text
        confirm = c.get("/actions/new", params={"action": "delete", "tab": "failed", **params})
        assert confirm.status_code == 422
    assert c.get("/", params={"cursor": forged}).status_code == 422
    url = store.engine.url.render_as_string(hide_password=False)
    listed = CliRunner().invoke(main, ["--database-url", url, "jobs", "ls", "--since", moment])
    assert listed.exit_code == 2 and "out of range in UTC" in listed.output


def test_durations_reaching_before_the_year_one_are_bad_input(store: Store) -> None:
    c = app_client(store)
    for since in ("999999w", "99999999999999w"):
        window = c.get("/api/insights", params={"since": since}, headers=bearer(OPERATOR))
        assert window.status_code == 422, window.text
    url = store.engine.url.render_as_string(hide_password=False)
    for option in ("--since", "--until"):
        listed = CliRunner().invoke(main, ["--database-url", url, "jobs", "ls", option, "999999d"])
        assert listed.exit_code == 2 and "before the year 1" in listed.output


def test_a_missing_action_is_named_an_action(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    shown = CliRunner().invoke(main, ["--database-url", url, "actions", "show", "999"])
    assert shown.exit_code == 1 and "no operator action with id 999" in shown.output


def test_text_cannot_reorder_itself_on_screen(store: Store) -> None:
    c = app_client(store)
    sign_in(c, OPERATOR)
    for page in (c.get("/", params={"tab": "all"}).text, c.get("/jobs/spoofed").text):
        assert "\u202e" not in page
        assert "invoicefdp.exe" in page  # shown as stored, in its own order


def test_a_deeply_nested_body_is_bad_input(store: Store) -> None:
    """10 KB of JSON nested 5,000 deep made the parser raise RecursionError (500, a
    reset connection); anything nested past the limit is bad input, 422, on every route
    that reads a JSON body, and nothing is started."""
    from celery import Celery

    from jobtrack.control import JobControl

    app = Celery("deep", broker="memory://")

    @app.task(name="deep.task")
    def deep_task(*args: Any, **kwargs: Any) -> None: ...

    tracker = Tracker(Settings(database_url="unused", write_mode="sync"), store=store)
    settings = Settings(
        database_url="unused", web_tokens=TOKENS, web_publishable_tasks=("deep.task",)
    )
    c = client_of(create_app(store, settings, control=JobControl(app, tracker)))
    before = store.count_jobs()
    for depth in (5000, 65):
        for key in ("args", "kwargs"):
            inner = (
                "[" * depth + "]" * depth if key == "args" else '{"a":' * depth + "1" + "}" * depth
            )
            bodies = {
                "/api/jobs": f'{{"task": "deep.task", "{key}": {inner}}}',
                "/api/jobs/spoofed/replay": f'{{"{key}": {inner}}}',
                "/api/actions": f'{{"action": "cancel", "filter": {{"ids": {inner}}}}}',
            }
            for path, body in bodies.items():
                answer = c.post(path, content=body.encode(), headers=bearer(OPERATOR))
                assert answer.status_code == 422, (path, depth, answer.text)
                assert "nested deeper than 64 levels" in answer.json()["detail"], answer.text
    # The dashboard's replay form reads the same JSON.
    sign_in(c, OPERATOR)
    page = c.get("/jobs/spoofed").text
    form = c.post(
        "/jobs/spoofed/replay",
        headers=BROWSER,
        data={"csrf_token": csrf_of(page), "input": '{"args": ' + "[" * 5000 + "]" * 5000 + "}"},
    )
    assert form.status_code == 422 and "nested deeper than 64 levels" in form.text
    assert store.count_jobs() == before
    # At the limit it is still a body (here: a job the memory broker takes).
    ok = "[" * 60 + "]" * 60
    answer = c.post(
        "/api/jobs",
        content=f'{{"task": "deep.task", "args": {ok}}}'.encode(),
        headers=bearer(OPERATOR),
    )
    assert answer.status_code == 202, answer.text


def _jobtrack_web(url: str, port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobtrack.cli", "--database-url", url, "web", "--port", str(port)],
        env={**os.environ, "JOBTRACK_WEB_TOKENS": TOKENS, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wrong_tokens(port: int, forwarded: list[str]) -> list[int]:
    """One wrong bearer token per forwarded address given; the answers' statuses."""
    codes = []
    for n, address in enumerate(forwarded):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/jobs",
            headers={"Authorization": f"Bearer wrong-token-{n:05d}", "X-Forwarded-For": address},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                codes.append(answer.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
            exc.close()
    return codes


def test_jobtrack_web_believes_forwarded_addresses_only_from_trusted_proxies(
    store: Store,
) -> None:
    """``jobtrack web`` behind no proxy: X-Forwarded-For is not believed (uvicorn's own
    default believes it from loopback), so a new forwarded address per guess does not
    escape the failed-authentication limit. With the proxy's address in
    ``web_trusted_proxies`` the forwarded client is the client. The server says where
    it listens only once it does: the first line comes when the port answers, and a
    port in use ends the command with the reason and no address."""
    url = str(store.engine.url)
    forwarded = [f"198.51.100.{n}" for n in range(8)]
    for trusted, expected in (("", [401] * 5 + [429] * 3), ("127.0.0.1", [401] * 8)):
        port = free_port()
        server = _jobtrack_web(
            url, port, JOBTRACK_WEB_AUTH_FAILURES_PER_MIN="5", JOBTRACK_WEB_TRUSTED_PROXIES=trusted
        )
        try:
            assert server.stdout is not None
            first = server.stdout.readline()  # blocks until the server says it listens
            assert first.startswith(f"dashboard on http://127.0.0.1:{port}/"), (
                first + server.stderr.read() if server.stderr else first
            )
            assert _wrong_tokens(port, forwarded) == expected
        finally:
            server.terminate()
            server.communicate(timeout=10)  # and closes its pipes
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = _jobtrack_web(url, busy.getsockname()[1])
        out, err = taken.communicate(timeout=60)
    assert taken.returncode != 0
    assert "dashboard on" not in out and "address already in use" in err.lower()


def test_a_unique_start_of_an_id_names_the_job_on_every_route(store: Store) -> None:
    """The API and the dashboard take the start of an id wherever they take an id, as
    far as the caller may see: an owner-bound token's starts are matched among its
    owner's jobs only, so they reveal nothing of others'."""
    from jobtrack.models import Batch, JobStatus, JobUpdate

    store.write_batch(
        Batch(
            [
                JobUpdate.transition("c0ffee01-aaaa", JobStatus.COMPLETED, owner_id="acme"),
                JobUpdate.transition("c0ffee02-bbbb", JobStatus.COMPLETED, owner_id="other"),
            ]
        )
    )
    c = app_client(store)
    op, acme = bearer(OPERATOR), bearer(VIEWER)  # the viewer is bound to acme
    assert c.get("/api/jobs/spoo", headers=op).json()["job"]["id"] == "spoofed"
    assert c.get("/api/jobs/spoo/items", headers=op).status_code == 200
    assert c.get("/api/jobs/spoo/tree", headers=op).json()["focus"] == "spoofed"
    both = c.get("/api/jobs/c0ffee0", headers=op)
    assert both.status_code == 409
    assert "c0ffee01-aaaa, c0ffee02-bbbb" in both.json()["detail"]
    # acme's token sees one of them: the start is its, unambiguous; the other is absent.
    assert c.get("/api/jobs/c0ffee0", headers=acme).json()["job"]["id"] == "c0ffee01-aaaa"
    assert c.get("/api/jobs/c0ffee02", headers=acme).status_code == 404
    assert c.get("/api/jobs/c0f", headers=op).status_code == 404  # too short to be a start
    gone = c.delete("/api/jobs/c0ffee02", headers=op)
    assert gone.json() == {"job_id": "c0ffee02-bbbb", "result": "deleted"}
    sign_in(c, OPERATOR)
    page = c.get("/jobs/spoo", params={"item_status": "error"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/jobs/spoofed?item_status=error"
