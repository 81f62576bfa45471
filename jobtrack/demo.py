"""The demo ``./scripts/demo`` and ``jobtrack demo`` run.

A Celery app configured from ``celeryconfig.py`` when it is importable (the repository's
example), else the same embedded defaults: SQLite and the ``filesystem://`` broker, so no
server is needed. A real prefork worker runs in a subprocess; this process publishes a
batch, shows the jobs table live, then prints it and the SQL a user would type.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

from . import current_job, install, track

app = Celery("jobtrack_demo")
try:
    app.config_from_object("celeryconfig")
    app.conf.broker_url  # noqa: B018 - fail here if the module lacks a broker
except ImportError:  # installed package, run outside the repository
    _data = os.environ.get("JOBTRACK_DEMO_DIR", os.path.join(os.getcwd(), ".demo"))
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": os.path.join(_data, "broker"),
            "data_folder_out": os.path.join(_data, "broker"),
            "control_folder": os.path.join(_data, "control"),
            "polling_interval": 0.1,  # as celeryconfig.py: a task picked up within 0.1 s
        },
        broker_connection_retry_on_startup=True,
        task_default_queue="default",
        jobtrack_database_url="sqlite:///" + os.path.join(_data, "jobtrack.db"),
    )
tracker = install(app)


@app.task(name="demo.import_products", bind=True)
@track(job_type="import", job_subtype="csv", name="Import {filename}", owner="user_id")
def import_products(self: Any, filename: str, user_id: str, rows: int) -> dict[str, int]:
    """Import a CSV: one item per row, live progress, a few bad rows."""
    job = current_job()
    rng = random.Random(filename)
    created = failed = 0
    for n in range(rows):
        sku = f"sku-{n:04d}"
        if rng.random() < 0.06:
            failed += 1
            job.item(sku, status="error", message="price is not a number", error_code="BAD_PRICE")
        else:
            created += 1
            job.item(
                sku, status="success", after={"sku": sku, "price": round(rng.random() * 100, 2)}
            )
        job.progress(current=n + 1, total=rows, stage="importing", message=f"row {n + 1} of {rows}")
        time.sleep(0.02)
    return {"created": created, "failed": failed}


@app.task(name="demo.sync_inventory", bind=True, max_retries=3)
@track(job_type="sync", name="Sync inventory with {warehouse}")
def sync_inventory(self: Any, warehouse: str) -> str:
    """Fails twice (the warehouse API times out), then succeeds."""
    time.sleep(0.5)
    if self.request.retries < 2:
        raise self.retry(exc=TimeoutError(f"{warehouse} API timed out"), countdown=1)
    return f"{warehouse} in sync"


@app.task(name="demo.monthly_report")
@track(job_type="report", name="Monthly report {month}")
def monthly_report(month: str, api_token: str) -> None:
    """Fails: a missing column. Its api_token argument is redacted in input_data."""
    time.sleep(1)
    raise KeyError(f"column 'revenue' missing for {month}")


EXAMPLE_SQL = [
    (
        "What failed, and why?",
        "SELECT name, error_type, error_message FROM jobs WHERE status = 'failed'",
    ),
    (
        "How long did imports take, and how many rows failed?",
        "SELECT name, duration_ms, processed_items, failed_items FROM jobs "
        "WHERE job_type = 'import' ORDER BY created_at DESC",
    ),
    (
        "Which rows of an import failed?",
        "SELECT i.key, i.error_code, i.message FROM job_items i JOIN jobs j ON j.id = i.job_id "
        "WHERE j.job_type = 'import' AND i.status = 'error' ORDER BY i.key LIMIT 5",
    ),
    (
        "The trace of a retried job:",
        "SELECT e.status, e.attempt, e.error_message FROM job_trace e JOIN jobs j "
        "ON j.id = e.job_id WHERE j.job_type = 'sync' ORDER BY e.at, e.id, e.step",
    ),
]


def run(*, timeout_s: float = 120.0, keep: bool = False) -> int:
    """Start a worker, run the batch, show it live, print the table and example SQL."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from sqlalchemy import text

    from .views import progress_table

    console = Console()
    options = app.conf.broker_transport_options or {}
    data_dir = Path(str(options.get("data_folder_in", ".demo/broker"))).parent
    if data_dir.exists() and not keep:
        shutil.rmtree(data_dir)
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            Path(str(options[key])).mkdir(parents=True, exist_ok=True)
    store = tracker.store
    store.ensure_schema()
    url = tracker.settings.database_url
    console.print(
        f"[bold]jobtrack demo[/]: tracking database [cyan]{url}[/], "
        f"broker [cyan]{app.conf.broker_url}[/]"
    )

    log_path = data_dir / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jobtrack.demo",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    try:
        ids = [
            import_products.delay("products.csv", user_id="u-42", rows=150).id,
            import_products.delay("prices.csv", user_id="u-7", rows=80).id,
            sync_inventory.delay("north").id,
            monthly_report.delay("2026-10", api_token="s3cr3t").id,
        ]
        tracker.flush()
        deadline = time.monotonic() + timeout_s
        with Live(console=console, refresh_per_second=8) as live:
            while True:
                jobs = [j for j in (store.find_job(i) for i in ids) if j is not None]
                live.update(progress_table(jobs, "jobs (live from the table)"))
                if len(jobs) == len(ids) and all(j.status.is_terminal for j in jobs):
                    break
                if worker.poll() is not None or time.monotonic() > deadline:
                    console.print(f"[red]the demo did not finish; worker log: {log_path}[/]")
                    console.print(log_path.read_text(errors="replace")[-3000:])
                    return 1
                time.sleep(0.2)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: flushes what it buffered
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()

    console.rule("The jobs table")
    table = Table()
    columns = ("name", "status", "duration_ms", "processed_items", "failed_items", "retries")
    for column in columns:
        table.add_column(column)
    for job in sorted((store.get_job(i) for i in ids), key=lambda j: j.created_at or 0):
        table.add_row(
            *(str(getattr(job, c) if getattr(job, c) is not None else "") for c in columns)
        )
    console.print(table)
    console.rule("Query it with SQL")
    with store.engine.connect() as conn:
        for title, sql in EXAMPLE_SQL:
            console.print(f"\n[bold]{title}[/]")
            console.print(f"[cyan]{sql};[/]", soft_wrap=True)
            for row in conn.execute(text(sql)):
                console.print(
                    "  " + " | ".join("" if v is None else str(v) for v in row),
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
    console.print(f"\nThe database is [cyan]{url}[/]; open it with sqlite3 and try your own.")
    return 0


if __name__ == "__main__":
    sys.exit(run())
