"""jobtrack's benchmark; run it through ./scripts/bench (which sets up the virtualenv).

Prints, from one invocation, ratios against a baseline measured in the same run:

1. tasks/s of a real prefork worker (concurrency 2, Redis broker, PostgreSQL) for bare
   Celery, Celery's database result backend, jobtrack in sync mode and jobtrack's
   default, over interleaved rounds; the median ratio to bare for each.
2. Publisher speed: tasks published per second with and without jobtrack installed.
3. items/s for one job recording 100,000 items (until they are committed).
4. The extra runtime of 10,000 progress() calls in a task doing real work.
5. The dashboard-style list query ("newest 50 failed jobs of type X") on 1,000,000+
   generated rows, with its EXPLAIN.
6. Pruning 1,000,000 old jobs (each with an event and an item) in batches.
8. One alert pass on 1,000,000 jobs: each kind of rule's read, and a whole pass of
   seven rules (one per kind).
9. A workflow of 10,000 jobs: its tree read, built and answered, and its job page.
10. Per-job logs: lines/s captured and committed; an ignored DEBUG call with capture on
    against off.
11. Insights over a 24-hour window (and 7 days) on 1,000,000 jobs.
7. Bulk retry of 100,000 failed jobs (Redis broker, nobody consuming): jobs re-published
   per second against a bare publishing loop, the dashboard's list page p95 while it
   runs, then a second run killed with SIGKILL half-way and resumed, with the broker's
   messages counted (every job published once).

Only with --only: mariadb (worker drain ratio and items/s on MariaDB beside PostgreSQL's
in the same run, then the dashboard's list and tab counts on --rows jobs there, and a
search with and without a FULLTEXT index), hooks (what tracking adds to a task in
Celery's own tracer, no broker, in CPU and wall clock, and the writer thread's part of
it; as apply() runs a task, which makes its id, and with the id given, as a worker's
child has it), hook-parts (the same taken apart: Celery's dispatch to receivers that do
nothing, the handlers alone, the fold, the write), writer-process (the same task with
the writer's rows handed to another process instead, two ways), scale (every view on
--rows jobs), scale-writes (worker throughput on that table against an empty one),
write-rate (one PostgreSQL, many writer processes), partitions (partitioned tables
against plain ones), filter-indexes (the write rate with the filter indexes' INCLUDE
columns against without them), trace-key (the database's CPU for a short task's writes
with job_events' foreign key against the key dropped), jobs-indexes (the same CPU with
all of jobs' indexes, without the search indexes, without the filter indexes, and with
the primary key alone), cli (the command's start-up against python -c pass and celery
--help) and failures (the failure groups and the Failed tab's unhandled view on --rows
jobs).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import redis
from celery import Celery
from sqlalchemy import create_engine, make_url, text

import jobtrack
from jobtrack.models import Batch, JobFilter, JobStatus, JobUpdate
from jobtrack.schema import FULLTEXT_INDEX
from jobtrack.store import Store
from jobtrack.web.pages import COUNT_CAP

ROOT = Path(__file__).resolve().parents[1]
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://root@127.0.0.1:5432/postgres")
#: BENCH_DB: another database name (two benchmarks on one server keep apart).
DB_NAME = os.environ.get("BENCH_DB", "jobtrack_bench")
DB_URL = PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME
#: Worker CPU (all its processes) per task, while it runs tasks; PostgreSQL's meanwhile.
WORKER_CPU_US: dict[str, list[float]] = {}
SERVER_CPU_US: dict[str, list[float]] = {}
MODES = ["bare", "celery-db-backend", "jobtrack-sync", "jobtrack"]
#: MariaDB (--only mariadb): an account that may create databases.
MYSQL_ADMIN = os.environ.get("BENCH_MYSQL_ADMIN", "mariadb://root@127.0.0.1:3306/test")
MYSQL_URL = make_url(MYSQL_ADMIN).set(database=DB_NAME).render_as_string(hide_password=False)


def say(*parts: Any, end: str = "\n") -> None:
    print(*parts, flush=True, end=end)  # noqa: T201 - a benchmark reports on stdout


def fresh_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    store = Store(DB_URL)
    store.ensure_schema()
    store.close()


def empty_tables() -> None:
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_items, job_events, job_logs")
        conn.execute("DROP TABLE IF EXISTS celery_taskmeta, celery_tasksetmeta")
        conn.execute("VACUUM ANALYZE")
        # Start every run from a quiet server: the previous run's dirty pages are
        # written now, not during the next measured window.
        conn.execute("CHECKPOINT")


def publisher(mode: str, db_url: str = DB_URL) -> tuple[Celery, jobtrack.Tracker | None]:
    """The app that publishes the benchmark's tasks. It has the task, as code calling
    ``task.delay()`` does, so jobtrack records each job's input when publishing and the
    worker skips that (a publisher without the task leaves it to the worker)."""
    app = Celery("bench-publisher", broker=BROKER)
    app.conf.broker_connection_retry_on_startup = True

    @app.task(name="bench.noop", shared=False)
    def noop(key: str, total: int) -> int:  # runs in the worker (bench_app)
        raise NotImplementedError

    tracker = None
    if mode.startswith("jobtrack"):
        tracker = jobtrack.install(app, db_url)
    return app, tracker


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user and system, every thread) used so far by a worker process and
    its pool processes (its children), and by every PostgreSQL server process (on this
    machine they share the same cores), read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    worker = server = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, _, rest = f.read().rpartition(")")
        except OSError:  # gone meanwhile
            continue
        # After the name: state, ppid, ...; utime and stime are the 12th and 13th.
        fields = rest.split()
        ticks = int(fields[11]) + int(fields[12])
        if int(entry) == pid or int(fields[1]) == pid:
            worker += ticks
        elif name.endswith("(postgres"):
            server += ticks
    return worker / tick, server / tick


def throughput(mode: str, total: int, db_url: str | None = None) -> float:
    """Fill a queue, start a worker, time first to last task. Returns tasks/s. With
    ``db_url`` (a database that holds jobs already, kept as it is), the new jobs are
    counted, then deleted again."""
    if db_url is None:
        empty_tables()
    db = db_url or DB_URL
    r = redis.Redis.from_url(BROKER)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    key = f"{queue}:count"
    app, tracker = publisher(mode, db)
    with app.producer_or_acquire() as producer:
        for _ in range(total):
            app.send_task("bench.noop", args=[key, total], queue=queue, producer=producer)
    if tracker is not None:
        tracker.flush()
        jobtrack.uninstall()
        tracker.store.close()
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_DB": db,
        "BENCH_BROKER": BROKER,
        "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{ROOT}",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench_app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            queue,
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{queue}@bench",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    # The worker's CPU while it runs tasks (its start and its shutdown left out): from
    # the first count seen to the last task, over the tasks run in between.
    window: tuple[int, tuple[float, float]] | None = None
    try:
        while r.get(key + ":last") is None:
            if worker.poll() is not None or time.monotonic() > deadline:
                errors = worker.stderr.read().decode()[-2000:] if worker.stderr else ""
                raise RuntimeError(f"{mode} worker stopped early: {errors}")
            if window is None and (done := int(r.get(key) or 0)) > 0:
                window = (done, _cpu_s(worker.pid))
            time.sleep(0.05)
        cpu = _cpu_s(worker.pid)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    if window is not None and total > window[0]:
        ran = total - window[0]
        WORKER_CPU_US.setdefault(mode, []).append((cpu[0] - window[1][0]) / ran * 1e6)
        SERVER_CPU_US.setdefault(mode, []).append((cpu[1] - window[1][1]) / ran * 1e6)
    first, last = float(r.get(key + ":first") or 0), float(r.get(key + ":last") or 0)
    r.delete(key, key + ":first", key + ":last")
    if mode.startswith("jobtrack") and db.startswith(("mysql", "mariadb")):
        _check_mysql_jobs(db, mode, total)
    elif mode.startswith("jobtrack"):  # every job row must be final after the warm shutdown
        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM jobs "
                "WHERE task_name = 'bench.noop'"
            ).fetchone()
            if db_url is not None:
                conn.execute(
                    "DELETE FROM job_events WHERE job_id IN "
                    "(SELECT id FROM jobs WHERE task_name = 'bench.noop')"
                )
                conn.execute("DELETE FROM jobs WHERE task_name = 'bench.noop'")
        assert row is not None and row[0] == row[1] == total, f"{mode}: {row} of {total}"
    return (total - 1) / (last - first)


def _check_mysql_jobs(db: str, mode: str, total: int) -> None:
    """Every job row is final after the warm shutdown (MariaDB); then they go."""
    engine = create_engine(Store(db)._url or db)
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT sum(status = 'completed'), count(*) FROM jobs "
                "WHERE task_name = 'bench.noop'"
            )
        ).one()
        conn.execute(text("DELETE FROM jobs WHERE task_name = 'bench.noop'"))  # cascades
    engine.dispose()
    assert int(row[0] or 0) == int(row[1]) == total, f"{mode}: {tuple(row)} of {total}"


def _mysql_admin() -> Any:
    url = make_url(MYSQL_ADMIN)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
    )


def fresh_mysql_database() -> None:
    admin = _mysql_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{DB_NAME}`")
        cursor.execute(f"CREATE DATABASE `{DB_NAME}` CHARACTER SET utf8mb4")
    admin.close()
    store = Store(MYSQL_URL)
    store.ensure_schema()
    store.close()


def time_views(views: dict[str, Any], width: int) -> None:
    """Run each view 10 times; print its median and its slowest, in ms."""
    for name, view in views.items():
        times = []
        for _ in range(10):
            t = time.perf_counter()
            view()
            times.append((time.perf_counter() - t) * 1000)
        say(f"  {name:<{width}} {statistics.median(times):9.1f}   (max {max(times):.1f})")


def list_views(store: Store, one: JobFilter) -> dict[str, Any]:
    """The dashboard's list pages the scale benchmarks time on every backend: the newest
    page, the failed tab, a job type (``one``) alone and with the failed tab, an owner."""
    return {
        "list, newest page": lambda: store.list_jobs(JobFilter(), limit=51),
        "list, failed tab": lambda: store.list_jobs(
            JobFilter(status=(JobStatus.FAILED, JobStatus.LOST)), limit=51
        ),
        "list, job type": lambda: store.list_jobs(one, limit=51),
        "list, job type, failed tab": lambda: store.list_jobs(
            one.where(status=(JobStatus.FAILED, JobStatus.LOST)), limit=51
        ),
        "list, owner": lambda: store.list_jobs(JobFilter(owner_id="owner-42"), limit=51),
    }


def mariadb_figures(tasks: int, rounds: int, items: int, rows: int) -> None:
    """MariaDB beside PostgreSQL in one run: the worker drain ratio (tasks/s of a
    prefork worker tracked into each, against bare Celery, interleaved rounds), items/s,
    then the dashboard's list page and tab counts on ``rows`` jobs, and a search with
    and without the FULLTEXT index over name and error text (with its write cost)."""
    fresh_mysql_database()
    setups = [("bare", None), ("jobtrack", None), ("jobtrack", MYSQL_URL)]
    names = ["bare", "jobtrack PostgreSQL", "jobtrack MariaDB"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    for n in range(rounds):
        for k in [*range(n % 3, 3), *range(n % 3)]:  # rotate the order
            mode, db = setups[k]
            rates[names[k]].append(throughput(mode, tasks, db))
            say(f"  round {n + 1} {names[k]:<20} {rates[names[k]][-1]:8,.0f} tasks/s")
    say(f"\ndrain, {tasks} no-op tasks x {rounds} rounds, prefork c=2, Redis broker:")
    for name in names:
        ratio = statistics.median(r / b for r, b in zip(rates[name], rates["bare"], strict=True))
        say(
            f"  {name:<20} {statistics.median(rates[name]):9,.0f} tasks/s, "
            f"median ratio to bare {ratio:.2f}"
        )
    for url, label in ((DB_URL, "PostgreSQL"), (MYSQL_URL, "MariaDB")):
        say(f"\n{label}:", end="")
        items_rate(items, url)
    mariadb_scale(rows)


def mariadb_scale(rows: int) -> None:
    """The dashboard's reads on ``rows`` MariaDB jobs (the scale fixture's shape, made
    with MariaDB's sequence engine), medians of 10 (ms)."""
    store = Store(MYSQL_URL)
    started = time.perf_counter()
    cases = " ".join(f"WHEN r < {p} THEN '{s}'" for p, s in SCALE_STATUSES)
    chunk = 250_000
    with store.engine.begin() as conn:
        for low in range(1, rows + 1, chunk):
            high = min(low + chunk - 1, rows)
            conn.execute(
                text(
                    f"""
                INSERT INTO jobs (id, task_name, job_type, name, owner_id, status, state_seq,
                    queue, root_id, created_at, started_at, completed_at, updated_at,
                    heartbeat_at, duration_ms, total_items, processed_items, failed_items,
                    skipped_items, retries, max_retries, error_type, error_message, ref)
                SELECT id, concat('app.tasks.task_', g % 40), concat('type_', g % 10),
                       concat('Import batch ', g, ' of customer ', g % 5003),
                       concat('owner-', g % 200), status, 0, concat('queue-', g % 5), id, t,
                       t + INTERVAL 2 SECOND,
                       CASE WHEN status IN ('completed', 'failed', 'cancelled', 'lost')
                            THEN t + INTERVAL 2 SECOND + INTERVAL d * 1000 MICROSECOND END,
                       t + INTERVAL 2 SECOND + INTERVAL d * 1000 MICROSECOND,
                       t + INTERVAL 2 SECOND, d, 100, 100, g % 7, 0,
                       CASE WHEN status = 'failed' THEN 3 ELSE g % 17 = 0 END, 3,
                       CASE WHEN status IN ('failed', 'lost') THEN 'ConnectionError' END,
                       CASE WHEN status IN ('failed', 'lost') THEN
                            concat('upstream db-', g % 97, ' timed out after 30s (attempt ',
                                   g % 4, ')') END,
                       concat('order:', g % 1000003)
                FROM (
                    SELECT g, id, r, t, d, CASE {cases} END AS status FROM (
                        SELECT seq AS g, md5(seq) AS id, rand() AS r,
                               utc_timestamp(6) - INTERVAL (seq * 7776000 DIV {rows})
                                   SECOND AS t,
                               50 + (seq * 7919) % 20000 AS d
                        FROM seq_{low}_to_{high}
                    ) AS raw
                ) AS made
                """
                )
            )
            say(f"  loaded {high:,} of {rows:,} jobs ({time.perf_counter() - started:.0f}s)")
        conn.execute(text("ANALYZE TABLE jobs"))
    say(f"scale fixture (MariaDB): {rows:,} jobs in {time.perf_counter() - started:.0f}s")
    counts = [s.value for s in JobStatus]
    one = JobFilter(job_type="type_3")
    views: dict[str, Any] = {
        **list_views(store, one),
        "tab counts, no filter": lambda: store.count_by_status(counts, cap=COUNT_CAP),
        "tab counts, job type": lambda: store.count_by_status(counts, cap=COUNT_CAP, where=one),
        "tab counts, owner": lambda: store.count_by_status(
            counts, cap=COUNT_CAP, where=JobFilter(owner_id="owner-42")
        ),
        "combined: type + owner, tab counts": lambda: store.count_by_status(
            counts, cap=COUNT_CAP, where=JobFilter(job_type="type_2", owner_id="owner-42")
        ),
        "changes since 60 s ago (live stream poll)": lambda: store.recent_changes(
            since=datetime.now(UTC) - timedelta(seconds=60)
        ),
        "search text (one job's name), list": lambda: store.list_jobs(
            JobFilter(search="batch 424242 of"), limit=51
        ),
        "search text (one job's name), tab counts": lambda: store.count_by_status(
            counts, cap=COUNT_CAP, where=JobFilter(search="batch 424242 of")
        ),
        "search text (about 9,000 match), list": lambda: store.list_jobs(
            JobFilter(search="m db-42 timed o"), limit=51
        ),
    }

    def measure(title: str, chosen: dict[str, Any]) -> None:
        say(f"\n{title} (medians of 10, ms)")
        time_views(chosen, 46)

    measure(f"MariaDB: the dashboard's reads on {store.count_jobs():,} jobs", views)
    # Without the FULLTEXT index (revision 0017) a search reads the table: once each,
    # the statement the store would run then (the store itself needs the index there).
    scan = text(
        "SELECT id FROM jobs WHERE lower(concat(coalesce(name, ''), char(31 USING utf8mb4), "
        "coalesce(error_message, ''))) LIKE lower(:p) ORDER BY created_at DESC LIMIT 51"
    )
    with store.engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {FULLTEXT_INDEX} ON jobs"))
    say("\nwithout the FULLTEXT index: the table read (one run each, ms)")
    with store.engine.connect() as conn:
        for label, pattern in (
            ("one job's name, list", "%batch 424242 of%"),
            ("about 9,000 match, list", "%m db-42 timed o%"),
        ):
            t = time.perf_counter()
            conn.execute(scan, {"p": pattern}).all()
            say(f"  search text ({label}){'':<20} {(time.perf_counter() - t) * 1000:9.1f}")
    # Its write cost: the drain on this table without the index, then with it again.
    drains = {}
    for with_index in (False, True):
        if with_index:
            with store.engine.begin() as conn:
                t = time.perf_counter()
                conn.execute(
                    text(f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} ON jobs (name, error_message)")
                )
                say(f"  FULLTEXT index rebuilt in {time.perf_counter() - t:.1f}s")
        drains[with_index] = statistics.median(
            throughput("jobtrack", 3000, MYSQL_URL) for _ in range(2)
        )
    store.close()
    say(
        f"  worker drain on the {rows:,}-job table: {drains[True]:,.0f} tasks/s with the "
        f"FULLTEXT index, {drains[False]:,.0f} without"
    )


