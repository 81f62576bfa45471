"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright; no
browser download), served by uvicorn over PostgreSQL, with a real worker in this process.

Screenshots go to ``artifacts/screenshots/`` (or ``$JOBTRACK_ARTIFACTS/screenshots``).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import jobtrack
from tests.acceptance.webkit import XSS_ERROR, XSS_NAME, World, serve, tracked_worker
from tests.conftest import _unavailable, wait_for

pytestmark = pytest.mark.postgres

CHROMIUM = os.environ.get("JOBTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("JOBTRACK_ARTIFACTS", "artifacts")) / "screenshots"
USER = f"b-{uuid.uuid4().hex[:8]}"
#: As root, in a closed network: no sandbox, no GPU, no calls home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        _unavailable(
            f"Chromium at {CHROMIUM}",
            "apt-get install chromium (./scripts/test does it), or set JOBTRACK_TEST_CHROMIUM",
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(pg_url: str) -> Iterator[tuple[World, str]]:
    with tracked_worker(pg_url) as world, serve(world.web()) as base:
        yield world, base


@pytest.fixture
def page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    yield page
    context.close()
    assert problems == [], problems


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_running_jobs_progress_bar_moves_live(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    world, base = site
    job_id = world.tasks["stepper"].delay("orders.csv", 4, user=USER).id
    wait_for(lambda: job_id in world.gates, message="the job started")
    gate = world.gates[job_id]
    page.goto(f"{base}/?tab=running")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    bar = row.locator("progress")
    expect(page.locator("#live")).to_have_text("live")
    expect(bar).to_have_attribute("value", "25")
    expect(row).to_contain_text("1/4 items")
    expect(row).to_contain_text("step 1 of 4")
    expect(row).to_contain_text("started")
    shot(page, "running-25")
    gate.set()
    expect(bar).to_have_attribute("value", "50")
    expect(row).to_contain_text("2/4 items")
    gate.set()
    expect(bar).to_have_attribute("value", "75")
    shot(page, "running-75")
    assert page.evaluate("window.__sameDocument") is True

    row.locator("a").first.click()
    expect(page.locator("#job-progress")).to_have_attribute("value", "75")
    page.evaluate("window.__sameDocument = true")
    gate.set()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator(".trace")).to_contain_text("completed")
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "job-completed")


def test_failed_job_shows_its_error_and_retry_runs_it(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    world, base = site
    failed = world.tasks["flaky"].delay("acme", user=USER).id
    world.finished(failed)
    page.goto(f"{base}/?tab=failed&owner_id={USER}")
    row = page.locator(f'tr[data-job-id="{failed}"]')
    expect(row).to_contain_text("ConnectionError: upstream timed out for acme")
    shot(page, "failed-list")
    row.get_by_role("button", name="Retry").click()
    expect(page).not_to_have_url(f"{base}/?tab=failed&owner_id={USER}")
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != failed
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("dl.fields")).to_contain_text(failed)  # "Retry of"
    expect(page.locator("pre.json").last).to_contain_text("retry_of")
    shot(page, "retried-completed")
    assert world.tracker.store.get_job(new_id).output_data == "synced"
    assert world.calls["acme"] == 2


