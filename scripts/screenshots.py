"""The dashboard's pictures and first paint; run it through ./scripts/screenshots.

Makes a PostgreSQL database of its own (dropped first), runs a few real jobs on an
in-process worker (an import with failed rows, a sync that fails, a chord of reports,
jobs left running), adds 10,000 generated jobs over the last week, serves the dashboard
and drives Debian's Chromium through Playwright:

* writes docs/img/<page>.png at 1440x900 and docs/img/<page>-phone.png at 390x844
  (dark mode on the phone, as a phone set to dark shows it);
* prints each page's first paint (the browser's first-contentful-paint), median of 5
  loads, for docs/dashboard.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from celery import Celery, chord, group
from celery.contrib.testing.worker import start_worker

import jobtrack
from jobtrack.control import JobControl
from jobtrack.models import Batch, JobStatus, JobUpdate
from jobtrack.settings import Settings
from jobtrack.web import create_app

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("JOBTRACK_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")
DB_NAME = "jobtrack_screens"
CHROMIUM = os.environ.get("JOBTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
OWNERS = ["acme", "globex", "initech"]


def say(*parts: Any) -> None:
    print(*parts, flush=True)  # noqa: T201 - a script reports on stdout


def fresh_database() -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME


def generated(count: int) -> list[JobUpdate]:
    """``count`` finished (and some running or queued) jobs over the last week."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    tasks = [
        ("billing.charge", "billing", "GatewayError", "card {n} declined by the bank (req {h})"),
        ("mail.send", "mail", "SMTPError", "mailbox user{n}@example.com is full"),
        ("etl.load", "etl", "TimeoutError", "warehouse did not answer in {n}s"),
        ("reports.render", "report", "KeyError", "'column_{n}'"),
    ]
    made = []
    for n in range(count):
        task, kind, error, message = tasks[n % len(tasks)]
        at = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
        roll = rng.random()
        status = (
            JobStatus.FAILED
            if roll < 0.07
            else JobStatus.RUNNING
            if roll < 0.0703  # a few: a pool of four has as many slots
            else JobStatus.PENDING
            if roll < 0.08
            else JobStatus.COMPLETED
        )
        ran = timedelta(milliseconds=rng.uniform(40, 9000))
        finished = status in (JobStatus.FAILED, JobStatus.COMPLETED)
        made.append(
            JobUpdate.transition(
                f"gen-{n:05d}-{uuid.uuid4().hex[:8]}",
                status,
                at=at + ran if finished else at,
                task_name=task,
                job_type=kind,
                name=f"{kind.capitalize()} #{n}",
                owner_id=OWNERS[n % len(OWNERS)],
                queue="default",
                started_at=at if status is not JobStatus.PENDING else None,
                completed_at=at + ran if finished else None,
                duration_ms=int(ran.total_seconds() * 1000) if finished else None,
                worker=socket.gethostname() if status is not JobStatus.PENDING else None,
                error_type=error if status is JobStatus.FAILED else None,
                error_message=message.format(n=n % 50, h=uuid.uuid4().hex[:12])
                if status is JobStatus.FAILED
                else None,
            )
        )
    for one in made:
        one.created_at = one.created_at - timedelta(milliseconds=500)
    return made