def publish_rate(total: int, rounds: int) -> None:
    """Wall-clock publishing rate (median of interleaved rounds), and the publisher
    process's CPU per task: all its threads, the writer's final flush included. The CPU
    figure does not move with what else the machine runs (here, on two cores, Redis and
    PostgreSQL share them with the publisher)."""
    rates: dict[str, list[float]] = {"bare": [], "jobtrack": []}
    cpu_us: dict[str, list[float]] = {"bare": [], "jobtrack": []}
    for _ in range(rounds):
        for mode in rates:
            empty_tables()
            app, tracker = publisher(mode)
            queue = f"bench-pub-{uuid.uuid4().hex[:8]}"
            with app.producer_or_acquire() as producer:
                for _ in range(50):  # connections and caches warm before the clock
                    app.send_task("bench.noop", args=["x", 0], queue=queue, producer=producer)
                if tracker is not None:
                    tracker.flush()
                cpu, started = time.process_time(), time.perf_counter()
                for _ in range(total):
                    app.send_task("bench.noop", args=["x", 0], queue=queue, producer=producer)
                rates[mode].append(total / (time.perf_counter() - started))
            if tracker is not None:
                tracker.flush()
            cpu_us[mode].append((time.process_time() - cpu) / total * 1e6)
            if tracker is not None:
                jobtrack.uninstall()
                tracker.store.close()
            redis.Redis.from_url(BROKER).delete(queue)
    bare, tracked = statistics.median(rates["bare"]), statistics.median(rates["jobtrack"])
    bare_cpu, tracked_cpu = (
        statistics.median(cpu_us["bare"]),
        statistics.median(cpu_us["jobtrack"]),
    )
    say(
        f"\npublishing {total} tasks ({rounds} rounds): bare {bare:,.0f}/s, with jobtrack "
        f"{tracked:,.0f}/s, ratio {tracked / bare:.2f}; publisher CPU per task: bare "
        f"{bare_cpu:.0f} us, with jobtrack {tracked_cpu:.0f} us (writer included), "
        f"ratio {bare_cpu / tracked_cpu:.2f}"
    )


def items_rate(count: int, db_url: str = DB_URL) -> None:
    if db_url == DB_URL:
        empty_tables()
    app = Celery("bench-items", broker="memory://")
    app.conf.task_always_eager = True
    tracker = jobtrack.install(app, db_url)

    @app.task(name="bench.items", shared=False)
    def many_items(n: int) -> None:
        job = jobtrack.current_job()
        for i in range(n):
            job.item(f"item-{i}", status="error" if i % 50 == 0 else "success")

    started = time.perf_counter()
    result = many_items.delay(count)
    while not tracker.flush():
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    job = tracker.store.get_job(result.id)
    assert job.processed_items == count, job.processed_items
    jobtrack.uninstall()
    tracker.store.close()
    say(
        f"\nitems: {count:,} recorded and committed in {elapsed:.2f}s = "
        f"{count / elapsed:,.0f} items/s (failed_items={job.failed_items})"
    )


def writer_cpu() -> float:
    """CPU seconds the writer thread of this process has used (0 without one)."""
    for thread in threading.enumerate():
        if thread.name == "jobtrack-writer" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


def hook_cost(tasks: int, rounds: int) -> None:
    """What tracking adds to one task in the worker process, without a broker: a no-op
    task run by Celery's own tracer (``apply()``), signals and all, with and without
    jobtrack installed, alternated; CPU per task of the whole process, and of it the
    writer thread's (its flushes to PostgreSQL).

    Twice: as ``apply()`` runs a task (it makes the task's id, a ``uuid4()``, whose
    ``os.urandom`` lets go of the interpreter for a moment every task), and with the id
    given, as a worker's pool child has it from the message."""
    import gc

    empty_tables()
    app = Celery("bench-hooks", broker="memory://")

    @app.task(name="bench.hooks-noop", shared=False)
    def noop(i: int) -> int:
        return i

    def run(tracked: bool, ids: list[str] | None) -> tuple[float, float, float]:
        if tracked:
            jobtrack.install(app, DB_URL)
        for i in range(200):  # warm: imports, the pool, the writer thread
            noop.apply((i,))
        if tracked:
            jobtrack.flush()
        # What the set-up left for the collector (an install builds an engine, reads
        # the migrations) is collected before the clock, in both setups: a collection
        # inside the window is then one the tasks themselves caused.
        gc.collect()
        started, writer, wall = time.process_time(), writer_cpu(), time.perf_counter()
        if ids is None:
            for i in range(tasks):
                noop.apply((i,))
        else:
            for i in range(tasks):
                noop.apply((i,), task_id=ids[i])
        if tracked:
            jobtrack.flush()
        per_task = (time.process_time() - started) / tasks * 1e6
        wall_per_task = (time.perf_counter() - wall) / tasks * 1e6
        in_writer = (writer_cpu() - writer) / tasks * 1e6
        if tracked:
            jobtrack.uninstall()
        return per_task, in_writer, wall_per_task

    for given in (False, True):
        bare, tracked, writer, walls = [], [], [], {"bare": [], "tracked": []}
        for n in range(rounds):
            for kind in ("bare", "tracked") if n % 2 == 0 else ("tracked", "bare"):
                ids = [str(uuid.uuid4()) for _ in range(tasks)] if given else None
                cpu, in_writer, wall = run(kind == "tracked", ids)
                walls[kind].append(wall)
                if kind == "bare":
                    bare.append(cpu)
                else:
                    tracked.append(cpu)
                    writer.append(in_writer)
        extra = [t - b for t, b in zip(tracked, bare, strict=True)]
        wall_extra = [t - b for t, b in zip(walls["tracked"], walls["bare"], strict=True)]
        how = "the id given, as in a worker's child" if given else "apply() making each id"
        say(
            f"\nhooks ({how}): a no-op task through Celery's tracer, {tasks:,} x {rounds},"
            f" CPU per task: bare {statistics.median(bare):.0f} us,"
            f" tracked {statistics.median(tracked):.0f} us"
            f" (the writer thread {statistics.median(writer):.0f} us of it); tracking adds"
            f" {statistics.median(extra):.0f} us"
            f" (per round: {', '.join(f'{e:.0f}' for e in extra)});"
            f" wall clock per task {statistics.median(walls['bare']):.0f} us bare,"
            f" {statistics.median(walls['tracked']):.0f} us tracked,"
            f" +{statistics.median(wall_extra):.0f} us"
        )


