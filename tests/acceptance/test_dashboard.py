"""The dashboard's pages over rows a real worker produced (PostgreSQL): every
user-supplied string escaped, CSRF and cross-site refusals, sign-in with tokens and
owner scoping, mounting into another app, /metrics and HTML error pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.acceptance.webkit import XSS_ERROR, XSS_KEY, XSS_NAME, World, tracked_worker

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:8]
U1, U2 = f"d1-{RUN}", f"d2-{RUN}"
OWNED = "owner-d1-token-01"
TOKENS = f"viewer-token-0001=viewer,operator-token-01=operator,{OWNED}=viewer:{U1}"
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
LOCAL = ("127.0.0.1", 50000)  # the test client's address


@pytest.fixture(scope="module")
def world(pg_url: str) -> Iterator[tuple[World, dict[str, str]]]:
    with tracked_worker(pg_url) as w:
        ids = {
            "report": w.tasks["report"].delay(XSS_NAME, user=U1).id,
            "other": w.tasks["report"].delay("other", user=U2).id,
            "failed": w.tasks["explode"].delay(user=U1).id,
        }
        w.finished(*ids.values())
        yield w, ids


def client(w: World, **settings: Any) -> TestClient:
    return TestClient(w.web(**settings), base_url="http://localhost", client=LOCAL)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries no CSRF field"
    return found.group(1)


def test_every_user_string_is_escaped(world: tuple[World, dict[str, str]]) -> None:
    w, ids = world
    c = client(w)
    pages = [
        c.get("/", params={"tab": "all", "owner_id": U1}).text,
        c.get("/", params={"tab": "failed", "owner_id": U1}).text,
        c.get(f"/jobs/{ids['report']}").text,
        c.get(f"/jobs/{ids['failed']}").text,
    ]
    for raw in (XSS_NAME, XSS_ERROR, XSS_KEY, "<script>window", "<img src=x", "<svg onload"):
        assert all(raw not in page for page in pages), raw
    assert "Report &lt;script&gt;" in pages[0]
    assert "&lt;img src=x onerror=" in pages[1]  # the failed job's error, in the list
    assert "&#34;&gt;&lt;svg onload=" in pages[2]  # the item key
    assert "&lt;img src=x" in pages[3] and "Traceback" in pages[3]
    assert "default-src 'self'; script-src 'self'" in c.get("/").headers["content-security-policy"]


def test_job_page_shows_trace_items_input_and_output(world: tuple[World, dict[str, str]]) -> None:
    w, ids = world
    page = (
        client(w, web_flower_url="http://flower.example:5555/").get(f"/jobs/{ids['report']}").text
    )
    trace = page[page.index("<h2>Trace</h2>") : page.index('<h2 id="items">Items</h2>')]
    assert re.findall(r'class="badge (\w+)"', trace) == ["pending", "running", "completed"]
    assert f'href="http://flower.example:5555/task/{ids["report"]}"' in page
    assert "<h2>Input</h2>" in page and "<h2>Output</h2>" in page
    errors_only = client(w).get(f"/jobs/{ids['report']}", params={"item_status": "error"}).text
    assert "&lt;svg onload=" in errors_only and "row-2" not in errors_only
    assert page.count("row-2") == 0  # a job with failed items opens on them
    every = client(w).get(f"/jobs/{ids['report']}", params={"item_status": "all"}).text
    assert "row-2" in every and "&lt;svg onload=" in every


def test_retry_needs_a_csrf_token_from_the_same_site(world: tuple[World, dict[str, str]]) -> None:
    w, ids = world
    c = client(w)
    token = csrf_of(c.get(f"/jobs/{ids['failed']}").text)  # sets the CSRF cookie
    url = f"/jobs/{ids['failed']}/retry"
    refused = [
        c.post(url, headers=BROWSER, data={}),  # no token
        c.post(url, headers=BROWSER, data={"csrf_token": "forged"}),
        c.post(
            url, headers={**BROWSER, "Sec-Fetch-Site": "cross-site"}, data={"csrf_token": token}
        ),
        c.post(url, headers={"Origin": "http://evil.example"}, data={"csrf_token": token}),
        c.post(f"/api/jobs/{ids['failed']}/retry", headers=BROWSER),  # API, no header
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert "CSRF" in refused[0].text and "cross-site" in refused[2].text
    before = w.tracker.store.count_jobs()
    done = c.post(url, headers=BROWSER, data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303
    new_id = done.headers["location"].rsplit("/", 1)[1]
    w.finished(new_id)
    assert w.tracker.store.count_jobs() == before + 1
    assert w.tracker.store.get_job(new_id).metadata == {"retry_of": ids["failed"]}
    via_api = c.post(f"/api/jobs/{new_id}/cancel", headers={**BROWSER, "X-CSRF-Token": token})
    assert via_api.status_code == 200 and via_api.json()["result"].startswith("already")


def test_cancel_a_queued_job_from_its_page(world: tuple[World, dict[str, str]]) -> None:
    w, _ = world
    queued = w.tasks["report"].apply_async(("queued", U1), queue=f"nobody-{RUN}").id
    w.tracker.flush()
    c = client(w)
    page = c.get(f"/jobs/{queued}").text
    assert f'action="/jobs/{queued}/cancel"' in page and 'class="retry"' not in page
    # The button opens its confirmation page; a post that did not come from there (no
    # "confirmed") is sent to it and changes nothing.
    asked = c.get(f"/jobs/{queued}/cancel")
    assert asked.status_code == 200 and "It has not started" in asked.text
    assert 'name="terminate"' not in asked.text  # nothing runs yet: a revoke is enough
    unasked = c.post(
        f"/jobs/{queued}/cancel",
        headers=BROWSER,
        data={"csrf_token": csrf_of(page)},
        follow_redirects=False,
    )
    assert unasked.status_code == 303 and unasked.headers["location"] == f"/jobs/{queued}/cancel"
    assert w.tracker.store.get_job(queued).status.value == "pending"
    done = c.post(
        f"/jobs/{queued}/cancel",
        headers=BROWSER,
        data={"csrf_token": csrf_of(asked.text), "confirmed": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{queued}"
    w.finished(queued)
    assert w.tracker.store.get_job(queued).status.value == "cancelled"
    after = c.get(f"/jobs/{queued}").text
    assert "/cancel" not in after and f'action="/jobs/{queued}/retry"' in after
    assert "there is nothing to cancel" in c.get(f"/jobs/{queued}/cancel").text


def test_sign_in_with_a_token_and_owner_scope(world: tuple[World, dict[str, str]]) -> None:
    w, ids = world
    c = client(w, web_tokens=TOKENS)
    first = c.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    login = c.get("/login").text
    bad = c.post("/login", headers=BROWSER, data={"csrf_token": csrf_of(login), "token": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text
    assert c.post("/login", headers=BROWSER, data={"token": OWNED}).status_code == 403
    ok = c.post(
        "/login",
        headers=BROWSER,
        data={"csrf_token": csrf_of(login), "token": OWNED},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and OWNED not in cookie
    listing = c.get("/", params={"tab": "all"}).text
    assert ids["report"] in listing and ids["other"] not in listing
    assert c.get(f"/jobs/{ids['other']}").status_code == 404
    failed_page = c.get(f"/jobs/{ids['failed']}").text
    assert 'class="retry"' not in failed_page  # a viewer gets no Retry button
    forbidden = c.post(
        f"/jobs/{ids['failed']}/retry", headers=BROWSER, data={"csrf_token": csrf_of(failed_page)}
    )
    assert forbidden.status_code == 403 and "operator" in forbidden.text
    assert c.get("/api/jobs", params={"owner_id": U2}).json()["jobs"] == []  # the cookie
    assert c.get("/metrics").status_code == 403
    out = c.post(
        "/logout",
        headers=BROWSER,
        data={"csrf_token": csrf_of(failed_page)},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert c.get("/", follow_redirects=False).status_code == 303


def test_loopback_mode_refuses_foreign_host_names(world: tuple[World, dict[str, str]]) -> None:
    w, _ = world
    rebound = TestClient(w.web(), base_url="http://attacker.example", client=LOCAL)
    assert rebound.get("/api/jobs").status_code == 401
    remote = TestClient(w.web(), base_url="http://localhost", client=("203.0.113.9", 4000))
    assert remote.get("/api/jobs").status_code == 401
    assert client(w).get("/api/jobs").status_code == 200


def test_mounted_in_another_app(world: tuple[World, dict[str, str]]) -> None:
    w, ids = world
    host = FastAPI()
    host.mount("/ops/jobs", w.web())

    @host.get("/")
    def home() -> dict[str, str]:
        return {"app": "theirs"}

    c = TestClient(host, base_url="http://localhost", client=LOCAL)
    page = c.get("/ops/jobs/", params={"tab": "all", "owner_id": U1}).text
    assert f'href="/ops/jobs/jobs/{ids["report"]}"' in page
    assert 'src="/ops/jobs/static/dashboard.js"' in page
    assert 'data-stream="/ops/jobs/api/stream"' in page
    assert c.get("/ops/jobs/static/dashboard.js").status_code == 200
    assert c.get(f"/ops/jobs/jobs/{ids['report']}").status_code == 200
    assert c.get("/ops/jobs/api/jobs", params={"owner_id": U1}).json()["jobs"]
    assert c.get("/").json() == {"app": "theirs"}


def test_metrics_and_error_pages(world: tuple[World, dict[str, str]]) -> None:
    w, _ = world
    c = client(w)
    metrics = c.get("/metrics")
    assert metrics.status_code == 200
    failed = re.search(r'^jobtrack_jobs\{status="failed"\} (\S+)$', metrics.text, re.M)
    assert failed and float(failed.group(1)) >= 1
    bad_tab = c.get("/", params={"tab": "<b>x</b>"})
    assert bad_tab.status_code == 400 and "Bad request: tab" in bad_tab.text
    assert "<b>x</b>" not in bad_tab.text
    assert c.get("/jobs/a%20b").status_code == 400
    assert c.get("/jobs/missing-job").status_code == 404
    assert c.get("/jobs/x", params={"item_after": -1}).status_code == 400
    assert c.get("/api/jobs", params={"limit": 0}).status_code == 422  # the API: JSON
    nul = c.get("/api/jobs", params={"search": "a\x00b"})  # PostgreSQL would refuse it
    assert nul.status_code == 422 and "NUL character" in nul.json()["detail"]
