"""Prometheus metrics, read from the tracking database at scrape time.

Reading from the table, not from process memory, means one exporter covers any number of
workers and hosts, and a restart loses nothing. Needs the ``prometheus`` extra
(``pip install '.[prometheus]'``). Served by ``jobtrack metrics --port``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .models import JobStatus
from .store import Store

__all__ = ["DURATION_BUCKETS_S", "JobtrackCollector"]

#: Upper bounds of the duration histogram, in seconds.
DURATION_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class JobtrackCollector(Collector):
    """Metrics over the ``jobs`` table.

    ``window_s`` bounds the duration histogram and the failure ratio to recent jobs;
    ``stale_after_s`` is the heartbeat age past which a running job counts as stuck.
    """

    def __init__(
        self, store: Store, *, window_s: float = 3600.0, stale_after_s: float = 120.0
    ) -> None:
        self.store = store
        self.window_s = window_s
        self.stale_after_s = stale_after_s

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        snap = self.store.metrics_snapshot(
            since=now - timedelta(seconds=self.window_s),
            stale_before=now - timedelta(seconds=self.stale_after_s),
            buckets_s=DURATION_BUCKETS_S,
        )
        jobs = GaugeMetricFamily(
            "jobtrack_jobs", "Jobs in the table, by status.", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], snap.by_status.get(status.value, 0))
        yield jobs

        finished = CounterMetricFamily(
            "jobtrack_jobs_finished",
            "Finished jobs kept in the table, by task, type and "
            "status (falls when old rows are pruned).",
            labels=["task", "job_type", "status"],
        )
        for task, job_type, finished_as, count in snap.finished:
            finished.add_metric([task or "", job_type or "", finished_as], count)
        yield finished

        durations = HistogramMetricFamily(
            "jobtrack_job_duration_seconds",
            f"Run time of jobs completed in the last {self.window_s:g} s, by task.",
            labels=["task"],
        )
        for task, count, total_s, cumulative in snap.durations:
            buckets = [(f"{b:g}", n) for b, n in zip(DURATION_BUCKETS_S, cumulative, strict=True)]
            buckets.append(("+Inf", count))
            durations.add_metric([task or ""], buckets, total_s)
        yield durations

        done = sum(snap.window.get(s, 0) for s in ("completed", "failed"))
        ratio = GaugeMetricFamily(
            "jobtrack_failure_ratio",
            f"Failed / (completed + failed) over the last {self.window_s:g} s (0 when none).",
        )
        ratio.add_metric([], snap.window.get("failed", 0) / done if done else 0.0)
        yield ratio

        yield GaugeMetricFamily(
            "jobtrack_stuck_jobs",
            f"Running jobs without a heartbeat for more than {self.stale_after_s:g} s.",
            value=snap.stale_running,
        )
        age = (now - snap.oldest_pending).total_seconds() if snap.oldest_pending else 0.0
        yield GaugeMetricFamily(
            "jobtrack_oldest_pending_seconds",
            "Age of the oldest pending job (0 when none).",
            value=age,
        )