def hook_parts(tasks: int, rounds: int) -> None:
    """The hooks bench's tracked cost taken apart (the id given, as in a worker's
    child): bare; bare with three receivers that do nothing on the three signals
    jobtrack's handlers take (what Celery's dispatch costs); the handlers alone (the
    writer's lock held through the loop, so nothing is folded or written; the queue
    dropped after); the handlers and the fold of everything they queued; and tracked as
    installed, written and committed. CPU per task, the setups alternated, medians."""
    import gc

    from celery import signals

    dispatched = (signals.task_prerun, signals.task_success, signals.task_postrun)

    def nothing(sender: Any = None, **_: Any) -> None:
        return None

    empty_tables()
    app = Celery("bench-hook-parts", broker="memory://")

    @app.task(name="bench.parts-noop", shared=False)
    def noop(i: int) -> int:
        return i

    def run(setup: str) -> float:
        tracker = jobtrack.install(app, DB_URL) if setup not in ("bare", "dispatch") else None
        if setup == "dispatch":
            for signal in dispatched:
                signal.connect(nothing, weak=False, dispatch_uid="bench-nothing")
        for i in range(200):
            noop.apply((i,))
        if tracker is not None:
            jobtrack.flush()
        gc.collect()
        ids = [str(uuid.uuid4()) for _ in range(tasks)]
        writer = tracker.writer if tracker is not None and setup != "tracked" else None
        try:
            if writer is not None:  # nobody folds or writes until the loop ends
                writer._flush_lock.acquire()
                writer._steps, writer._folding = False, True
            started = time.process_time()
            for i in range(tasks):
                noop.apply((i,), task_id=ids[i])
            if writer is not None:
                writer._folding = False
                if setup == "fold":
                    writer._fold()
            elif tracker is not None:
                jobtrack.flush()
            return (time.process_time() - started) / tasks * 1e6
        finally:
            if writer is not None:  # what was held is dropped, unwritten
                writer._folding = False
                for held in (writer._queue, writer._rows, writer._events, writer._open):
                    held.clear()
                writer._running.clear()
                writer._flush_lock.release()
            if tracker is not None:
                jobtrack.flush()
                jobtrack.uninstall()
            for signal in dispatched:
                signal.disconnect(dispatch_uid="bench-nothing")

    setups = ["bare", "dispatch", "handlers", "fold", "tracked"]
    used: dict[str, list[float]] = {setup: [] for setup in setups}
    for n in range(rounds):
        for setup in setups if n % 2 == 0 else setups[::-1]:
            used[setup].append(run(setup))
    median = {setup: statistics.median(cpu) for setup, cpu in used.items()}
    say(
        f"\nhooks taken apart (the id given), {tasks:,} x {rounds}, CPU per task: bare "
        f"{median['bare']:.1f} us; three receivers doing nothing {median['dispatch']:.1f} "
        f"(+{median['dispatch'] - median['bare']:.1f}); the handlers alone "
        f"{median['handlers']:.1f} "
        f"(+{median['handlers'] - median['bare']:.1f}); with the fold {median['fold']:.1f} "
        f"(+{median['fold'] - median['handlers']:.1f}); written and committed "
        f"{median['tracked']:.1f} (+{median['tracked'] - median['fold']:.1f})"
    )


#: The stand-in for a per-host writer process (--only writer-process): reads the frames
#: a worker sends (a 4-byte length, then an orjson document; length 0 asks for a reply
#: once all before it is read) and decodes them, as such a process must before it folds.
_RECEIVER = """
import resource, socket, struct, sys, orjson
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1]); server.listen(1); print("ready", flush=True)
conn, _ = server.accept(); stream = conn.makefile("rb", buffering=1 << 20)
start = resource.getrusage(resource.RUSAGE_SELF); facts = 0
while len(head := stream.read(4)) == 4:
    (size,) = struct.unpack("!I", head)
    if size == 0:
        conn.sendall(b"k")
    else:
        facts += len(orjson.loads(stream.read(size)))
end = resource.getrusage(resource.RUSAGE_SELF)
cpu = end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime
print(f"{cpu:.6f} {facts}", flush=True)
"""


def writer_process_cost(tasks: int, rounds: int) -> None:
    """The in-process writer thread against handing the rows to another process (a
    per-host writer), in the hooks bench's setting: a no-op task through Celery's tracer.
    Two hand-offs, each a stand-in wired into the real writer for the measurement only:
    the queue's facts as they come (the other process would fold, clean and write), or
    the batch as folded here (it would only write). Each sends orjson frames over a Unix
    socket to a process that decodes them. Prints the task process's CPU per task over
    bare, the writer thread's part, the context switches of the task's thread, and the
    receiving process's CPU (decoding only: folding and writing would come on top)."""
    import gc
    import socket
    import struct
    import tempfile

    import orjson

    empty_tables()
    app = Celery("bench-writer-process", broker="memory://")

    @app.task(name="bench.writer-process-noop", shared=False)
    def noop(i: int) -> int:
        return i

    def switches(name: str = "MainThread") -> int:
        """Context switches (voluntary and not) of the thread named ``name`` so far."""
        tid = next((t.native_id for t in threading.enumerate() if t.name == name), None)
        if tid is None:
            return 0
        with open(f"/proc/self/task/{tid}/status") as status:
            return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)

    def send(sock: socket.socket, value: Any) -> None:
        data = orjson.dumps(value, default=str)
        sock.sendall(struct.pack("!I", len(data)) + data)

    warm = 200

    def run(mode: str) -> tuple[float, float, float, float, float]:
        receiver = sock = None
        folder = tempfile.TemporaryDirectory(prefix="jt-bench-")
        if mode != "bare":
            tracker = jobtrack.install(app, DB_URL)
            writer: Any = tracker.writer
        if mode.startswith("process"):
            path = os.path.join(folder.name, "writer.sock")
            receiver = subprocess.Popen(
                [sys.executable, "-c", _RECEIVER, path], stdout=subprocess.PIPE, text=True
            )
            assert receiver.stdout is not None and receiver.stdout.readline() == "ready\n"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            to = sock
            if mode == "process-facts":
                queue = writer._queue

                def hand_over(limit: int | None = None) -> None:  # stands in for the fold
                    count = len(queue) if limit is None else min(len(queue), limit)
                    if count:
                        send(to, [queue.popleft() for _ in range(count)])

                writer._fold = hand_over
            else:
                writer.store.write_batch = lambda batch: send(to, [batch.updates, batch.events])

        def settle() -> None:
            if mode != "bare":
                jobtrack.flush()
            if sock is not None:
                sock.sendall(struct.pack("!I", 0))
                assert sock.recv(1) == b"k"

        for i in range(warm):
            noop.apply((i,))
        settle()
        gc.collect()
        started, in_writer = time.process_time(), writer_cpu()
        switched, woken = switches(), switches("jobtrack-writer")
        for i in range(tasks):
            noop.apply((i,))
        settle()
        per_task = (time.process_time() - started) / tasks * 1e6
        in_writer = (writer_cpu() - in_writer) / tasks * 1e6
        switched = (switches() - switched) / tasks
        woken = (switches("jobtrack-writer") - woken) / tasks
        received = 0.0
        if mode != "bare":
            jobtrack.uninstall()
        if sock is not None and receiver is not None:
            sock.close()
            # The receiver decoded the warm-up's facts too: per task of all it was sent.
            received = float(receiver.communicate()[0].split()[0]) / (warm + tasks) * 1e6
        folder.cleanup()
        return per_task, in_writer, switched, received, woken

    modes = ["bare", "thread", "process-facts", "process-batch"]
    figures: dict[str, list[tuple[float, float, float, float, float]]] = {m: [] for m in modes}
    for n in range(rounds):
        for mode in modes[n % 4 :] + modes[: n % 4]:
            figures[mode].append(run(mode))
    bare = [f[0] for f in figures["bare"]]
    say(f"\nwriter-process: a no-op task through Celery's tracer, {tasks:,} x {rounds}:")
    say(f"  bare: {statistics.median(bare):.0f} us of CPU per task")
    for mode in modes[1:]:
        rows = figures[mode]
        extra = [f[0] - b for f, b in zip(rows, bare, strict=True)]
        say(
            f"  {mode}: adds {statistics.median(extra):.0f} us (per round: "
            f"{', '.join(f'{e:.0f}' for e in extra)}); the writer thread "
            f"{statistics.median(f[1] for f in rows):.0f} us; context switches a task: "
            f"the task's thread {statistics.median(f[2] for f in rows):.2f}, the writer's "
            f"{statistics.median(f[4] for f in rows):.2f}; the "
            f"receiving process {statistics.median(f[3] for f in rows):.1f} us (decoding)"
        )


def progress_cost(calls: int, rounds: int) -> None:
    empty_tables()
    app = Celery("bench-progress", broker="memory://")
    app.conf.task_always_eager = True
    tracker = jobtrack.install(app, DB_URL)

    def work() -> float:
        return sum(i * 0.5 for i in range(400))  # a little real work per step

    @app.task(name="bench.progress")
    def loop(report: bool) -> float:
        job = jobtrack.current_job()
        total = 0.0
        for i in range(calls):
            total += work()
            if report:
                job.progress(current=i + 1, total=calls, stage="working")
        return total

    @app.task(name="bench.tight")
    def tight(n: int) -> float:
        """progress() alone in a tight loop, against the same loop without it."""
        job = jobtrack.current_job()
        started = time.perf_counter()
        for _ in range(n):
            pass
        empty = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(n):
            job.progress(current=i + 1, total=n, stage="working")
        return (time.perf_counter() - started - empty) / n

    @app.task(name="bench.check")
    def check(n: int) -> float:
        """job.check() (no stop requested) in a tight loop, per call."""
        job = jobtrack.current_job()
        started = time.perf_counter()
        for _ in range(n):
            pass
        empty = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n):
            job.check()
        return (time.perf_counter() - started - empty) / n

    @app.task(name="bench.checkpoints")
    def checkpoints(n: int) -> float:
        """job.checkpoint() committed each time (PostgreSQL), per call."""
        job = jobtrack.current_job()
        started = time.perf_counter()
        for i in range(n):
            job.checkpoint({"row": i, "cursor": f"page-{i}"})
        return (time.perf_counter() - started) / n

    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for report in (False, True):
            started = time.perf_counter()
            loop.delay(report)
            timings[report].append(time.perf_counter() - started)
    per_call = statistics.median(tight.delay(100_000).get() for _ in range(rounds))
    per_check = statistics.median(check.delay(100_000).get() for _ in range(rounds))
    per_checkpoint = statistics.median(checkpoints.delay(200).get() for _ in range(rounds))
    tracker.flush()
    jobtrack.uninstall()
    tracker.store.close()
    base, with_progress = statistics.median(timings[False]), statistics.median(timings[True])
    say(
        f"\nprogress: {calls:,} steps {base * 1000:.0f} ms without progress(), "
        f"{with_progress * 1000:.0f} ms with; extra {100 * (with_progress / base - 1):.1f}%; "
        f"in a tight loop {per_call * 1e6:.2f} us per progress() call, "
        f"{per_check * 1e6:.3f} us per check() call; "
        f"{per_checkpoint * 1000:.2f} ms per checkpoint() (committed)"
    )