def real_jobs(app: Celery, gates: dict[str, threading.Event]) -> dict[str, Any]:
    """The tasks whose pages are shown: real runs on an in-process worker."""

    @app.task(name="shop.import_products", bind=True)
    @jobtrack.track(job_type="import", name="Import {filename}", owner="user")
    def import_products(self: Any, filename: str, rows: int, user: str) -> dict[str, int]:
        job = jobtrack.current_job()
        logging.getLogger("shop.import").info("reading %s", filename)
        for n in range(rows):
            bad = n % 9 == 4
            job.item(
                f"sku-{n:04d}",
                status="error" if bad else "success",
                message="price is not a number" if bad else None,
            )
            job.progress(current=n + 1, total=rows, stage="prices")
        if self.request.id in gates:
            gates[self.request.id].wait(600)
        return {"rows": rows}

    @app.task(name="crm.sync_account")
    @jobtrack.track(job_type="sync", name="Sync {account}", owner="user")
    def sync_account(account: str, user: str) -> None:
        raise ConnectionError(f"CRM API timed out after 30s for account {account}")

    @app.task(name="reports.monthly")
    @jobtrack.track(job_type="report", name="Report {month}", owner="user")
    def monthly(month: str, user: str) -> str:
        logging.getLogger("reports").info("rendering %s", month)
        return month

    @app.task(name="reports.close_quarter")
    @jobtrack.track(job_type="report", name="Close {quarter}", owner="user")
    def close_quarter(quarter: str, user: str) -> None:
        logging.getLogger("reports").info("closing %s", quarter)
        chord(
            group(monthly.s(f"{quarter}-m{n}", user="acme") for n in (1, 2, 3)),
            monthly.si(f"{quarter} summary", user="acme"),
        ).apply_async()

    return {
        "import": import_products,
        "sync": sync_account,
        "close": close_quarter,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(asgi: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait(condition: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="generated jobs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--loads", type=int, default=5, help="loads per page for first paint")
    args = parser.parse_args()
    url = fresh_database()
    app = Celery("screens", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True
    gates: dict[str, threading.Event] = {}
    tasks = real_jobs(app, gates)
    logging.getLogger("shop.import").setLevel(logging.INFO)
    logging.getLogger("reports").setLevel(logging.INFO)
    tracker = jobtrack.install(app, url, flush_interval_s=0.05)
    store = tracker.store
    store.write_batch(Batch(generated(args.jobs)))
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False):
        done = tasks["import"].delay("products-march.csv", 120, user="acme").id
        failed = tasks["sync"].delay("globex", user="globex").id
        closed = tasks["close"].delay("2026-Q3", user="acme").id
        running = str(uuid.uuid4())
        gates[running] = threading.Event()
        tasks["import"].apply_async(("products-april.csv", 80), {"user": "acme"}, task_id=running)

        def finished(*ids: str) -> bool:
            tracker.flush()
            return all((j := store.find_job(i)) is not None and j.status.is_terminal for i in ids)

        wait(lambda: finished(done, failed, closed), "the real jobs")
        # The pictures show the task's own file where an application keeps it, not where
        # this script happens to run from.
        shown = store.get_job(failed)
        store.upsert_job(
            JobUpdate.transition(
                failed,
                shown.status,
                traceback=(shown.traceback or "").replace(__file__, "/srv/crm/tasks.py"),
            ),
            overwrite=("traceback",),
        )
        wait(lambda: len(store.list_jobs(jobtrack.JobFilter(workflow=closed))) >= 5, "the chord")
        wait(lambda: (store.get_job(running).progress_percent or 0) >= 100, "the running import")
        tracker.flush()
        settings = Settings(database_url="unused")
        pages = {
            "dashboard-jobs": "/?tab=all",
            "dashboard-running": "/?tab=running",
            "failed-tab": "/?tab=failed",
            "job-failed": f"/jobs/{failed}",
            "job-tree-logs": f"/jobs/{closed}",
            "job-items": f"/jobs/{done}",
            "failures": "/failures",
            "workers": "/workers",
            "insights": "/insights?since=7d&every=6h",
            "bulk-confirm": "/actions/new?action=retry&tab=failed",
            "confirm-delete": f"/jobs/{done}/delete",
            "actions": "/actions",
        }
        from playwright.sync_api import sync_playwright

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        paints: dict[str, list[float]] = {}
        with (
            serve(create_app(store, settings, control=JobControl(app, tracker))) as base,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for suffix, size, scheme in (
                ("", {"width": 1440, "height": 900}, "light"),
                ("-phone", {"width": 390, "height": 844}, "dark"),
            ):
                context = browser.new_context(viewport=size, color_scheme=scheme)
                page = context.new_page()
                for name, path in pages.items():
                    page.goto(f"{base}{path}")
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(out / f"{name}{suffix}.png"))
                    if suffix:
                        continue
                    for _ in range(args.loads):
                        page.goto(f"{base}{path}")
                        paints.setdefault(name, []).append(first_paint(page))
                context.close()
            browser.close()
        gates[running].set()
    jobtrack.uninstall()
    store.close()
    say(f"screenshots in {out} ({len(pages)} pages, 1440x900 and 390x844)")
    say(f"first paint on {store_count(url):,} jobs, median of {args.loads} loads (ms):")
    for name, times in paints.items():
        say(f"  {pages[name]:<45} {statistics.median(times):7.0f}   (max {max(times):.0f})")
    return 0


def first_paint(page: Any) -> float:
    """The page's first-contentful-paint (ms from navigation), once the browser has it."""
    paint = "performance.getEntriesByName('first-contentful-paint')"
    found = wait(lambda: page.evaluate(f"{paint}.map(e => e.startTime)"), "first paint", 10)
    return float(found[0])


def store_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    sys.exit(main())
