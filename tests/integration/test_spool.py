"""Bounded memory during an outage: past buffer_max_jobs the buffer goes to a spool file,
replayed oldest first when the database returns; a writer closed during an outage spools
what it holds, and the next writer replays it. Real PostgreSQL and MariaDB behind a
cuttable proxy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobtrack.models import Event, JobStatus, JobUpdate, state_seq
from jobtrack.settings import Settings
from jobtrack.store import Store
from jobtrack.writer import BufferedWriter
from tests.conftest import pg_address
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The database server behind the proxy."""
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")
    return url


@pytest.fixture
def proxy(server_url: str) -> Iterator[CuttableProxy]:
    schema = Store(server_url)
    schema.ensure_schema()
    schema.close()
    with CuttableProxy(*pg_address(server_url)) as p:
        yield p


@pytest.fixture
def direct(server_url: str) -> Iterator[Store]:
    store = Store(server_url)
    yield store
    store.close()


def transition(job_id: str, status: JobStatus, percent: float | None = None) -> JobUpdate:
    now = datetime.now(UTC)
    return JobUpdate(
        id=job_id,
        status=status,
        state_seq=state_seq(status, 0),
        created_at=now,
        updated_at=now,
        progress_percent=percent,
    )


def writer_for(url: str, spool: Path) -> BufferedWriter:
    settings = Settings(
        database_url=url,
        buffer_max_jobs=5,
        spool_dir=str(spool),
        flush_interval_s=3600,
        connect_timeout_s=1,
    )
    return BufferedWriter(Store(url, connect_timeout_s=1), settings)


def test_spill_past_the_bound_and_replay_in_order(
    proxy: CuttableProxy, server_url: str, direct: Store, tmp_path: Path
) -> None:
    writer = writer_for(proxy.url(server_url), tmp_path)
    proxy.cut()
    ids = [f"spill-{n}-{tmp_path.name}" for n in range(12)]
    for job_id in ids:
        writer.update(
            transition(job_id, JobStatus.RUNNING, 10.0),
            Event(job_id, datetime.now(UTC), JobStatus.RUNNING, 0),
        )
    assert writer.flush() is False
    spooled = list(tmp_path.glob("*.jsonl"))
    assert len(spooled) == 1 and writer.pending() == 0  # memory freed
    # Newer data for the same jobs stays in memory and must win over the spooled one.
    for job_id in ids:
        writer.update(transition(job_id, JobStatus.COMPLETED, 100.0))
    proxy.restore()
    assert writer.flush() is True
    writer.store.close()
    for job_id in ids:
        job = direct.get_job(job_id)
        assert (job.status, job.progress_percent) == (JobStatus.COMPLETED, 100.0)
        assert [e.status for e in direct.list_events(job_id)] == [JobStatus.RUNNING]
    assert list(tmp_path.glob("*.jsonl")) == []


def test_close_during_outage_spools_and_next_writer_replays(
    proxy: CuttableProxy, server_url: str, direct: Store, tmp_path: Path
) -> None:
    first = writer_for(proxy.url(server_url), tmp_path)
    proxy.cut()
    job_id = f"closed-{tmp_path.name}"
    first.update(transition(job_id, JobStatus.FAILED))
    first.close(timeout_s=1)
    first.store.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1

    proxy.restore()
    second = writer_for(proxy.url(server_url), tmp_path)
    assert second.flush() is True  # its first flush looks for spooled data
    assert direct.get_job(job_id).status is JobStatus.FAILED
    assert list(tmp_path.glob("*.jsonl")) == []
    second.close()
    second.store.close()