def list_query(rows: int) -> None:
    empty_tables()
    types = ["import", "export", "report", "sync", "email"]
    statuses = ["completed"] * 17 + ["failed", "running", "cancelled"]
    started = time.perf_counter()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            """
            INSERT INTO jobs (id, task_name, job_type, name, status, state_seq, owner_id,
                              created_at, updated_at, processed_items, failed_items,
                              skipped_items, retries, error_message, ref)
            SELECT 'gen-' || g, 'app.task_' || (g %% 40), (%(types)s::text[])[1 + (g / 3) %% 5],
                   'Job ' || g, (%(statuses)s::text[])[1 + floor(random() * 20)::int], 0,
                   'user-' || (g %% 1000), now() - make_interval(secs => g), now(), 0, 0, 0,
                   0, 'message ' || g, 'repo:' || (g %% 5000) || '@' || md5(g::text)
            FROM generate_series(1::bigint, %(rows)s) AS g
            """,
            {"types": types, "statuses": statuses, "rows": rows},
        )
        conn.execute("VACUUM ANALYZE jobs")
    say(f"\nlist query: generated {rows:,} rows in {time.perf_counter() - started:.1f}s")
    store = Store(DB_URL)
    timings = []
    for _ in range(50):
        t = time.perf_counter()
        found = store.list_jobs(JobFilter.of(status="failed", job_type="import"), limit=50)
        timings.append(time.perf_counter() - t)
    assert len(found) == 50 and all(j.status.value == "failed" for j in found)
    # The newest job for a ref (one of 1,000,000), and the newest 50 of a ref prefix (a
    # repository: 200 jobs of its 5,000 commits' refs share it).
    newest = store.list_jobs(JobFilter(ref="repo:77@*"), limit=1)[0]
    by_ref: dict[str, list[float]] = {"exact": [], "prefix": []}
    for _ in range(50):
        for kind, ref, limit in (("exact", newest.ref, 1), ("prefix", "repo:77@*", 50)):
            t = time.perf_counter()
            hits = store.list_jobs(JobFilter(ref=ref), limit=limit)
            by_ref[kind].append(time.perf_counter() - t)
            assert hits and all((j.ref or "").startswith("repo:77@") for j in hits)
    # The dashboard's tab counts (every page load and live refresh): exact, and capped
    # as the dashboard asks for them.
    counts: dict[str, list[float]] = {"exact": [], "capped": []}
    every = [s.value for s in jobtrack.JobStatus]
    for _ in range(10):
        for kind, cap in (("exact", None), ("capped", COUNT_CAP)):
            t = time.perf_counter()
            by_status = store.count_by_status(every, cap=cap)
            counts[kind].append(time.perf_counter() - t)
            assert (
                sum(by_status.values()) == rows
                if cap is None
                else all(0 < n <= cap + 1 for n in by_status.values())
            )
    # What one worker's upkeep round costs on this table (about 50,000 running rows, none
    # silent): taking the lease, looking for lost jobs, reading open cancel and pause requests.
    upkeep: dict[str, list[float]] = {"lease": [], "reap": [], "requests": []}
    silent_before = datetime.now(UTC) - timedelta(seconds=120)
    for n in range(20):
        for kind, call in (
            ("lease", lambda n=n: store.leases.take("bench", f"w{n}", 0.0)),
            ("reap", lambda: store.upkeep.mark_lost(heartbeat_before=silent_before)),
            ("requests", store.requests.open),
        ):
            t = time.perf_counter()
            call()
            upkeep[kind].append(time.perf_counter() - t)
    with store.engine.connect() as conn:
        plan = (
            conn.execute(
                text(
                    "EXPLAIN ANALYZE SELECT * FROM jobs WHERE status = 'failed' AND "
                    "job_type = 'import' ORDER BY created_at DESC, id DESC LIMIT 50"
                )
            )
            .scalars()
            .all()
        )
    store.close()
    say(
        f"newest 50 failed jobs of type 'import': median {statistics.median(timings) * 1000:.2f}"
        f" ms, max {max(timings) * 1000:.2f} ms over 50 runs (through Store.list_jobs)"
    )
    one, prefix = (statistics.median(by_ref[k]) * 1000 for k in ("exact", "prefix"))
    say(
        f"newest job for a ref: median {one:.2f} ms; newest 50 for a ref prefix "
        f"(repo:77@*): {prefix:.2f} ms (medians of 50, through Store.list_jobs)"
    )
    exact, capped = (statistics.median(counts[k]) * 1000 for k in ("exact", "capped"))
    say(
        f"jobs per status: exact {exact:.1f} ms, capped at {COUNT_CAP:,} as the dashboard's "
        f"tabs count them {capped:.1f} ms (ratio {capped / exact:.2f}; medians of 10)"
    )
    lease, reaping, requests = (
        statistics.median(upkeep[k]) * 1000 for k in ("lease", "reap", "requests")
    )
    say(
        f"a worker's upkeep round: lease {lease:.2f} ms, looking for lost jobs "
        f"{reaping:.1f} ms, open cancel and pause requests {requests:.2f} ms (medians of 20)"
    )
    say("EXPLAIN ANALYZE:\n  " + "\n  ".join(plan))


def rls_cost(jobs_count: int, rounds: int) -> None:
    """What row-level security costs the workers: the same batched writes (a worker's
    flushes: 200 jobs each, then their completion) with it off and on, as a plain role
    that owns its own database (a superuser would bypass it), medians of ``rounds``."""
    role, name = "jobtrack_bench_app", "jobtrack_bench_rls"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS")
        admin.execute(f"CREATE DATABASE {name} OWNER {role}")
    host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0].split("@", 1)[-1]
    store = Store(f"postgresql://{role}@{host}/{name}")
    store.ensure_schema()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for n in range(rounds):
        for on in (False, True) if n % 2 == 0 else (True, False):
            store.row_security(on)
            store.delete_all()
            t = time.perf_counter()
            for start in range(0, jobs_count, 200):
                ids = [f"j{i}" for i in range(start, min(start + 200, jobs_count))]
                for status in (JobStatus.RUNNING, JobStatus.COMPLETED):
                    store.write_batch(
                        Batch([JobUpdate.transition(i, status, owner_id=f"u{i[-1]}") for i in ids])
                    )
            rates[on].append(jobs_count / (time.perf_counter() - t))
    store.close()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    say(
        f"\nrow-level security: {jobs_count:,} jobs written (running, then completed) in "
        f"batches of 200: off {off:,.0f} jobs/s, on {on:,.0f} jobs/s, ratio {on / off:.2f} "
        f"(medians of {rounds})"
    )


def prune_rate(rows: int) -> None:
    """Prune ``rows`` old jobs, each with an event and an item, in batches of 5,000."""
    empty_tables()
    started = time.perf_counter()
    _old_month(DB_URL, rows)
    say(
        f"\nprune: generated {rows:,} old jobs with an event and an item each in "
        f"{time.perf_counter() - started:.1f}s"
    )
    store = Store(DB_URL)
    started = time.perf_counter()
    removed = store.prune(
        finished_before=datetime.now(UTC) - timedelta(days=30),
        statuses=["completed"],
        batch_size=5000,
    )
    elapsed = time.perf_counter() - started
    left = store.count_jobs()
    store.close()
    assert removed == rows and left == 0, (removed, left)
    say(
        f"pruned {removed:,} jobs (and their {removed:,} events and items) in batches of "
        f"5,000 in {elapsed:.1f}s = {removed / elapsed:,.0f} jobs/s"
    )