def test_pause_then_resume_a_running_job(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    world, base = site
    job_id = world.tasks["long"].delay("big.csv", 6, user=USER).id
    wait_for(
        lambda: (
            (j := world.tracker.store.find_job(job_id)) is not None
            and (j.checkpoint or {}).get("row") == 3
        ),
        message="the import waits at row 3",
    )
    page.goto(f"{base}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("running")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#job-status")).to_have_text("paused")
    expect(page.locator("#pause-request")).to_contain_text("from its last checkpoint")
    expect(page.locator(".trace")).to_contain_text("paused: stopped at its next check")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    shot(page, "job-paused")
    page.goto(f"{base}/?tab=paused&owner_id={USER}")
    expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_contain_text("paused")

    world.gates[job_id].set()  # the resumed run goes straight through
    page.locator(f'tr[data-job-id="{job_id}"]').get_by_role("button", name="Resume").click()
    expect(page).to_have_url(f"{base}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator(".trace")).to_contain_text("resumed")
    shot(page, "job-resumed-completed")
    job = world.tracker.store.get_job(job_id)
    assert (job.processed_items, job.total_items, job.retries) == (6, 6, 0)


def test_retry_only_the_failed_items(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    world, base = site
    job_id = world.tasks["check_rows"].delay("ledger", user=USER).id
    world.finished(job_id)
    page.goto(f"{base}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#job-error")).to_contain_text("2 of 5 items failed")
    page.get_by_role("button", name="Retry 2 failed items").click()
    expect(page).to_have_url(f"{base}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.get_by_role("button", name="Retry 2 failed items")).to_have_count(0)
    expect(page.locator(".trace")).to_contain_text("retrying 2 failed items")
    shot(page, "job-items-retried")
    job = world.tracker.store.get_job(job_id)
    assert (job.processed_items, job.failed_items) == (5, 0)
    assert job.output_data == ["row-1", "row-3"] and world.calls[job_id] == 2


def test_hostile_strings_stay_text(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    world, base = site
    report = world.tasks["report"].delay(XSS_NAME, user=USER).id
    explode = world.tasks["explode"].delay(user=USER).id
    world.finished(report, explode)
    page.goto(f"{base}/?tab=all&owner_id={USER}")
    expect(page.locator(f'tr[data-job-id="{report}"] td.name a')).to_have_text(f"Report {XSS_NAME}")
    page.goto(f"{base}/jobs/{explode}")
    expect(page.locator("#job-error")).to_contain_text(XSS_ERROR)
    page.goto(f"{base}/jobs/{report}")
    expect(page.locator("table.items")).to_contain_text('"><svg onload=')
    shot(page, "escaped")
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_sign_in_with_a_token_then_live_updates(chromium: Any, site: tuple[World, str]) -> None:
    from playwright.sync_api import expect

    world, _ = site
    tokens = f"ops-token-0123456=operator,{USER}-token-0123456=viewer:{USER}"
    with serve(world.web(web_tokens=tokens)) as base:
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/")
        expect(page).to_have_url(f"{base}/login")
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        expect(page.locator("p.error")).to_have_text("That token is not valid.")
        page.fill("input[name=token]", f"{USER}-token-0123456")
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{base}/")
        page.click('a[data-tab="all"]')
        expect(page.locator("#live")).to_have_text("live")  # the stream takes the cookie
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        job_id = world.tasks["report"].delay("after sign-in", user=USER).id
        expect(page.locator(f'tr[data-job-id="{job_id}"] .badge')).to_have_text("completed")
        assert page.evaluate("window.__sameDocument") is True  # it arrived live
        expect(page.locator(".who")).to_contain_text(f"owner {USER}")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{base}/login")
        context.close()


def test_retry_all_matching_confirms_the_count_and_follows_it_live(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, _ = site
    owner = f"bulk-{uuid.uuid4().hex[:8]}"
    failed = [world.tasks["flaky"].delay(f"{owner}-{n}", user=owner).id for n in range(4)]
    world.finished(*failed)
    # Paced to 2 jobs a second, one a batch: slow enough to watch it move.
    with serve(world.web(action_rate_per_s=2, action_batch_size=1)) as base:
        page.goto(f"{base}/?tab=failed&owner_id={owner}")
        page.get_by_role("button", name="Retry all 4 matching…").click()
        expect(page.locator("h1")).to_have_text("Retry 4 matching jobs?")
        shot(page, "bulk-confirm")
        page.locator("#confirm").click()
        expect(page.locator("h1")).to_contain_text("Bulk retry #")
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        expect(page.locator("#live")).to_have_text("live")
        # Seen part-way (which count a refresh catches depends on timing), then done.
        expect(page.locator("#action-counts")).to_contain_text(re.compile(r"^[123] of 4"))
        expect(page.locator("#action-status")).to_have_text("completed")
        expect(page.locator("#action-counts")).to_contain_text("4 of 4: 4 done, 0 skipped")
        expect(page.locator("#action-progress")).to_have_attribute("value", "4")
        assert page.evaluate("window.__sameDocument") is True
        shot(page, "bulk-completed")
        page.goto(f"{base}/jobs/{failed[0]}")
        expect(page.locator("#audit")).to_contain_text("Retried by loopback")
    for job_id in failed:
        (_, target), *_ = world.tracker.store.actions.actions_for_job(job_id)
        assert target.result_id is not None
        world.finished(target.result_id)
        assert world.tracker.store.get_job(target.result_id).output_data == "synced"


def test_a_running_jobs_logs_tail_live_and_its_workflow_shows_as_a_tree(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, base = site
    job_id = world.tasks["talker"].delay("tides", 3, user=USER).id
    wait_for(lambda: job_id in world.gates, message="the job started")
    page.goto(f"{base}/jobs/{job_id}")
    page.evaluate("window.__sameDocument = true")
    logs = page.locator("#job-logs")
    expect(logs).to_contain_text("said 0 about tides")
    world.gates[job_id].set()
    expect(logs).to_contain_text("said 1 about tides")  # without a reload
    world.gates[job_id].set()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#tree-summary")).to_contain_text("5 jobs: 5 of 5 done")
    expect(page.locator("#workflow-state .badge")).to_have_text("completed")
    summary = page.locator("li.tree-group summary")
    expect(summary).to_contain_text("3 of 3 done")
    members = page.locator("li.tree-group details li.tree-job")
    expect(members.first).not_to_be_visible()  # collapsed: this job is not in it
    # The chord's body is drawn under the group, after its members, not under one.
    body = page.locator("li.tree-group > ul.then > li.tree-job")
    expect(body).to_contain_text("Report tides summed")
    expect(body.locator(".took")).to_have_count(1)  # each node says how long it took
    summary.click()
    expect(members).to_have_count(3)
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "job-tree-logs")
    # On a member's page, the group holding it is drawn open.
    members.first.locator("a").click()
    expect(page.locator("li.tree-job.here")).to_be_visible()
    expect(page.locator("li.tree-group details")).to_have_attribute("open", "")


#: Logs, in the page, each fragment fetch (page clock, URL) and each stream event's job id.
WATCH = """
window.__fetches = [];
window.__events = [];
const fetchFirst = window.fetch;
window.fetch = function (url, options) {
  window.__fetches.push([Date.now(), String(url)]);
  return fetchFirst.call(this, url, options);
};
const Source = window.EventSource;
window.EventSource = function (url, options) {
  const source = new Source(url, options);
  source.addEventListener("job", (e) => window.__events.push(JSON.parse(e.data).id));
  return source;
};
"""


def test_a_workflows_tree_refreshes_at_its_own_pace_and_its_job_at_each_change(
    site: tuple[World, str], page: Any
) -> None:
    """The page's clock is the browser's fake one, standing still unless moved: which
    fetch asks for what, and when, follows from the events alone."""
    from playwright.sync_api import expect

    world, base = site
    store = world.tracker.store
    root = world.tasks["starter"].delay("paced", user=USER).id

    def steppers() -> list[Any]:
        found = store.list_jobs(jobtrack.JobFilter(workflow=root), limit=5)
        return sorted((j for j in found if j.id != root), key=lambda j: j.name or "")

    wait_for(  # at their first step, written: the page is not refreshed until moved on
        lambda: (
            len(found := steppers()) == 2
            and all(j.id in world.gates and (j.progress_percent or 0) >= 25 for j in found)
        ),
        message="both steppers at their first step",
    )
    mine, other = steppers()
    page.add_init_script(WATCH)
    start = datetime.now(UTC)
    page.clock.install(time=start)
    page.clock.pause_at(start + timedelta(minutes=1))  # still from here on, but when moved
    page.goto(f"{base}/jobs/{mine.id}")
    expect(page.locator("#live")).to_have_text("live")
    others_node = page.locator(f'li.tree-job[data-job-id="{other.id}"]')
    expect(others_node).to_contain_text("25%")
    expect(others_node).to_be_visible()  # the group holding this job is drawn open

    def advance(ms: int) -> list[str]:
        """Moves the page's clock on; the fragments it fetched meanwhile, once shown."""
        page.evaluate("document.querySelector('[data-part=job]').dataset.old = '1'")
        seen = page.evaluate("window.__fetches.length")
        page.clock.run_for(ms)
        urls = [url for _, url in page.evaluate("window.__fetches")[seen:]]
        if urls:
            wait_for(
                lambda: page.evaluate("!document.querySelector('[data-part=job]').dataset.old"),
                message="the fragment was shown",
            )
        return urls

    def step(job: Any, to: int) -> None:
        """Lets a stepper take its next step; returns once the stream reported it."""
        seen = page.evaluate("window.__events.length")
        world.gates[job.id].set()
        wait_for(
            lambda: (
                (store.get_job(job.id).processed_items >= to)
                and job.id in page.evaluate("window.__events")[seen:]
            ),
            message=f"the stream reported step {to} of {job.id}",
        )

    # Connected: the job's own parts at once; the tree, read with the page, not yet.
    assert ["tree=0" in url for url in advance(600)] == [True]
    step(mine, 2)  # this job's change: its parts follow within 500 ms, without the tree
    assert advance(600) and "tree=0" in page.evaluate("window.__fetches")[-1][1]
    expect(page.locator("#job-progress")).to_have_attribute("value", "50")

    def tree_shows(text: str) -> None:
        for _ in range(20):
            advance(500)
            if text in (others_node.text_content() or ""):
                return
        raise AssertionError(f"the tree never showed {text!r}: {others_node.inner_html()}")

    step(other, 2)  # another job's changes: the tree, when it is due, 2 s after the last
    tree_shows("50%")
    step(other, 3)
    tree_shows("75%")
    expect(others_node).to_be_visible()  # the group stayed open
    fetches = page.evaluate("window.__fetches")
    trees = [at for at, url in fetches if "tree=0" not in url]
    assert len(trees) >= 2 and all(b - a >= 2000 for a, b in itertools.pairwise(trees)), fetches
    step(mine, 3)
    for job in (mine, other):
        world.gates[job.id].set()
    world.finished(mine.id, other.id)


def test_insights_charts_render_and_read_without_colour(site: tuple[World, str], page: Any) -> None:
    from playwright.sync_api import expect

    from jobtrack.models import Batch, JobStatus, JobUpdate

    world, base = site
    # A day of history for three tasks (written through the store, as workers would).
    now = datetime.now(UTC)
    updates = []
    for hour in range(24):
        for task, runs, slow_ms in (
            ("billing.invoice", 12, 900),
            ("mail.send", 30, 120),
            ("etl.nightly", 2, 40_000),
            ("pay.refund", 3, 300),
        ):
            for n in range(runs + (hour % 5) * 2):
                finished_at = now - timedelta(hours=23 - hour, minutes=n % 50)
                failed = (n + hour) % 11 == 0 or (task == "pay.refund" and n % 3 == 0)
                updates.append(
                    JobUpdate.transition(
                        f"ins-{task}-{hour}-{n}-{USER}",
                        JobStatus.FAILED if failed else JobStatus.COMPLETED,
                        at=finished_at - timedelta(milliseconds=slow_ms + 37 * n + 800 * n),
                        task_name=task,
                        owner_id=USER,
                        started_at=finished_at - timedelta(milliseconds=slow_ms + 37 * n),
                        completed_at=finished_at,
                        duration_ms=slow_ms + 37 * n,
                    )
                )
    world.tracker.store.write_batch(Batch(updates))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/insights?since=24h&every=1h")
    table = page.locator("#insights-table")
    expect(table).to_contain_text("billing.invoice")
    section = page.locator('section.trend[data-key="mail.send"]')
    charts = section.locator("svg.chart")
    expect(charts).to_have_count(3)
    for chart in charts.all():
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80
    # Readable without colour: text legends, hatched failures, dashed p95, tooltips.
    expect(charts.nth(0).locator("text.legend")).to_have_text(["completed", "failed"])
    expect(charts.nth(1).locator("text.legend")).to_have_text(["p50", "p95"])
    dashes = (
        charts.nth(1)
        .locator("polyline.p95-line")
        .first.evaluate("e => getComputedStyle(e).strokeDasharray")
    )
    assert dashes not in ("none", "")
    assert charts.nth(0).locator("rect.failed-bar").first.get_attribute("fill") == "url(#jt-hatch)"
    assert "completed" in (charts.nth(0).locator("g > title").first.text_content() or "")
    page.select_option("select[name=every]", "6h")
    page.click("#insights-form button")
    expect(page).to_have_url(re.compile(r"every=6h"))
    expect(section.locator("svg.chart")).to_have_count(3)
    page.goto(f"{base}/insights?since=24h&every=1h")
    shot(page, "insights")
    # Each chart titled; the table sorted by a column's heading; high failure rates marked.
    expect(section.locator("figcaption")).to_have_text(
        ["Throughput: completed and failed", "Run time, p50 and p95", "Queue wait, p50 and p95"]
    )
    page.locator('th a[data-sort="failure_rate"]').click()
    expect(page).to_have_url(re.compile(r"sort=-failure_rate"))
    expect(page.locator('th[aria-sort="descending"]')).to_contain_text("Failure rate")
    cells = page.locator("#insights-table tbody td.rate").all_text_contents()
    rates = [float(c.strip().rstrip("⚠ ").rstrip("%")) for c in cells if c.strip()]
    assert rates == sorted(rates, reverse=True) and len(rates) >= 3
    marks = page.locator("#insights-table tbody td.rate .high").all_text_contents()
    assert marks and len(marks) == sum(1 for r in rates if r >= 10.0)


def test_live_updates_read_on_a_replica_once_it_has_the_change(
    chromium: Any, streaming_pair: Any
) -> None:
    """Reads on a streaming replica (the test's own pair of clusters): the dashboard's
    live update of a job written on the primary arrives once the replica has replayed
    it, and the footer says the replica served. Printed (FIGURE): the time from the
    primary's commit to the stream's event in the browser, and to the row in the page
    (which refreshes at most every 500 ms)."""
    import time

    from playwright.sync_api import expect

    from jobtrack.models import Batch, JobStatus, JobUpdate
    from jobtrack.settings import Settings
    from jobtrack.store import Store
    from jobtrack.tracker import open_store
    from jobtrack.web import create_app

    pair = streaming_pair
    config = Settings(
        database_url=pair.primary_url, read_database_url=(pair.replica_url,), read_wait_s=30
    )
    store, writer = open_store(config), Store(pair.primary_url)
    figures = []
    try:
        with serve(create_app(store, config)) as base:
            context = chromium.new_context()
            page = context.new_page()
            page.goto(f"{base}/?tab=all&search=Replica+browser")
            expect(page.locator("#live")).to_have_text("live")
            expect(page.locator("footer .served")).to_contain_text("served by replica")
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            page.evaluate(  # when each job's first event reaches this browser
                """() => { window.__seen = {};
                  const events = new EventSource("/api/stream");
                  events.addEventListener("job", (e) => { const job = JSON.parse(e.data);
                    if (!(job.id in window.__seen)) window.__seen[job.id] = Date.now(); });
                  window.__events = events; }"""
            )
            wait_for(lambda: page.evaluate("window.__events.readyState") == 1, 10)
            for n, delay in enumerate((0.0, 1.0)):  # replayed at once, then a second late
                pair.apply_delay(delay)
                job_id = f"rb-{n}-{USER}"
                committed = time.time()
                writer.write_batch(
                    Batch([JobUpdate.transition(job_id, JobStatus.FAILED, name="Replica browser")])
                )
                expect(page.locator(f'tr[data-job-id="{job_id}"] .badge')).to_have_text("failed")
                shown = time.time()
                event = page.evaluate(f"window.__seen[{job_id!r}]") / 1000
                figures.append((event - committed, shown - committed))
            assert page.evaluate("window.__sameDocument") is True  # they arrived live
            expect(page.locator("footer .served")).to_contain_text("served by replica")
            shot(page, "replica-live")
            context.close()  # its streams end before the server does
        (event_0, row_0), (event_1, row_1) = figures
        print(
            "\nFIGURE browser via a replica, commit -> event / row in the page: "
            f"{event_0 * 1000:.0f} / {row_0 * 1000:.0f} ms replayed at once, "
            f"{event_1 * 1000:.0f} / {row_1 * 1000:.0f} ms with a 1 s apply delay"
        )
    finally:
        store.close()
        writer.close()
        pair.reset()


def test_cancel_and_delete_ask_first_and_name_who_did_it(
    chromium: Any, site: tuple[World, str]
) -> None:
    """One click on Cancel or Delete changes nothing: a confirmation page (no script,
    nothing the Content-Security-Policy blocks) asks first; the audit names the token."""
    from playwright.sync_api import expect

    world, _ = site
    store = world.tracker.store
    queued = world.tasks["report"].apply_async(("held", USER), queue=f"nobody-{USER}").id
    wait_for(lambda: store.find_job(queued), message="the queued job's row")
    with serve(world.web(web_tokens="alice:alice-ops-token-01=operator")) as base:
        context = chromium.new_context()
        page = context.new_page()
        problems: list[str] = []
        page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
        page.on(
            "console", lambda m: "Content Security Policy" in m.text and problems.append(m.text)
        )
        page.goto(f"{base}/login")
        page.fill("input[name=token]", "alice-ops-token-01")
        page.click("button[type=submit]")
        page.goto(f"{base}/jobs/{queued}")
        page.get_by_role("button", name="Cancel…").click()
        expect(page.locator("#confirm-title")).to_contain_text("Cancel the job")
        expect(page.locator("#confirm-effect")).to_contain_text("It has not started")
        assert store.get_job(queued).status.value == "pending"  # asked, not done
        page.locator("#confirm").click()
        expect(page.locator("#job-status")).to_have_text("cancelled")
        expect(page.locator("#audit")).to_contain_text("Cancelled by alice")
        page.get_by_role("button", name="Delete…").click()
        expect(page.locator("#confirm-effect")).to_contain_text("This cannot be undone")
        shot(page, "confirm-delete")
        assert store.find_job(queued) is not None
        page.locator("#confirm").click()
        expect(page).to_have_url(f"{base}/")
        assert store.find_job(queued) is None
        context.close()
        assert problems == []


def test_the_failed_tab_shows_what_nobody_handled_and_groups_it_by_error(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, base = site
    owner = f"h-{uuid.uuid4().hex[:8]}"
    failed = [world.tasks["flaky"].delay(f"{owner}-{n}", user=owner).id for n in range(3)]
    world.finished(*failed)
    page.goto(f"{base}/?tab=failed&owner_id={owner}")
    count = page.locator('a[data-tab="failed"] .count')
    expect(count).to_have_text("3")
    page.locator(f'tr[data-job-id="{failed[0]}"]').get_by_role("button", name="Retry").click()
    expect(page.locator("#job-status")).to_have_text("completed")
    retry = page.url.rsplit("/", 1)[1]
    # Handled: gone from the Failed tab (and its count), shown with its retry under "all".
    page.goto(f"{base}/?tab=failed&owner_id={owner}")
    expect(page.locator("tr.job")).to_have_count(2)
    expect(count).to_have_text("2")
    page.get_by_role("link", name="Show all 3, retried ones too").click()
    handled = page.locator(f'tr[data-job-id="{failed[0]}"] .handled')
    expect(handled).to_contain_text("retried → ")
    expect(handled).to_contain_text("completed")
    page.goto(f"{base}/jobs/{failed[0]}")
    expect(page.locator("#retried-as")).to_contain_text(f"retried → {retry}, completed")
    # The two left are one failure group: counted, listed, retried together.
    page.goto(f"{base}/failures?owner_id={owner}")
    group = page.locator("tr.failure-group")
    expect(group).to_have_count(1)
    expect(group.locator(".jobs-count")).to_have_text("2")
    expect(group).to_contain_text("ConnectionError: upstream timed out for h-<id>-<n>")
    expect(group.locator("svg.spark rect.spark-bar")).to_have_count(24)
    shot(page, "failures")
    group.get_by_role("link", name="Show jobs").click()
    expect(page.locator("tr.job")).to_have_count(2)
    expect(page.locator(".chip")).to_contain_text("failure group")
    page.go_back()
    group.get_by_role("button", name="Retry 2…").click()
    expect(page.locator("h1")).to_have_text("Retry 2 matching jobs?")
    expect(page.locator("#sample tbody tr")).to_have_count(2)
    page.locator("#confirm").click()
    expect(page.locator("#action-status")).to_have_text("completed")
    page.goto(f"{base}/failures?owner_id={owner}")
    expect(page.locator("#failures-empty")).to_be_visible()
    world.finished(*(world.tracker.store.get_job(i).retried_by or i for i in failed))


def test_a_failed_job_leads_with_its_cause_after_sign_in(
    chromium: Any, site: tuple[World, str]
) -> None:
    """The link to a failed job survives sign-in; its page opens on the error and the
    task's own frames (library frames folded), its failed items, times in local time."""
    from playwright.sync_api import expect

    world, _ = site
    exploded = world.tasks["explode"].delay(user=USER).id
    checked = world.tasks["check_rows"].delay("cause", user=USER).id
    world.finished(exploded, checked)
    with serve(world.web(web_tokens="ops:ops-token-012345678=operator")) as base:
        context = chromium.new_context(timezone_id="America/New_York")
        page = context.new_page()
        page.goto(f"{base}/jobs/{exploded}")
        expect(page).to_have_url(re.compile(r"/login\?next=%2Fjobs%2F"))
        page.get_by_label("Token").fill("ops-token-012345678")
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/jobs/{exploded}")
        head = "document.querySelector('.job-head')"
        assert page.evaluate(f"{head}.nextElementSibling.id") == "job-error"
        assert page.evaluate(f"{head}.nextElementSibling.nextElementSibling.id") == (
            "job-traceback"
        )
        traceback = page.locator("#job-traceback")
        expect(traceback.locator("pre.own").first).to_be_visible()
        expect(traceback.locator("pre.own").nth(1)).to_contain_text("webkit.py")
        folded = traceback.locator("details.library").first
        expect(folded.locator("summary")).to_contain_text(re.compile(r"library frames? \(celery"))
        expect(folded.locator("pre")).not_to_be_visible()
        # Times in the viewer's zone beside UTC, once the browser has told it (live).
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("dl.fields .local").first).to_contain_text(re.compile(r"E[SD]T"))
        page.goto(f"{base}/jobs/{checked}")
        expect(page.locator('a[data-items="error"]')).to_have_attribute("aria-current", "page")
        expect(page.locator('a[data-items="error"] .count')).to_have_text("2")
        expect(page.locator('a[data-items="all"] .count')).to_have_text("5")
        expect(page.locator('a[data-items="success"] .count')).to_have_text("3")
        expect(page.locator("table.items tbody tr")).to_have_count(2)
        page.get_by_role("link", name="All 5").click()
        expect(page.locator("table.items tbody tr")).to_have_count(5)
        page.get_by_role("link", name="2 failed items").click()  # leads to them
        expect(page.locator("table.items tbody tr")).to_have_count(2)
        shot(page, "job-failed-cause")
        context.close()


def test_workers_and_queues_show_what_runs_and_what_waits_and_control_it(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, base = site
    store = world.tracker.store
    queue = str(world.app.conf.task_default_queue)
    try:
        page.goto(f"{base}/workers")
        worker = page.locator("#workers-table tr[data-worker]").first
        expect(worker).to_contain_text("online")
        expect(worker).to_contain_text("thread")
        row = page.locator(f'#queues-table tr[data-queue="{queue}"]')
        expect(row).to_contain_text(worker.get_attribute("data-worker") or "?")
        row.get_by_role("button", name="Pause").click()
        expect(row.locator(".state")).to_contain_text("paused")
        expect(row.locator(".state")).to_contain_text("Paused by loopback")
        held = world.tasks["report"].delay("held by a pause", user=USER).id
        wait_for(lambda: store.find_job(held), message="the held job's row")
        page.goto(f"{base}/workers")
        expect(row.locator(".problem-text")).to_contain_text(
            re.compile(r"\d+ queued, and no live worker consumes it")
        )
        expect(row.locator(".depth")).not_to_have_text("0")
        shot(page, "workers-queue-paused")
        row.get_by_role("button", name="Resume").click()
        world.finished(held)
        expect(row.locator(".state")).to_contain_text("Resumed by loopback")
        page.get_by_label("Task").fill(world.tasks["explode"].name)
        page.get_by_label("Rate").fill("100/m")
        page.get_by_role("button", name="Set the rate limit").click()
        expect(page.locator("#rate-limits-list")).to_contain_text("100/m")
        page.goto(f"{base}/actions")
        expect(page.locator("table.actions-list")).to_contain_text("rate-limit")
    finally:
        world.app.control.add_consumer(queue, reply=True, timeout=2)
        world.app.control.rate_limit(world.tasks["explode"].name, "0", reply=True, timeout=2)


AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


def pages_to_check(world: World) -> list[str]:
    """Every kind of page, with rows a real worker made (failed, running, a tree)."""
    store = world.tracker.store
    failed = store.list_jobs(jobtrack.JobFilter(status=(jobtrack.JobStatus.FAILED,)), limit=1)
    done = store.list_jobs(jobtrack.JobFilter(status=(jobtrack.JobStatus.COMPLETED,)), limit=1)
    assert failed and done, "earlier tests made these"
    action = store.actions.list_actions(limit=1)
    paths = [
        "/?tab=running",
        "/?tab=failed",
        "/?tab=all",
        f"/jobs/{failed[0].id}",
        f"/jobs/{done[0].id}",
        f"/jobs/{failed[0].id}/retry",
        "/actions/new?action=retry&tab=failed",
        "/actions",
        "/failures",
        "/workers",
        "/insights",
        "/alerts",
        "/login",
    ]
    return paths + ([f"/actions/{action[0].id}"] if action else [])


def test_every_page_reads_on_a_phone_in_dark_mode_and_passes_axe(
    chromium: Any, site: tuple[World, str]
) -> None:
    """axe-core (from npm, injected by the test: no CDN) finds no serious or critical
    violation on any page, at 1440 by 900 in light mode and 390 by 844 in dark mode; on the
    phone no page scrolls sideways and the list's rows are cards."""
    if not AXE.exists():
        _unavailable("axe-core at node_modules/axe-core", "npm ci (./scripts/test does it)")
    world, base = site
    made = [  # a failure, a workflow
        world.tasks["flaky"].delay(f"axe-{USER}", user=USER).id,
        world.tasks["talker"].delay("axe", 1, user=USER).id,
    ]
    world.finished(*made)
    axe = AXE.read_text()
    found: list[str] = []
    for width, height, scheme in ((1440, 900, "light"), (390, 844, "dark")):
        context = chromium.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme
        )
        page = context.new_page()
        for path in pages_to_check(world):
            page.goto(f"{base}{path}")
            page.evaluate(axe)  # through the debugger: the page's CSP still holds for it
            result = page.evaluate(
                "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})"
            )
            for v in result["violations"]:
                if v["impact"] in ("serious", "critical"):
                    targets = [n["target"] for n in v["nodes"][:3]]
                    found.append(f"{scheme} {path}: {v['id']} ({v['impact']}) {targets}")
            if width < 500:
                wide = page.evaluate("document.documentElement.scrollWidth")
                if wide > width:
                    found.append(f"{path}: {wide} px wide on a {width} px screen")
        page.goto(f"{base}/?tab=all")
        if width < 500:
            shown = page.locator("tr.job").first.evaluate("r => getComputedStyle(r).display")
            if shown != "block":
                found.append(f"a list row on the phone is shown as {shown}, not as a card")
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            if background == "rgb(248, 249, 251)":
                found.append("dark mode does not follow the system")
            shot(page, "phone-dark-list")
        context.close()
    assert found == [], "\n".join(found)


def test_keys_move_open_select_and_retry_with_its_confirmation(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, base = site
    owner = f"k-{uuid.uuid4().hex[:8]}"
    ids = [world.tasks["flaky"].delay(f"{owner}-{n}", user=owner).id for n in range(3)]
    world.finished(*ids)
    newest = [j.id for j in world.tracker.store.list_jobs(jobtrack.JobFilter(owner_id=owner))]
    listing = f"{base}/?tab=failed&owner_id={owner}"
    page.goto(listing)
    page.keyboard.press("?")
    expect(page.locator("#keys")).to_be_visible()
    page.keyboard.press("?")
    expect(page.locator("#keys")).to_be_hidden()
    page.keyboard.press("/")
    expect(page.locator('input[name="search"]')).to_be_focused()
    page.keyboard.press("Escape")
    current = page.locator("tr.job.current")
    for key, at in (("j", 0), ("j", 1), ("k", 0)):
        page.keyboard.press(key)
        expect(current).to_have_attribute("data-job-id", newest[at])
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    picked = page.locator('input[name="ids"]:checked')
    expect(picked).to_have_count(2)
    page.get_by_role("button", name="Retry the selected…").click()
    expect(page.locator("h1")).to_have_text("Retry 2 matching jobs?")
    shown = page.locator("#sample tbody tr")
    expect(shown).to_have_count(2)
    assert sorted(shown.evaluate_all("rows => rows.map(r => r.dataset.jobId)")) == sorted(
        newest[:2]
    )
    page.goto(listing)
    page.keyboard.press("j")
    page.keyboard.press("Enter")  # the row's link has the focus
    expect(page).to_have_url(f"{base}/jobs/{newest[0]}")
    page.keyboard.press("r")  # retry: its confirmation page first
    expect(page).to_have_url(f"{base}/jobs/{newest[0]}/retry")
    expect(page.locator("#confirm")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#job-status")).to_have_text("completed")
    assert world.tracker.store.get_job(newest[0]).retried_by == page.url.rsplit("/", 1)[1]


def test_filters_suggest_what_exists_and_a_time_range_narrows(
    site: tuple[World, str], page: Any
) -> None:
    from playwright.sync_api import expect

    world, base = site
    job = world.tasks["report"].delay("in range", user=USER).id
    world.finished(job)
    page.goto(f"{base}/?tab=all&owner_id={USER}")
    offered = page.locator("#suggest-task_name option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert world.tasks["report"].name in offered
    assert USER in page.locator("#suggest-owner_id option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    expect(page.locator('input[name="task_name"]')).to_have_attribute("list", "suggest-task_name")
    page.select_option('select[name="window"]', "1h")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"window=1h"))
    expect(page.locator(f'tr[data-job-id="{job}"]')).to_be_visible()
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.select_option('select[name="window"]', "custom")
    page.fill('form.filters input[name="from"]', later)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("p.empty")).to_contain_text("match these filters")
    expect(page.locator('form.filters input[name="from"]')).to_have_value(later)
