"""Reads on a real streaming replica. The test makes its own pair of PostgreSQL clusters
(``initdb``, ``pg_basebackup -R``, two free ports; see tests/pgcluster.py), never the
shared server: reads inside ``Store.reading()`` go to the replica and writes to the
primary; read-your-writes waits for the replica's replay (an apply delay) and, past its
bound, reads the primary or says it is behind; a replica far behind or stopped mid-test
is left out (logged once), reads falling back to the primary or answering 503; the
dashboard's footer says which server served; the live stream, the CLI and the alert
rules read the replica and still see what was just written."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import text

from jobtrack.alerts.rules import load
from jobtrack.alerts.runner import AlertRunner
from jobtrack.cli import main
from jobtrack.errors import JobNotFound, ReplicaUnavailable
from jobtrack.models import Batch, JobFilter, JobStatus, JobUpdate
from jobtrack.settings import Settings
from jobtrack.store import ReplicaPolicy, Store
from jobtrack.store.replicas import lsn_number
from jobtrack.tracker import open_store
from jobtrack.web import create_app
from tests.acceptance.webkit import read_events, serve
from tests.conftest import wait_for
from tests.pgcluster import StreamingPair

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:6]
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
LOCAL = ("127.0.0.1", 50000)


@pytest.fixture
def fresh(streaming_pair: StreamingPair) -> Iterator[StreamingPair]:
    """Each test leaves the replica running, replaying at once, caught up."""
    yield streaming_pair
    streaming_pair.reset()


def caught_up(pair: StreamingPair) -> None:
    pair.caught_up()


def routed_store(pair: StreamingPair, **policy: Any) -> Store:
    policy.setdefault("check_interval_s", 0.05)
    return Store(pair.primary_url, replicas=ReplicaPolicy((pair.replica_url,), **policy))


def job(name: str, status: JobStatus = JobStatus.COMPLETED, **fields: Any) -> JobUpdate:
    return JobUpdate.transition(
        f"{name}-{RUN}",
        status,
        name=f"Replica check {name}",
        completed_at=datetime.now(UTC),
        **fields,
    )


def test_reads_inside_reading_go_to_the_replica_writes_to_the_primary(
    fresh: StreamingPair,
) -> None:
    store = routed_store(fresh)
    try:
        store.write_batch(Batch([job("seen")]))
        caught_up(fresh)
        fresh.pause_replay()  # what is written from now on stays off the replica
        with store.reading() as route:
            store.write_batch(Batch([job("unseen")]))  # a write: the primary
            listed = {j.id for j in store.list_jobs(JobFilter(search="Replica check"))}
            assert store.find_job(f"unseen-{RUN}") is None
        assert f"seen-{RUN}" in listed and f"unseen-{RUN}" not in listed
        assert route.on_replica and route.server == f"127.0.0.1:{fresh.replica_port}/jobtrack"
        assert route.describe() == f"replica {route.server}, 0.0 s behind"
        assert store.get_job(f"unseen-{RUN}").name == "Replica check unseen"  # outside
    finally:
        store.close()


def test_read_your_writes_waits_for_the_replica_then_reads_the_primary(
    fresh: StreamingPair,
) -> None:
    patient = routed_store(fresh, wait_s=30)
    hasty = routed_store(fresh, wait_s=0.2)
    strict = routed_store(fresh, wait_s=0.2, fallback="error")
    try:
        # An apply delay: the replica has the change one second after the primary.
        fresh.apply_delay(1.0)
        patient.write_batch(Batch([job("delayed")]))
        written = patient.primary_lsn()
        assert written is not None
        with patient.reading(min_lsn=written) as route:
            assert patient.get_job(f"delayed-{RUN}").status is JobStatus.COMPLETED
        assert route.on_replica and route.note is None
        assert lsn_number(fresh.replayed()) >= lsn_number(written)  # it waited for it
        # Replay paused: the bounded wait ends; then the primary (or, strict, the
        # replica, saying so).
        fresh.apply_delay(0)
        caught_up(fresh)
        fresh.pause_replay()
        hasty.write_batch(Batch([job("paused")]))
        written = hasty.primary_lsn()
        with hasty.reading(min_lsn=written) as route:
            assert hasty.get_job(f"paused-{RUN}").name == "Replica check paused"
        assert route.server == f"127.0.0.1:{fresh.primary_port}/jobtrack"
        assert not route.on_replica
        assert route.note == "no replica had replayed your last change after 0.2 s"
        with strict.reading(min_lsn=written) as route, pytest.raises(JobNotFound):
            strict.get_job(f"paused-{RUN}")
        assert route.on_replica
        assert route.note is not None and "may not show yet" in route.note
        with hasty.reading() as route:  # no write to see: the replica, stale or not
            assert hasty.find_job(f"paused-{RUN}") is None
    finally:
        for store in (patient, hasty, strict):
            store.close()


def test_a_replica_far_behind_is_left_out_logged_once(
    fresh: StreamingPair, caplog: pytest.LogCaptureFixture
) -> None:
    lenient = routed_store(fresh, max_lag_s=0.3)
    strict = routed_store(fresh, max_lag_s=0.3, fallback="error")
    replicas = lenient.replicas
    assert replicas is not None
    try:
        fresh.pause_replay()
        lenient.write_batch(Batch([job("behind")]))

        def behind(store: Store = lenient) -> bool:
            assert store.replicas is not None
            store.replicas.refresh(force=True)
            return store.replicas.replicas[0].state == "behind"

        with caplog.at_level(logging.WARNING, logger="jobtrack.store"):
            wait_for(behind, 20, interval_s=0.1, message="the replica counted as behind")
            for _ in range(3):
                with lenient.reading() as route:
                    assert lenient.get_job(f"behind-{RUN}")  # the primary has it
                assert not route.on_replica and route.note is not None
                assert "behind (over 0.3 s)" in route.note
            wait_for(lambda: behind(strict), 20, interval_s=0.1, message="behind, strict")
            with strict.reading(), pytest.raises(ReplicaUnavailable, match="behind"):
                strict.get_job(f"behind-{RUN}")
            fresh.resume_replay()
            caught_up(fresh)

            def back() -> bool:
                replicas.refresh(force=True)
                return replicas.replicas[0].state == "ok"

            wait_for(back, 20, interval_s=0.1, message="the replica back")
        said = [r.getMessage() for r in caplog.records if r.name == "jobtrack.store"]
        went = [m for m in said if "behind (over" in m]
        assert len([m for m in went if "reads go to the primary" in m]) == 1, said  # lenient
        assert len([m for m in went if "answer 503" in m]) == 1, said  # strict
        assert len([m for m in said if "serves reads again" in m]) == 1, said
    finally:
        lenient.close()
        strict.close()


def dashboard(pair: StreamingPair, **settings: Any) -> tuple[TestClient, Store]:
    config = Settings(
        database_url=pair.primary_url, read_database_url=(pair.replica_url,), **settings
    )
    store = open_store(config)
    return TestClient(create_app(store, config), base_url="http://localhost", client=LOCAL), store


def footer(page: str) -> str:
    found = re.search(r'<footer class="foot">(.*?)</footer>', page, re.S)
    assert found, "no footer"
    return re.sub(r"<[^>]+>", "", found.group(1))


def test_the_dashboard_reads_the_replica_and_sees_its_own_delete(fresh: StreamingPair) -> None:
    c, store = dashboard(fresh, read_wait_s=30)
    try:
        store.write_batch(Batch([job("deleted"), job("api")]))
        caught_up(fresh)
        page = c.get("/", params={"tab": "all", "search": "Replica check"})
        assert f"deleted-{RUN}" in page.text
        assert f"served by replica 127.0.0.1:{fresh.replica_port}/jobtrack" in footer(page.text)
        live = c.get("/", params={"tab": "all", "partial": 1})  # a live refresh says it too
        assert '<span class="served" data-part="served"> · served by replica' in live.text
        # The replica applies each change a second late: the page after a delete waits
        # for it (the position the delete's answer carries), and shows the job gone.
        fresh.apply_delay(1.0)
        shown = c.get(f"/jobs/deleted-{RUN}")
        assert "served by replica" in footer(shown.text)
        asked = c.get(f"/jobs/deleted-{RUN}/delete")  # a delete asks first (its own page)
        token = re.search(r'name="csrf_token" value="([^"]+)"', asked.text)
        assert token
        done = c.post(
            f"/jobs/deleted-{RUN}/delete",
            headers=BROWSER,
            data={"csrf_token": token.group(1), "confirmed": "1"},
            follow_redirects=False,
        )
        assert done.status_code == 303
        written = done.headers["X-Jobtrack-Lsn"]
        assert c.cookies.get("jobtrack_lsn") == written.replace("/", "-")
        after = c.get("/", params={"tab": "all", "search": "Replica check"})
        assert f"deleted-{RUN}" not in after.text
        assert "served by replica" in footer(after.text)
        assert lsn_number(fresh.replayed()) >= lsn_number(written)
        # The API: the position comes back in a header; sent with the next read, that
        # read sees the write (replay paused: on the primary, after the bounded wait).
        fresh.apply_delay(0)
        caught_up(fresh)
        fresh.pause_replay()
        api, hasty = dashboard(fresh, read_wait_s=0.2)
        try:
            gone = api.delete(f"/api/jobs/api-{RUN}")
            assert gone.status_code == 200
            api.cookies.clear()  # an API client keeps no cookie: only the header says it
            stale = api.get(f"/api/jobs/api-{RUN}")  # the paused replica still has it
            assert stale.status_code == 200
            lsn = {"X-Jobtrack-Lsn": gone.headers["X-Jobtrack-Lsn"]}
            assert api.get(f"/api/jobs/api-{RUN}", headers=lsn).status_code == 404
        finally:
            hasty.close()
    finally:
        store.close()


def test_a_replica_stopped_mid_test_falls_back_or_answers_503(
    fresh: StreamingPair, caplog: pytest.LogCaptureFixture
) -> None:
    c, store = dashboard(fresh)
    strict, strict_store = dashboard(fresh, read_fallback="error")
    try:
        store.write_batch(Batch([job("stopped")]))
        caught_up(fresh)
        assert "served by replica" in footer(c.get("/").text)
        assert strict.get("/api/jobs").status_code == 200
        fresh.stop_replica()
        with caplog.at_level(logging.WARNING, logger="jobtrack.store"):
            for _ in range(3):
                page = c.get("/", params={"tab": "all"})
                assert page.status_code == 200 and f"stopped-{RUN}" in page.text
                said = footer(page.text)
                assert f"served by the primary (127.0.0.1:{fresh.primary_port}/jobtrack)" in said
                assert f"replica 127.0.0.1:{fresh.replica_port}/jobtrack is down" in said
            refused = strict.get("/api/jobs")
            assert refused.status_code == 503
            assert "No replica can serve this read now" in refused.json()["detail"]
            assert "is down" in refused.json()["detail"]
        down = [r for r in caplog.records if "is down" in r.getMessage()]
        assert len(down) == 2, [r.getMessage() for r in down]  # once per store
        fresh.start_replica()
        wait_for(
            lambda: "served by replica" in footer(c.get("/").text), 20, message="back on replica"
        )
    finally:
        store.close()
        strict_store.close()


def test_the_live_stream_reads_a_change_once_the_replica_has_it(fresh: StreamingPair) -> None:
    config = Settings(
        database_url=fresh.primary_url,
        read_database_url=(fresh.replica_url,),
        read_wait_s=30,
    )
    store = open_store(config)
    writer = Store(fresh.primary_url)
    fresh.apply_delay(1.0)  # the replica has each change a second after the primary
    try:
        with (
            serve(create_app(store, config)) as base,
            httpx.stream("GET", f"{base}/api/stream", timeout=httpx.Timeout(30.0)) as response,
        ):
            lines = response.iter_lines()
            for line in lines:
                if line == ": connected":
                    break
            started = time.monotonic()
            writer.write_batch(Batch([job("streamed", JobStatus.FAILED)]))
            events = read_events(lines, lambda evs: any(e["id"] == f"streamed-{RUN}" for e in evs))
            lag_ms = (time.monotonic() - started) * 1000
        mine = [e for e in events if e["id"] == f"streamed-{RUN}"]
        assert mine[0]["status"] == "failed"  # read after the replica replayed it
        print(f"\nFIGURE stream via a replica (1 s apply delay), commit -> event: {lag_ms:.0f} ms")
    finally:
        store.close()
        writer.close()


def test_the_cli_reads_the_replica(fresh: StreamingPair) -> None:
    store = Store(fresh.primary_url)
    env = {
        "JOBTRACK_DATABASE_URL": fresh.primary_url,
        "JOBTRACK_READ_DATABASE_URL": fresh.replica_url,
    }
    try:
        store.write_batch(Batch([job("cli-seen")]))
        caught_up(fresh)
        fresh.pause_replay()
        store.write_batch(Batch([job("cli-unseen")]))
        runner = CliRunner()
        listed = runner.invoke(
            main, ["jobs", "ls", "--search", "Replica check cli", "--json"], env=env
        )
        assert listed.exit_code == 0, listed.output
        assert f"cli-seen-{RUN}" in listed.stdout and f"cli-unseen-{RUN}" not in listed.stdout
        shown = runner.invoke(main, ["jobs", "show", f"cli-unseen-{RUN}"], env=env)
        assert shown.exit_code != 0 and "no job with id" in shown.output
        on_primary = runner.invoke(
            main,
            ["jobs", "show", f"cli-unseen-{RUN}"],
            env={**env, "JOBTRACK_READ_DATABASE_URL": ""},
        )
        assert on_primary.exit_code == 0, on_primary.output
    finally:
        store.close()


RULES = """
[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/unused"
secret = "unused"

[[rules]]
name = "failures"
kind = "failed"
job_types = "alerting"
channels = "hook"
group_wait = "0s"
cooldown = "0s"
"""


def test_alert_rules_read_the_replica_and_report_a_job_once(fresh: StreamingPair) -> None:
    config = Settings(
        database_url=fresh.primary_url, read_database_url=(fresh.replica_url,), read_wait_s=0.2
    )
    store = open_store(config)

    def reported() -> set[str]:
        with store.engine.connect() as conn:
            found = conn.execute(
                text("SELECT job_id FROM jobtrack_alert_seen WHERE rule = 'failures'")
            )
            return set(found.scalars())

    try:
        store.write_batch(Batch([job("alerted", JobStatus.FAILED, job_type="alerting")]))
        caught_up(fresh)
        fresh.pause_replay()  # from now on the replica lags: what follows is the primary's
        store.write_batch(Batch([job("alerted-later", JobStatus.FAILED, job_type="alerting")]))
        runner = AlertRunner(store, load(text=RULES), config)
        first = runner.run_once()  # reads the replica: the later job is not there yet
        assert len(first.alerts) == 1 and reported() == {f"alerted-{RUN}"}
        # The next pass must see what the first wrote (the job it reported): the paused
        # replica has not replayed it, so after the bounded wait the pass reads the
        # primary, and reports the later job only, the first not twice.
        second = runner.run_once()
        assert len(second.alerts) == 1
        assert reported() == {f"alerted-{RUN}", f"alerted-later-{RUN}"}
    finally:
        store.close()