def _failed_jobs(count: int, kind: str, queue: str) -> None:
    """``count`` failed jobs with whole input (what an outage leaves), generated in SQL."""
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, task_name, job_type, name, status, state_seq, owner_id, queue,
                              input_data, created_at, completed_at, updated_at, processed_items,
                              failed_items, skipped_items, retries, error_type, error_message)
            SELECT %(kind)s || '-' || g, 'bench.noop', %(kind)s, 'Sync ' || g, 'failed',
                   1099511627776, 'user-' || (g %% 200), %(queue)s,
                   jsonb_build_object('args', jsonb_build_array('k', g), 'kwargs', '{}'::jsonb),
                   now() - make_interval(secs => g), now(), now(), 0, 0, 0, 0,
                   'ConnectionError', 'broker unreachable'
            FROM generate_series(1::bigint, %(count)s) AS g
            """,
            {"kind": kind, "queue": queue, "count": count},
        )
        conn.execute("VACUUM ANALYZE jobs")


def _queued(client: redis.Redis, queue: str) -> list[str]:
    import json

    ids: list[str] = []
    length = int(client.llen(queue))  # type: ignore[arg-type]
    for start in range(0, length, 5000):
        chunk = client.lrange(queue, start, start + 4999)
        ids.extend(json.loads(raw)["headers"]["id"] for raw in chunk)  # type: ignore[union-attr]
    return ids


def bulk_retry(count: int) -> None:
    """Bulk retry on PostgreSQL with a Redis broker: rate, dashboard latency, and the
    broker's messages after a run killed half-way and resumed."""
    from fastapi.testclient import TestClient

    from jobtrack.settings import Settings
    from jobtrack.web import create_app

    empty_tables()
    kind, queue = "bulk", f"bench-bulk-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(BROKER)
    _failed_jobs(count, kind, queue)
    # Baseline: the same messages from a bare publishing loop (no jobtrack, no database).
    app = Celery("bench-bare", broker=BROKER)
    with app.producer_or_acquire() as producer:
        started = time.perf_counter()
        for n in range(count):
            app.send_task(
                "bench.noop",
                args=["k", n],
                task_id=str(uuid.uuid4()),
                queue=queue,
                producer=producer,
            )
        bare = count / (time.perf_counter() - started)
    client.delete(queue)
    store = Store(DB_URL)
    web = TestClient(
        create_app(store, Settings(database_url=DB_URL, web_rate_limit_per_min=1_000_000)),
        base_url="http://localhost",
        client=("127.0.0.1", 50000),
    )
    env = {**os.environ, "BENCH_MODE": "jobtrack", "BENCH_DB": DB_URL, "BENCH_BROKER": BROKER}
    command = [sys.executable, "-m", "jobtrack.cli", "-A", "scripts.bench_app:app"]

    def start(rate: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command, "jobs", "retry", "--type", kind, "--yes", "--rate", str(rate)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def newest_action(after: int) -> Any:
        while True:
            found = [a for a in store.actions.list_actions(limit=3) if a.id > after]
            if found:
                return found[0]
            time.sleep(0.05)

    # 1. The rate, and the dashboard's list page while it runs.
    runner = start(1_000_000)
    action = newest_action(0)
    page_ms: list[float] = []
    while runner.poll() is None:  # ten page loads a second: a few pages open, live
        t = time.perf_counter()
        answer = web.get("/", params={"tab": "failed", "job_type": kind})
        page_ms.append((time.perf_counter() - t) * 1000)
        assert answer.status_code == 200, answer.text[:500]
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t)))
    final = store.actions.get_action(action.id)
    took = (final.finished_at - final.created_at).total_seconds()
    queued = _queued(client, queue)
    assert final.done == count and len(queued) == count == len(set(queued)), final
    client.delete(queue)
    idle_ms = []
    for _ in range(50):
        t = time.perf_counter()
        web.get("/", params={"tab": "failed", "job_type": kind})
        idle_ms.append((time.perf_counter() - t) * 1000)
    p95 = statistics.quantiles(page_ms, n=20)[-1]
    idle_p95 = statistics.quantiles(idle_ms, n=20)[-1]
    say(
        f"\nbulk retry of {count:,} failed jobs (PostgreSQL, Redis broker): {count / took:,.0f}"
        f" jobs/s re-published ({took:.1f} s, snapshot included); a bare publishing loop "
        f"{bare:,.0f}/s, ratio {count / took / bare:.2f}"
    )
    say(
        f"  dashboard list page (failed tab, filtered) while it ran: p95 {p95:.0f} ms, "
        f"median {statistics.median(page_ms):.0f} ms over {len(page_ms)} requests; idle: p95 "
        f"{idle_p95:.0f} ms"
    )
    # 2. Killed half-way with SIGKILL, resumed: the broker's messages counted.
    runner = start(20_000)
    action = newest_action(final.id)
    while not (
        store.actions.get_action(action.id).done >= count // 2
        and store.actions.count_targets(action.id, "sending") > 0
    ):
        time.sleep(0.005)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    halfway = store.actions.get_action(action.id)
    uncertain = store.actions.count_targets(action.id, "sending")
    subprocess.run(
        [*command, "actions", "resume", str(action.id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    final = store.actions.get_action(action.id)
    queued = _queued(client, queue)
    expected = {
        target.result_id
        for job_id in (f"{kind}-{g}" for g in range(1, count + 1, max(count // 1000, 1)))
        for _, target in store.actions.actions_for_job(job_id)[:1]
    }
    ok = len(queued) == count == len(set(queued)) and expected <= set(queued)
    say(
        f"  killed with SIGKILL at {halfway.done:,}/{count:,} ({uncertain} being sent), "
        f"resumed: {final.done:,} done; broker messages {len(queued):,}, distinct "
        f"{len(set(queued)):,}: {'every job published exactly once' if ok else 'MISMATCH'}"
    )
    client.delete(queue)
    client.close()
    store.close()


def thirty_days(rows: int) -> None:
    """``rows`` generated jobs over 30 days (40 task names, 10 types, 200 owners):
    finished ones (10 % failed), and in the last hour also running, queued and lost."""
    empty_tables()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.17)")
        conn.execute(
            """
            INSERT INTO jobs (id, task_name, job_type, name, status, state_seq, owner_id,
                              created_at, started_at, completed_at, updated_at, heartbeat_at,
                              processed_items, failed_items, skipped_items, retries,
                              duration_ms)
            SELECT 'a-' || g, 'app.task_' || (g %% 40), 'type_' || (g %% 10), 'Job ' || g, s,
                   0, 'user-' || (g %% 200), t - interval '1 minute',
                   t - make_interval(secs => (g %% 1000) * 0.05),
                   CASE WHEN s IN ('completed', 'failed') THEN t END, t, t,
                   (g %% 500), (g %% 7), 0, 0,
                   CASE WHEN s IN ('completed', 'failed') THEN (g %% 1000) * 50 END
            FROM (
                SELECT g, now() - make_interval(secs => g * 2.592) AS t,
                       -- the last hour holds what runs and waits now; before it, finished
                       CASE WHEN g * 2.592 < 3600 THEN
                           (ARRAY['completed','completed','completed','completed','completed',
                                  'completed','completed','completed','completed','completed',
                                  'completed','completed','completed','completed','completed',
                                  'completed','completed','failed','running','pending'])
                           [1 + floor(random() * 20)::int]
                       ELSE (ARRAY['completed','completed','completed','completed','completed',
                                   'completed','completed','completed','completed','failed'])
                           [1 + floor(random() * 10)::int] END AS s
                FROM generate_series(1::bigint, %(rows)s) AS g
            ) AS made
            """,
            {"rows": rows},
        )
        conn.execute(
            "UPDATE jobs SET status = 'lost' WHERE id IN "
            "(SELECT id FROM jobs WHERE status = 'running' ORDER BY created_at DESC LIMIT 20)"
        )
        conn.execute("VACUUM ANALYZE jobs")


def alert_cost(rows: int) -> None:
    """What each alert rule reads, on ``rows`` generated jobs over 30 days: finished ones
    (10 % failed), and in the last hour also running, queued and lost ones."""
    from jobtrack.alerts import AlertRunner, load
    from jobtrack.models import Scope
    from jobtrack.settings import Settings

    started = time.perf_counter()
    thirty_days(rows)
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE jobtrack_alerts, jobtrack_alert_deliveries, jobtrack_alert_seen, "
            "jobtrack_alert_state, jobtrack_alert_progress"
        )
    say(f"\nalert rules: generated {rows:,} rows in {time.perf_counter() - started:.1f}s")
    store = Store(DB_URL)
    now = datetime.now(UTC)
    since = now - timedelta(hours=1)
    scope = Scope(job_types=("type_3",))
    reads = {
        "failed": lambda: store.alerts.alert_candidates("b", "failed", scope, since=since),
        "lost": lambda: store.alerts.alert_candidates("b", "lost", scope, since=since),
        "slow": lambda: store.alerts.alert_candidates(
            "b", "slow", scope, since=since, older_than=now - timedelta(minutes=30)
        ),
        "queued": lambda: store.alerts.alert_candidates(
            "b", "queued", scope, since=since, older_than=now - timedelta(minutes=10)
        ),
        "item_failure_rate": lambda: store.alerts.alert_candidates(
            "b", "item_failure_rate", scope, since=since, threshold=5.0, min_items=100
        ),
        "stuck": lambda: store.alerts.stuck_jobs("b", scope, now=now, after_s=900),
        "failure_rate": lambda: store.alerts.finished_counts(
            scope, since=now - timedelta(minutes=15)
        ),
    }
    timings = {}
    for kind, read in reads.items():
        times = []
        for _ in range(10):
            t = time.perf_counter()
            read()
            times.append((time.perf_counter() - t) * 1000)
        timings[kind] = statistics.median(times)
    rules = "\n".join(
        f'[[rules]]\nname = "{kind}"\nkind = "{kind}"\njob_types = "type_3"\n'
        f'channels = ["hook"]\ngroup_wait = "1d"\n{extra}'
        for kind, extra in (
            ("failed", ""),
            ("lost", ""),
            ("stuck", 'after = "2h"\n'),  # (nothing fires: the pass measures reads)
            ("slow", 'over = "30m"\n'),
            ("queued", 'over = "10m"\n'),
            ("failure_rate", 'threshold = 50\nwindow = "15m"\n'),
            ("item_failure_rate", "threshold = 5\nmin_items = 100\n"),
        )
    )
    config = load(
        text='[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        f'secret = "bench-secret"\n{rules}'
    )
    runner = AlertRunner(store, config, Settings(database_url=DB_URL))
    passes = []
    for _ in range(10):
        t = time.perf_counter()
        runner.run_once()
        passes.append((time.perf_counter() - t) * 1000)
    store.close()
    say(
        "  each rule's read (medians of 10, one job type of 10): "
        + ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in timings.items())
    )
    say(f"  a whole pass of the seven rules: median {statistics.median(passes):.1f} ms")


def tree_cost(size: int) -> None:
    """One workflow of ``size`` jobs (a root, a chain of 10 steps, each step starting a
    group): reading it, building the tree and answering the API, and the job page."""
    from fastapi.testclient import TestClient

    from jobtrack.settings import Settings
    from jobtrack.web import create_app
    from jobtrack.workflows import build_tree

    empty_tables()
    per_group = max((size - 11) // 10, 1)
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, task_name, status, state_seq, root_id, parent_id, group_id,
                              created_at, updated_at, processed_items, failed_items,
                              skipped_items, retries)
            SELECT 'step-' || s, 'app.step', 'completed', 0, 'root', 'step-' || (s - 1), NULL,
                   now() - interval '1 hour', now(), 0, 0, 0, 0
            FROM generate_series(1, 10) AS s
            UNION ALL
            SELECT 'root', 'app.root', 'running', 0, 'root', NULL, NULL,
                   now() - interval '2 hours', now(), 0, 0, 0, 0
            UNION ALL
            SELECT 'm-' || s || '-' || m, 'app.member',
                   CASE WHEN m %% 20 = 0 THEN 'failed' WHEN m %% 7 = 0 THEN 'running'
                        ELSE 'completed' END, 0,
                   'root', 'step-' || s, 'g-' || s, now() - interval '30 minutes', now(),
                   0, 0, 0, 0
            FROM generate_series(1, 10) AS s, generate_series(1, %(per)s) AS m
            """,
            {"per": per_group},
        )
        conn.execute("UPDATE jobs SET parent_id = 'root' WHERE id = 'step-1'")
        conn.execute("VACUUM ANALYZE jobs")
    store = Store(DB_URL)
    count = store.count_jobs()
    reads, builds, answers, pages, lean = [], [], [], [], []
    token = "bench-viewer-token"
    client = TestClient(
        create_app(store, Settings(database_url=DB_URL, web_tokens=f"{token}=viewer")),
        headers={"Authorization": f"Bearer {token}"},
    )
    for _ in range(10):
        t = time.perf_counter()
        found = store.workflows.jobs("m-5-3")
        t1 = time.perf_counter()
        tree = build_tree(found.jobs, "m-5-3")
        shown = tree.to_json()
        t2 = time.perf_counter()
        reads.append(t1 - t)
        builds.append(t2 - t1)
        t = time.perf_counter()
        answer = client.get("/api/jobs/m-5-3/tree")
        answers.append(time.perf_counter() - t)
        t = time.perf_counter()
        page = client.get("/jobs/root")
        pages.append(time.perf_counter() - t)
        t = time.perf_counter()
        fragment = client.get("/jobs/root", params={"partial": 1, "tree": 0})
        lean.append(time.perf_counter() - t)
    assert shown["count"] == count and answer.status_code == 200 and page.status_code == 200
    assert fragment.status_code == 200 and 'data-part="tree"' not in fragment.text
    store.close()
    say(
        f"\nworkflow tree of {count:,} jobs (a chain of 10, each step a group of {per_group:,}),"
        f" medians of 10: read {statistics.median(reads) * 1000:.0f} ms, tree built and as"
        f" JSON {statistics.median(builds) * 1000:.0f} ms; GET /api/jobs/{{id}}/tree"
        f" {statistics.median(answers) * 1000:.0f} ms; the root's job page"
        f" {statistics.median(pages) * 1000:.0f} ms, its live fragment without the tree"
        f" {statistics.median(lean) * 1000:.1f} ms (server side, in process)"
    )


def log_rate(lines: int, rounds: int) -> None:
    """Lines a task logs, captured and committed per second; what an ignored DEBUG call
    costs with capture on, against the same loop in a task with capture off."""
    import logging

    empty_tables()
    logger = logging.getLogger("bench.logs")
    logger.setLevel(logging.INFO)  # its INFO lines are made (the root is at WARNING)
    app = Celery("bench-logs", broker="memory://")
    app.conf.task_always_eager = True

    @app.task(name="bench.chatty")
    def chatty(n: int) -> None:
        for i in range(n):
            logger.info("line %d of the bench", i)

    @app.task(name="bench.debug")
    def debug(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            pass
        empty = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(n):
            logger.debug("ignored %d", i)
        return (time.perf_counter() - started - empty) / n

    rates, ignored = [], {"OFF": [], "INFO": []}
    for _ in range(rounds):
        for level in ("OFF", "INFO"):
            tracker = jobtrack.install(app, DB_URL, job_log_level=level, job_log_lines=lines)
            ignored[level].append(debug.delay(200_000).get())
            if level == "INFO":
                started = time.perf_counter()
                result = chatty.delay(lines)
                while not tracker.flush():
                    time.sleep(0.01)
                elapsed = time.perf_counter() - started
                kept = tracker.store.logs.count(result.id)
                assert kept == lines, kept
                rates.append(lines / elapsed)
            jobtrack.uninstall()
            tracker.store.close()
    off, on = (statistics.median(ignored[k]) * 1e6 for k in ("OFF", "INFO"))
    say(
        f"\nper-job logs: {lines:,} lines captured and committed at "
        f"{statistics.median(rates):,.0f} lines/s (median of {rounds}); an ignored DEBUG call "
        f"{on:.3f} us with capture on, {off:.3f} us off: {on - off:+.3f} us added"
    )


def insights_cost(rows: int) -> None:
    """The Insights figures for a 24-hour window on ``rows`` jobs over 30 days."""
    from jobtrack.insights import report, window

    started = time.perf_counter()
    thirty_days(rows)
    say(f"\ninsights: generated {rows:,} rows in {time.perf_counter() - started:.1f}s")
    store = Store(DB_URL)
    cases = {
        "per task, 24h by 1h": lambda: report(store, window("24h", "1h"), by="task"),
        "per type, 24h by 15m": lambda: report(store, window("24h", "15m"), by="type"),
        "one owner, 24h by 1h": lambda: report(store, window("24h", "1h"), owner_id="user-7"),
        "per task, 7d by 6h": lambda: report(store, window("7d", "6h"), by="task"),
    }
    timings = {}
    for name, call in cases.items():
        times = []
        for _ in range(10):
            t = time.perf_counter()
            found = call()
            times.append((time.perf_counter() - t) * 1000)
        assert found.series and found.series[0].total is not None
        timings[name] = statistics.median(times)
    store.close()
    say("  medians of 10: " + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))


#: The shape of the scale fixture: what a busy deployment's table holds.
SCALE_STATUSES = (
    (0.85, "completed"),
    (0.93, "failed"),
    (0.95, "cancelled"),
    (0.96, "lost"),
    (0.975, "running"),
    (0.99, "pending"),
    (0.995, "retrying"),
    (1.01, "paused"),
)


def scale_fixture(rows: int) -> None:
    """``rows`` realistic jobs over 90 days (40 task names, 10 job types, 200 owners, 5
    queues; 85 % completed, 8 % failed, the rest spread over the other states; half of
    them named "Resize thumbnail …", the other half "Import batch …", one in 99,991
    "Rebuild index …"), loaded in
    SQL in chunks of a million with the jobs indexes built once at the end; one job with
    100,000 items and the newest 100,000 jobs with a trace of three events each."""
    started = time.perf_counter()
    empty_tables()
    cases = " ".join(f"WHEN r < {p} THEN '{s}'" for p, s in SCALE_STATUSES)
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        defs = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' "
            "AND indexname <> 'pk_jobs'"
        ).fetchall()
        for name, _ in defs:
            conn.execute(f'DROP INDEX "{name}"')
        chunk = 1_000_000
        for low in range(1, rows + 1, chunk):
            high = min(low + chunk - 1, rows)
            conn.execute(
                f"""
                INSERT INTO jobs (id, task_name, job_type, name, owner_id, status, state_seq,
                    queue, root_id, created_at, started_at, completed_at, updated_at,
                    heartbeat_at, duration_ms, total_items, processed_items, failed_items,
                    skipped_items, retries, max_retries, error_type, error_message, ref,
                    progress_percent)
                SELECT id, 'app.tasks.task_' || (g %% 40), 'type_' || (g %% 10),
                       CASE WHEN g %% 99991 = 0 THEN 'Rebuild index ' || g
                            WHEN g %% 2 = 0 THEN
                                 'Resize thumbnail ' || g || ' for customer ' || (g %% 5003)
                            ELSE 'Import batch ' || g || ' of customer ' || (g %% 5003) END,
                       'owner-' || (g %% 200), status, 0, 'queue-' || (g %% 5), id, t,
                       t + interval '2 seconds',
                       CASE WHEN status IN ('completed', 'failed', 'cancelled', 'lost')
                            THEN t + interval '2 seconds' + make_interval(secs => d / 1000.0)
                       END,
                       t + interval '2 seconds' + make_interval(secs => d / 1000.0),
                       t + interval '2 seconds', d, 100, 100, (g %% 7), 0,
                       CASE WHEN status = 'failed' THEN 3 ELSE (g %% 17 = 0)::int END, 3,
                       CASE WHEN status IN ('failed', 'lost') THEN 'ConnectionError' END,
                       CASE WHEN status IN ('failed', 'lost') THEN
                            'upstream db-' || (g %% 97) || ' timed out after 30s (attempt '
                            || (g %% 4) || ')' END,
                       'order:' || (g %% 1000003),
                       CASE WHEN status IN ('running', 'paused') THEN (g %% 100)::float END
                FROM (
                    SELECT g, md5(g::text)::uuid::text AS id, random() AS r,
                           now() - make_interval(secs => (g * 7776000.0) / %(rows)s) AS t,
                           (50 + (g * 7919) %% 20000) AS d
                    FROM generate_series(%(low)s::bigint, %(high)s) AS g
                ) AS made, LATERAL (SELECT CASE {cases} END AS status) AS s
                """,
                {"rows": rows, "low": low, "high": high},
            )
            say(f"  loaded {high:,} of {rows:,} jobs ({time.perf_counter() - started:.0f}s)")
        for _name, definition in defs:
            conn.execute(definition)
        say(f"  indexes built ({time.perf_counter() - started:.0f}s)")
        conn.execute(
            "INSERT INTO job_items (job_id, key, status, processed_at) "
            "SELECT (SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1), 'row-' || n, "
            "CASE WHEN n % 50 = 0 THEN 'error' ELSE 'success' END, now() "
            "FROM generate_series(1, 100000) AS n"
        )
        conn.execute(
            "INSERT INTO job_events (job_id, at, status, attempt) "
            "SELECT j.id, j.created_at + make_interval(secs => e), "
            "(ARRAY['pending', 'running', 'completed'])[e + 1], 0 "
            "FROM (SELECT id, created_at FROM jobs ORDER BY created_at DESC LIMIT 100000) AS j, "
            "generate_series(0, 2) AS e"
        )
        conn.execute("VACUUM ANALYZE")
    say(f"scale fixture: {rows:,} jobs in {time.perf_counter() - started:.0f}s")


def scale_views(rows: int, reuse: bool) -> None:
    """Every dashboard and API read on the scale fixture, through the store's own
    methods, medians of 10 (the table the docs' scale section shows)."""
    from jobtrack.insights import report, window

    store = Store(DB_URL)
    if not (reuse and store.count_jobs() >= rows):
        scale_fixture(rows)
    with store.engine.connect() as conn:
        big = conn.execute(
            text("SELECT job_id FROM job_items GROUP BY job_id ORDER BY count(*) DESC LIMIT 1")
        ).scalar_one()
        deep = conn.execute(
            text("SELECT id FROM job_items WHERE job_id = :j ORDER BY id OFFSET 98999 LIMIT 1"),
            {"j": big},
        ).scalar_one()
        sample = conn.execute(
            text("SELECT id, name FROM jobs WHERE status = 'failed' ORDER BY id LIMIT 1 OFFSET 777")
        ).one()
    counts = [s.value for s in JobStatus]
    one = JobFilter(job_type="type_3")
    views: dict[str, Any] = {
        **list_views(store, one),
        "list, task": lambda: store.list_jobs(JobFilter(task_name="app.tasks.task_7"), limit=51),
        "list, queue": lambda: store.list_jobs(JobFilter(queue="queue-2"), limit=51),
        "tab counts, no filter": lambda: store.tab_counts(counts, cap=COUNT_CAP),
        "tab counts, job type": lambda: store.tab_counts(counts, cap=COUNT_CAP, where=one),
        "tab counts, owner": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(owner_id="owner-42")
        ),
        "tab counts, task": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(task_name="app.tasks.task_7")
        ),
        "tab counts, queue": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(queue="queue-2")
        ),
        "search text (about 9,000 match), list": lambda: store.list_jobs(
            JobFilter(search="db-42 timed"), limit=51
        ),
        "search text (one job's name), list": lambda: store.list_jobs(
            JobFilter(search="batch 4242423 of"), limit=51
        ),
        "search text (one job's name), tab counts": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(search="batch 4242423 of")
        ),
        "search text (about 9,000 match), tab counts": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(search="db-42 timed")
        ),
        "search exact id, list": lambda: store.list_jobs(JobFilter(search=sample.id), limit=51),
        "search exact id, tab counts": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(search=sample.id)
        ),
        "search id prefix (8), list": lambda: store.list_jobs(
            JobFilter(search=sample.id[:8]), limit=51
        ),
        "combined: type + owner + failed tab": lambda: store.list_jobs(
            JobFilter(job_type="type_2", owner_id="owner-42", status=(JobStatus.FAILED,)),
            limit=51,
        ),
        "combined: type + owner, tab counts": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(job_type="type_2", owner_id="owner-42")
        ),
        # Filters whose jobs never meet: each status's whole range of one is read.
        "combined: task + owner (disjoint), tab counts": lambda: store.tab_counts(
            counts,
            cap=COUNT_CAP,
            where=JobFilter(task_name="app.tasks.task_7", owner_id="owner-42"),
        ),
        "combined: type + queue (disjoint), tab counts": lambda: store.tab_counts(
            counts, cap=COUNT_CAP, where=JobFilter(job_type="type_3", queue="queue-1")
        ),
        "combined: task + search, tab counts": lambda: store.tab_counts(
            counts,
            cap=COUNT_CAP,
            where=JobFilter(task_name="app.tasks.task_7", search="db-47 timed"),
        ),
        # A word half the jobs hold, a word a hundred hold (all among old jobs), a word
        # none holds, and two common words no job holds together.
        **{
            f"search {kind} ({word!r}), {view}": call
            for kind, word in SEARCHES
            for view, call in (
                ("list", lambda w=word: store.list_jobs(JobFilter(search=w), limit=51)),
                (
                    "running tab",
                    lambda w=word: store.list_jobs(
                        JobFilter(search=w, status=(JobStatus.RUNNING, JobStatus.RETRYING)),
                        limit=51,
                    ),
                ),
                (
                    "tab counts",
                    lambda w=word: store.tab_counts(
                        counts, cap=COUNT_CAP, where=JobFilter(search=w)
                    ),
                ),
            )
        },
        "job page: get job + events": lambda: (
            store.get_job(sample.id),
            store.list_events(sample.id),
        ),
        "items, first page": lambda: store.list_items(big, limit=100),
        "items, page at 99,000 (offset)": lambda: store.list_items(big, limit=100, offset=99_000),
        "items, page after item 99,000 (keyset)": lambda: store.list_items(
            big, limit=100, after=deep
        ),
        "exact counts (watch)": lambda: store.count_by_status(["running", "retrying", "pending"]),
        "stats, last 24 h": lambda: store.stats(since=datetime.now(UTC) - timedelta(days=1)),
        "insights, 24 h by 1 h": lambda: report(store, window("24h", "1h")),
    }
    say(f"\nscale: every view on {store.count_jobs():,} jobs (medians of 10, ms)")
    time_views(views, 58)
    scale_pages(store)
    store.close()


#: The searches the scale views try: (kind, search).
SEARCHES = (
    ("common word", "thumbnail"),
    ("rare word", "rebuild"),
    ("no match", "zebra"),
    ("no match, common words", "thumbnail batch"),
    ("common words, rare together", "customer 4242"),
)


def scale_pages(store: Store) -> None:
    """Whole dashboard pages (the list, its tab counts, rendering) through the web app
    in this process, medians of 10, with the tabs each shows."""
    import re

    from fastapi.testclient import TestClient

    from jobtrack.settings import Settings
    from jobtrack.web import create_app

    app = create_app(store, Settings(database_url=DB_URL))
    client = TestClient(app, base_url="http://localhost", client=("127.0.0.1", 50000))
    pages: list[tuple[str, str | None, bool]] = [("all", None, False), ("running", None, False)]
    pages += [(tab, word, False) for _, word in SEARCHES for tab in ("all", "running")]
    pages += [("all", word, True) for word in ("thumbnail batch", "customer 4242")]
    say("\nscale: whole dashboard pages (medians of 10, ms; tabs as shown)")
    for tab, word, full in pages:
        params = {"tab": tab, **({"search": word} if word else {}), **({"full": 1} if full else {})}
        times = []
        for _ in range(10):
            t = time.perf_counter()
            answer = client.get("/", params=params)
            times.append((time.perf_counter() - t) * 1000)
        assert answer.status_code == 200, answer.text[:500]
        shown = re.findall(
            r'data-tab="(\w+)">\w+ <span class="count[^"]*"[^>]*>([^<]*)<', answer.text
        )
        label = f"/?tab={tab}" + (f"&search={word}" if word else "") + ("&full=1" if full else "")
        partial = "Only the newest jobs were searched" in answer.text
        say(f"  {label:<46} {statistics.median(times):9.1f}   (max {max(times):.1f})")
        rows = answer.text.count('class="job status-')
        say(
            "      "
            + ", ".join(f"{name} {count}" for name, count in shown)
            + f"; {rows} jobs listed"
            + (" (the newest jobs only: said so)" if partial else "")
        )


def failures_cost(rows: int, reuse: bool) -> None:
    """The failure groups (the Failures page, ``GET /api/failures``, ``failures ls``) on
    the scale fixture of ``rows`` jobs, whose failures are spread over four error types
    here (160 groups), and the Failed tab's unhandled view; medians of 10, with the
    groups' EXPLAIN."""
    store = Store(DB_URL)
    if not (reuse and store.count_jobs() >= rows):
        scale_fixture(rows)
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET error_type = (ARRAY['ConnectionError', 'TimeoutError', "
            "'ValueError', 'KeyError'])[1 + abs(hashtext(id)) % 4] "
            "WHERE status IN ('failed', 'lost') AND error_type = 'ConnectionError'"
        )
        conn.execute("VACUUM ANALYZE jobs")
        failures = conn.execute(
            "SELECT count(*) FROM jobs WHERE status IN ('failed', 'lost') AND retried_by IS NULL"
        ).fetchone()
    now = datetime.now(UTC)
    unhandled = JobFilter(status=(JobStatus.FAILED, JobStatus.LOST), handled=False)
    views: dict[str, Any] = {
        "failure groups (the Failures page)": lambda: store.failures.groups(now=now),
        "failure groups, one task": lambda: store.failures.groups(
            JobFilter(task_name="app.tasks.task_7"), now=now
        ),
        "failure groups, one owner": lambda: store.failures.groups(
            JobFilter(owner_id="owner-42"), now=now
        ),
        "failed tab, unhandled: newest page": lambda: store.list_jobs(unhandled, limit=51),
        "failed tab, unhandled: count": lambda: store.count_by_status(
            ["failed", "lost"], cap=COUNT_CAP, where=JobFilter(handled=False)
        ),
    }
    found = store.failures.groups(now=now, limit=1000)
    say(
        f"\nfailures: {store.count_jobs():,} jobs, {failures[0] if failures else 0:,} unhandled "
        f"failures in {len(found)} groups (medians of 10, ms)"
    )
    time_views(views, 46)
    with store.engine.connect() as conn:
        plan = conn.execute(
            text(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT error_group, count(*), "
                "min(coalesce(completed_at, updated_at)), max(coalesce(completed_at, updated_at)) "
                "FROM jobs WHERE status IN ('failed', 'lost') AND retried_by IS NULL "
                "GROUP BY error_group ORDER BY 4 DESC LIMIT 50"
            )
        ).scalars()
        say("EXPLAIN ANALYZE:\n  " + "\n  ".join(plan))
    store.close()


EMPTY_DB = DB_NAME + "_empty"


def scale_writes(rows: int, tasks: int, rounds: int, reuse: bool) -> None:
    """Worker throughput with jobtrack on the scale table against an empty one (a second
    database), interleaved rounds; then what one PostgreSQL absorbs from many writer
    processes at once."""
    store = Store(DB_URL)
    if not (reuse and store.count_jobs() >= rows):
        scale_fixture(rows)
    size = store.count_jobs()
    store.close()
    empty_url = _fresh_schema(EMPTY_DB)
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    for n in range(rounds):
        for name in ["empty", "full"] if n % 2 == 0 else ["full", "empty"]:
            rates[name].append(
                throughput("jobtrack", tasks, empty_url if name == "empty" else DB_URL)
            )
            say(f"  round {n + 1} {name:<6} {rates[name][-1]:8,.0f} tasks/s")
    ratios = [f / e for f, e in zip(rates["full"], rates["empty"], strict=True)]
    say(
        f"\nwrite path at size: prefork worker, jobtrack default, {tasks:,} tasks x {rounds}: "
        f"empty table {statistics.median(rates['empty']):,.0f} tasks/s, {size:,} jobs "
        f"{statistics.median(rates['full']):,.0f} tasks/s (median ratio "
        f"{statistics.median(ratios):.2f})"
    )
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{EMPTY_DB}" WITH (FORCE)')


PARTED_DB = "jobtrack_bench_parted"


def _old_month(url: str, rows: int) -> None:
    """``rows`` completed jobs created across one month 100-130 days ago, each with an
    event and an item (plain tables)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, task_name, status, state_seq, created_at, updated_at,
                              completed_at, processed_items, failed_items, skipped_items,
                              retries)
            SELECT 'old-' || g, 'app.task', 'completed', 1099511627776, t, t, t, 1, 0, 0, 0
            FROM (SELECT g, date_trunc('month', now() - interval '100 days')
                            + make_interval(secs => g * 2419200.0 / %(rows)s) AS t
                  FROM generate_series(1, %(rows)s) AS g) AS made
            """,
            {"rows": rows},
        )
        conn.execute(
            "INSERT INTO job_events (job_id, at, status, attempt) "
            "SELECT id, created_at, 'completed', 0 FROM jobs"
        )
        conn.execute(
            "INSERT INTO job_items (job_id, key, status, processed_at) "
            "SELECT id, 'k', 'success', created_at FROM jobs"
        )
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def partitions_cost(rows: int, tasks: int, rounds: int) -> None:
    """Partitioned tables (``jobtrack db partition --by month``) against plain ones: the
    conversion, retention of a month of ``rows`` jobs (dropping its partitions against
    deleting its rows), and worker throughput on each (interleaved rounds)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PARTED_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{PARTED_DB}"')
    parted_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + PARTED_DB
    cutoff = datetime.now(UTC) - timedelta(days=30)
    empty_tables()
    _old_month(DB_URL, rows)
    plain = Store(DB_URL)
    started = time.perf_counter()
    deleted = plain.prune(finished_before=cutoff, statuses=["completed"], batch_size=5000)
    deleting = time.perf_counter() - started
    plain.close()

    parted = Store(parted_url)
    parted.ensure_schema()
    _old_month(parted_url, rows)
    started = time.perf_counter()
    parted.partition("month")
    converting = time.perf_counter() - started
    started = time.perf_counter()
    dropped = parted.prune(finished_before=cutoff, statuses=["completed"])
    dropping = time.perf_counter() - started
    left = parted.count_jobs()
    assert deleted == dropped == rows and left == 0, (deleted, dropped, left)
    say(
        f"\npartitions: a month of {rows:,} old jobs (an event and an item each): "
        f"converting the tables {converting:.1f}s; retention by deleting rows "
        f"{deleting:.1f}s, by dropping the month's partitions {dropping:.2f}s "
        f"({deleting / dropping:,.0f}x faster)"
    )
    with psycopg.connect(parted_url, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_items, job_events, job_logs")
    empty_tables()
    parted.close()
    rates: dict[str, list[float]] = {"plain": [], "partitioned": []}
    for n in range(rounds):
        for name in ["plain", "partitioned"] if n % 2 == 0 else ["partitioned", "plain"]:
            url = DB_URL if name == "plain" else parted_url
            rates[name].append(throughput("jobtrack", tasks, url))
            say(f"  round {n + 1} {name:<12} {rates[name][-1]:8,.0f} tasks/s")
    ratios = [p / q for p, q in zip(rates["partitioned"], rates["plain"], strict=True)]
    say(
        f"write path, prefork worker, jobtrack default, {tasks:,} tasks x {rounds}: plain "
        f"tables {statistics.median(rates['plain']):,.0f} tasks/s, partitioned "
        f"{statistics.median(rates['partitioned']):,.0f} tasks/s (median ratio "
        f"{statistics.median(ratios):.2f})"
    )
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PARTED_DB}" WITH (FORCE)')


def _writer_process(
    db_url: str, seconds: float, prefix: str, out: Any, filters: bool = False
) -> None:
    """One simulated worker host: job lifecycles (pending, running, completed, each with
    its trace entry) through a BufferedWriter, as fast as it can, for ``seconds``. With
    ``filters``, each job has a task name, type, owner and queue of the scale fixture's
    spread (the columns of the dashboard filters' indexes)."""
    from jobtrack.settings import Settings
    from jobtrack.writer import BufferedWriter

    store = Store(db_url)
    writer = BufferedWriter(store, Settings(database_url=db_url))
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            job_id = f"{prefix}-{n}"
            columns: dict[str, Any] = {"task_name": "bench.sim"}
            if filters:
                columns = {
                    "task_name": f"app.billing.tasks.task_{n % 40}",
                    "job_type": f"type_{n % 10}",
                    "owner_id": f"owner-{n % 200}",
                    "queue": f"queue-{n % 5}",
                }
            for status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED):
                update = JobUpdate.transition(job_id, status, **columns)
                writer.update(update, trace=0)
            n += 1
        while writer.pending() > 20_000:  # the database sets the pace
            time.sleep(0.005)
    writer.close(30)
    store.close()
    out.put(n)


def _fresh_schema(name: str) -> str:
    """A new database ``name`` with jobtrack's schema; its URL."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    fresh = Store(url)
    fresh.ensure_schema()
    fresh.close()
    return url


def _run_writers(
    url: str, seconds: float, count: int, prefix: str, *, filters: bool = False
) -> tuple[int, float]:
    """``count`` writer processes (:func:`_writer_process`) at once: the jobs they made,
    and the seconds from the first start to the last finish."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [
        context.Process(
            target=_writer_process, args=(url, seconds, f"{prefix}-{i}", queue, filters)
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    made = sum(queue.get(timeout=seconds + 120) for _ in procs)
    for proc in procs:
        proc.join(60)
    return made, time.perf_counter() - started


class _ServerCpu:
    """CPU seconds every PostgreSQL process on this machine used while inside, those
    that ended meanwhile (a writer's backend) included: /proc read every 0.2 s, each
    process counted up to its last reading."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _read(self) -> dict[int, int]:
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    name, _, rest = f.read().rpartition(")")
            except OSError:
                continue
            if name.endswith("(postgres"):
                fields = rest.split()
                found[int(entry)] = int(fields[11]) + int(fields[12])
        return found

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self._last.update(self._read())

    def __enter__(self) -> _ServerCpu:
        self._first = self._read()
        self._last = dict(self._first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._read())
        ticks = sum(last - self._first.get(pid, 0) for pid, last in self._last.items())
        self.seconds = ticks / os.sysconf("SC_CLK_TCK")


def write_rate(seconds: float, counts: tuple[int, ...] = (1, 2, 4, 8, 16)) -> None:
    """Jobs (three transitions and three trace rows each) one PostgreSQL commits per
    second from N writer processes at once: where it saturates."""
    cores = os.cpu_count() or 1
    say(f"\nwrite rate from many processes ({seconds:.0f} s each, {cores} cores):")
    say("  (CPU: the writers' and every PostgreSQL process's on this machine, per second)")
    name = DB_NAME + "_writes"
    for count in counts:
        url = _fresh_schema(name)
        with psycopg.connect(url, autocommit=True) as conn:
            wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        with _ServerCpu() as server:
            made, elapsed = _run_writers(url, seconds, count, f"p{count}")
        done = resource.getrusage(resource.RUSAGE_CHILDREN)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM jobs WHERE status = 'completed'").fetchone()
            wal = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", wal_before
            ).fetchone()
        assert stored is not None and stored[0] == made, (stored, made)
        assert wal is not None
        used = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
        writers_cpu, server_cpu = used / elapsed, server.seconds / elapsed
        say(
            f"  {count:>2} processes: {made / elapsed:8,.0f} jobs/s committed "
            f"({3 * made / elapsed:,.0f} row writes/s and as many trace rows); CPU "
            f"writers {writers_cpu:.2f} + PostgreSQL {server_cpu:.2f} of {cores} cores; "
            f"WAL {float(wal[0]) / made:,.0f} bytes a job, {float(wal[0]) / elapsed / 1e6:.1f} MB/s"
        )
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def filter_index_cost(rounds: int, seconds: float = 10.0, writers: int = 2) -> None:
    """What revision 0012's INCLUDE columns cost writes: ``writers`` processes writing
    jobs with every filter column set, into a fresh database whose filter indexes carry
    the INCLUDE columns or not (the indexes as revision 0009 made them), alternated."""
    from jobtrack.schema import FILTER_COLUMNS

    name = DB_NAME + "_filters"
    rates: dict[str, list[float]] = {"include": [], "plain": []}
    say(f"\nfilter indexes, INCLUDE or not: {writers} writer processes, {seconds:.0f} s each")
    for n in range(rounds):
        for setup in ["include", "plain"] if n % 2 == 0 else ["plain", "include"]:
            url = _fresh_schema(name)
            if setup == "plain":
                with psycopg.connect(url, autocommit=True) as conn:
                    for column in FILTER_COLUMNS:
                        index = f"ix_jobs_{column}_status_created_at"
                        conn.execute(f"DROP INDEX {index}")
                        conn.execute(f"CREATE INDEX {index} ON jobs ({column}, status, created_at)")
            made, elapsed = _run_writers(url, seconds, writers, "w", filters=True)
            rates[setup].append(made / elapsed)
            say(f"  round {n + 1} {setup:<8} {rates[setup][-1]:8,.0f} jobs/s")
    ratios = [i / p for i, p in zip(rates["include"], rates["plain"], strict=True)]
    say(
        f"filter indexes: with INCLUDE {statistics.median(rates['include']):,.0f} jobs/s, "
        f"plain {statistics.median(rates['plain']):,.0f} jobs/s (median ratio "
        f"{statistics.median(ratios):.2f}; per round " + ", ".join(f"{r:.2f}" for r in ratios) + ")"
    )
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _short_task_server_cpu(
    label: str, setups: dict[str, list[str]], tasks: int, rounds: int
) -> dict[str, list[float]]:
    """The server CPU a short task's writes in the worker take (its pending row written
    first, as a publisher does, then its running and completed folded into one row
    write and one trace entry, through Celery's tracer), on a fresh database at head
    changed by each setup's statements, the setups' order turned each round."""
    name = DB_NAME + "_server_cpu"
    used: dict[str, list[float]] = {setup: [] for setup in setups}
    order = list(setups)
    say(f"\n{label}: {tasks:,} tasks a round")
    for n in range(rounds):
        for setup in order[n % len(order) :] + order[: n % len(order)]:
            url = _fresh_schema(name)
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in setups[setup]:
                    conn.execute(statement)
            app = Celery("bench-server-cpu", broker="memory://")

            @app.task(name="bench.server-noop", shared=False)
            def noop(i: int) -> int:
                return i

            jobtrack.install(app, url)
            ids = [str(uuid.uuid4()) for _ in range(tasks)]
            for i, job_id in enumerate(ids):
                noop.apply_async((i,), task_id=job_id)
            jobtrack.flush()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                conn.execute("CHECKPOINT")
            with _ServerCpu() as server:
                for i, job_id in enumerate(ids):
                    noop.apply((i,), task_id=job_id)
                jobtrack.flush()
            jobtrack.uninstall()
            with psycopg.connect(url) as conn:
                done = conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = 'completed'"
                ).fetchone()
            assert done is not None and done[0] == tasks, (setup, done)
            used[setup].append(server.seconds / tasks * 1e6)
            say(f"  round {n + 1} {setup:<28} {used[setup][-1]:5.1f} us a task")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return used


def trace_key_cost(tasks: int, rounds: int) -> None:
    """What ``job_events``' foreign key to ``jobs`` costs the database: a short task's
    server CPU at head against with that key dropped. Weighed, not kept
    (docs/design.md)."""
    used = _short_task_server_cpu(
        "trace entries with and without their foreign key",
        {
            "with": [],
            "without": ["ALTER TABLE job_events DROP CONSTRAINT fk_job_events_job_id_jobs"],
        },
        tasks,
        rounds,
    )
    saved = [w - o for w, o in zip(used["with"], used["without"], strict=True)]
    say(
        f"trace key: PostgreSQL CPU per task {statistics.median(used['with']):.0f} us with "
        f"the foreign key, {statistics.median(used['without']):.0f} us without (its cost "
        "per round: " + ", ".join(f"{d:.0f}" for d in saved) + " us)"
    )


#: The indexes of ``jobs`` by what they serve (the primary key is kept in every setup).
_SEARCH_INDEXES = ("ix_jobs_search_trgm", "ix_jobs_search_words")
_FILTER_INDEXES = (
    "ix_jobs_job_type_status_created_at",
    "ix_jobs_owner_id_status_created_at",
    "ix_jobs_queue_status_created_at",
    "ix_jobs_task_name_status_created_at",
    "ix_jobs_ref_created_at",
    "ix_jobs_id_prefix",
)


def jobs_index_cost(tasks: int, rounds: int) -> None:
    """Where a short task's server CPU goes among ``jobs``' indexes: at head; without
    the two search indexes (GIN); without the six filter and prefix indexes; and with
    ``jobs`` keeping only its primary key (every other index dropped). Each status
    change writes a new version of the row, and every index of the table gets an entry
    for it (an update that changes an indexed column is never a HOT update)."""
    every_other = (
        "DO $$ DECLARE i record; BEGIN FOR i IN SELECT indexname FROM pg_indexes "
        "WHERE tablename = 'jobs' AND indexname <> 'pk_jobs' LOOP "
        "EXECUTE format('DROP INDEX %I', i.indexname); END LOOP; END $$"
    )
    used = _short_task_server_cpu(
        "jobs' indexes",
        {
            "at head": [],
            "without the search indexes": [f"DROP INDEX IF EXISTS {i}" for i in _SEARCH_INDEXES],
            "without the filter indexes": [f"DROP INDEX IF EXISTS {i}" for i in _FILTER_INDEXES],
            "the primary key alone": [every_other],
        },
        tasks,
        rounds,
    )
    say(
        "jobs' indexes: PostgreSQL CPU per task, medians: "
        + "; ".join(f"{setup} {statistics.median(cpu):.0f} us" for setup, cpu in used.items())
    )


def _wall_s(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds of each of ``runs`` runs of ``command`` (one warm-up first)."""
    times = []
    for n in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
        if n:
            times.append(time.perf_counter() - started)
    return times


def cli_start(runs: int) -> None:
    """How long the command takes to start, against ``python -c pass`` and ``celery
    --help`` in the same run (alternated, round by round): ``jobtrack --help``; ``jobs ls``
    on an empty database named by ``--database-url`` (no Celery app); and ``-A`` with an
    app, against importing that app alone.

    jobtrack's modules are compiled first, as installing a package compiles them: an
    editable install run with ``PYTHONDONTWRITEBYTECODE`` set (as some shells have it)
    would otherwise compile every module on every start, about 140 ms of ``jobs ls``
    here that no installed copy pays."""
    import compileall

    empty_tables()
    compileall.compile_dir(ROOT / "jobtrack", quiet=1)
    bin_dir = Path(sys.executable).parent
    jobtrack_cmd, celery_cmd = str(bin_dir / "jobtrack"), str(bin_dir / "celery")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{ROOT}",
        "BENCH_DB": DB_URL,
        "BENCH_MODE": "jobtrack",  # the app calls jobtrack.install(app, BENCH_DB)
    }
    env.pop("JOBTRACK_DATABASE_URL", None)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "celery --help": [celery_cmd, "--help"],
        "jobtrack --help": [jobtrack_cmd, "--help"],
        "jobtrack --database-url URL jobs ls": [
            jobtrack_cmd,
            "--database-url",
            DB_URL,
            "jobs",
            "ls",
        ],
        "import the app (bench_app)": [sys.executable, "-c", "import bench_app"],
        "jobtrack -A bench_app jobs ls": [jobtrack_cmd, "-A", "bench_app", "jobs", "ls"],
    }
    figures: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):  # alternated: the machine's drift reaches every command alike
        for name, command in commands.items():
            figures[name] += _wall_s(command, env, 1)
    median = {name: statistics.median(values) * 1000 for name, values in figures.items()}
    base = median["python -c pass"]
    say(f"\ncli start-up, wall clock, median of {runs} runs (alternated):")
    for name, ms in median.items():
        say(f"  {name:<38} {ms:7.0f} ms  ({ms - base:+5.0f} ms over python -c pass)")
    with_app = median["jobtrack -A bench_app jobs ls"] - median["import the app (bench_app)"]
    say(
        f"  jobtrack --help / celery --help: "
        f"{median['jobtrack --help'] / median['celery --help']:.2f}; -A on top of importing "
        f"the app: {with_app:+.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="throughput setups to compare (bare is always included)",
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--progress-calls", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the list query")
    parser.add_argument(
        "--only",
        choices=[
            "throughput",
            "publish",
            "items",
            "progress",
            "hooks",
            "hook-parts",
            "writer-process",
            "query",
            "prune",
            "rls",
            "bulk",
            "alerts",
            "tree",
            "logs",
            "insights",
            "scale",
            "scale-writes",
            "write-rate",
            "partitions",
            "filter-indexes",
            "trace-key",
            "jobs-indexes",
            "cli",
            "mariadb",
            "failures",
        ],
        action="append",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="scale: keep the benchmark database when it holds --rows jobs already",
    )
    parser.add_argument("--tree-jobs", type=int, default=10_000, help="jobs in the workflow")
    parser.add_argument("--log-lines", type=int, default=200_000, help="lines one task logs")
    parser.add_argument("--bulk-jobs", type=int, default=100_000, help="jobs a bulk retry covers")
    args = parser.parse_args()
    only = set(
        args.only or ["throughput", "publish", "items", "progress", "query", "prune", "rls", "bulk"]
    )
    if not (
        args.reuse and only <= {"scale", "scale-writes", "write-rate", "filter-indexes", "failures"}
    ):
        fresh_database()
    say(f"jobtrack bench: {os.cpu_count()} cores, broker {BROKER}, database {DB_NAME}")

    if "throughput" in only:
        modes = ["bare"] + [m for m in args.modes.split(",") if m in MODES and m != "bare"]
        results: dict[str, list[float]] = {m: [] for m in modes}
        ratios: dict[str, list[float]] = {m: [] for m in modes}
        for n in range(args.rounds):
            order = modes[n % len(modes) :] + modes[: n % len(modes)]  # rotate the order
            for mode in order:
                results[mode].append(throughput(mode, args.tasks))
                say(f"  round {n + 1} {mode:<18} {results[mode][-1]:8,.0f} tasks/s")
            for mode in modes:
                ratios[mode].append(results[mode][-1] / results["bare"][-1])
        say(f"\nthroughput, {args.tasks} no-op tasks x {args.rounds} rounds, prefork c=2:")
        say(
            f"  {'mode':<18} {'median tasks/s':>15} {'median ratio to bare':>22} "
            f"{'worker CPU/task':>16} {'PostgreSQL CPU/task':>20}"
        )

        def cpu(figures: list[float] | None, width: int) -> str:
            # None when every round ended before the first count was seen (tiny --tasks)
            return (
                f"{statistics.median(figures):{width},.0f} us"
                if figures
                else "n/a".rjust(width + 3)
            )

        for mode in modes:
            say(
                f"  {mode:<18} {statistics.median(results[mode]):15,.0f} "
                f"{statistics.median(ratios[mode]):22.2f} "
                f"{cpu(WORKER_CPU_US.get(mode), 13)}{cpu(SERVER_CPU_US.get(mode), 18)}"
            )
    if "publish" in only:
        publish_rate(args.tasks, args.rounds)
    if "items" in only:
        items_rate(args.items)
    if "progress" in only:
        progress_cost(args.progress_calls, max(args.rounds, 5))
    if "hook-parts" in only:
        hook_parts(args.tasks, args.rounds)
    if "hooks" in only:
        hook_cost(args.tasks, max(args.rounds, 5))
    if "writer-process" in only:
        writer_process_cost(args.tasks, max(args.rounds, 5))
    if "query" in only:
        list_query(args.rows)
    if "prune" in only:
        prune_rate(args.rows)
    if "rls" in only:
        rls_cost(20_000, max(args.rounds, 5))
    if "bulk" in only:
        bulk_retry(args.bulk_jobs)
    if "alerts" in only:
        alert_cost(args.rows)
    if "tree" in only:
        tree_cost(args.tree_jobs)
    if "logs" in only:
        log_rate(args.log_lines, max(args.rounds, 3))
    if "insights" in only:
        insights_cost(args.rows)
    if "scale" in only:
        scale_views(args.rows, args.reuse)
    if "scale-writes" in only:
        scale_writes(args.rows, args.tasks, args.rounds, args.reuse)
    if "write-rate" in only:
        write_rate(10.0)
    if "partitions" in only:
        partitions_cost(args.rows, args.tasks, args.rounds)
    if "filter-indexes" in only:
        filter_index_cost(args.rounds)
    if "trace-key" in only:
        trace_key_cost(args.tasks, args.rounds)
    if "jobs-indexes" in only:
        jobs_index_cost(args.tasks, args.rounds)
    if "cli" in only:
        cli_start(max(args.rounds, 7))
    if "mariadb" in only:
        mariadb_figures(args.tasks, args.rounds, args.items, args.rows)
    if "failures" in only:
        failures_cost(args.rows, args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
