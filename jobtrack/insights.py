"""Trends per task: throughput, failure rate, run time and queue wait over a window.

What the Insights page, ``GET /api/insights`` and ``jobtrack stats --by task`` show:
for each task name (or job type), per bucket of the window, how many jobs finished
(completed, failed), the failure rate, run time p50/p95 (``duration_ms``) and queue wait
p50/p95 (``started_at - created_at``). Jobs count in the bucket they finished in. The
store reads only the window, by the ``(status, completed_at)`` index (see
docs/performance.md for the figure on a million rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import JobtrackError
from .models import Trend, as_utc
from .store import Store

__all__ = [
    "MAX_BUCKETS",
    "MAX_WINDOW",
    "MIN_BUCKET",
    "BadWindow",
    "Report",
    "Series",
    "parse_duration",
    "report",
    "window",
]

#: The bounds of a window and of its buckets (422 / a usage error outside them).
MIN_BUCKET = timedelta(minutes=1)
MAX_BUCKET = timedelta(days=7)
MAX_WINDOW = timedelta(days=90)
MAX_BUCKETS = 500
BY = ("task", "type")
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadWindow(JobtrackError, ValueError):
    """A window or bucket outside the allowed range (the message says which range)."""


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w``."""
    found = _DURATION.match(text or "")
    if found is None:
        raise BadWindow(f"{text!r}: a duration like 30m, 1h, 7d")
    return timedelta(seconds=int(found[1]) * _UNITS[found[2]])


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    bucket: timedelta

    @property
    def bucket_s(self) -> int:
        return int(self.bucket.total_seconds())

    def starts(self) -> list[datetime]:
        """Every bucket's beginning, oldest first."""
        count = -(-int((self.until - self.since).total_seconds()) // self.bucket_s)
        return [self.since + self.bucket * n for n in range(count)]


def window(since: str = "24h", every: str = "1h", *, now: datetime | None = None) -> Window:
    """The window ``since`` (a duration back from now, or an ISO timestamp) until now, in
    buckets of ``every``; :class:`BadWindow` says the allowed range when it is out."""
    now = now or datetime.now(UTC)
    try:
        start = now - parse_duration(since)
    except OverflowError:  # a duration reaching back before the year 1
        raise BadWindow(
            f"since {since!r}: the window must be between 1s and {MAX_WINDOW.days}d"
        ) from None
    except BadWindow:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise BadWindow(
                f"since {since!r}: a duration like 24h or 7d, or an ISO timestamp"
            ) from None
        try:
            start = as_utc(moment)
        except ValueError as exc:
            raise BadWindow(f"since {since!r}: {exc}") from None
    bucket = parse_duration(every)
    span = now - start
    if not timedelta(0) < span <= MAX_WINDOW:
        raise BadWindow(f"since {since!r}: the window must be between 1s and {MAX_WINDOW.days}d")
    if not MIN_BUCKET <= bucket <= MAX_BUCKET:
        raise BadWindow(f"every {every!r}: a bucket must be between 1m and {MAX_BUCKET.days}d")
    if span / bucket > MAX_BUCKETS:
        raise BadWindow(
            f"every {every!r} over since {since!r} makes more than {MAX_BUCKETS} buckets: "
            "choose a larger bucket or a shorter window"
        )
    # Buckets line up with the clock (whole hours for 1h), the last one ends now.
    step = int(bucket.total_seconds())
    aligned = datetime.fromtimestamp(start.timestamp() // step * step, UTC)
    return Window(aligned, now, bucket)


@dataclass
class Series:
    """One task's (or type's) figures: every bucket of the window, and the whole of it."""

    key: str
    buckets: list[Trend] = field(default_factory=list)
    total: Trend | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "total": _trend_json(self.total) if self.total else None,
            "buckets": [_trend_json(t) for t in self.buckets],
        }


@dataclass
class Report:
    by: str
    window: Window
    series: list[Series]

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.window.since.isoformat(),
            "until": self.window.until.isoformat(),
            "bucket_s": self.window.bucket_s,
            "series": [s.to_json() for s in self.series],
        }


def _trend_json(t: Trend) -> dict[str, Any]:
    return {
        "start": t.start.isoformat() if t.start else None,
        "completed": t.completed,
        "failed": t.failed,
        "failure_rate": t.failure_rate,
        "run_p50_ms": t.run_p50_ms,
        "run_p95_ms": t.run_p95_ms,
        "wait_p50_ms": t.wait_p50_ms,
        "wait_p95_ms": t.wait_p95_ms,
    }


def report(
    store: Store,
    span: Window,
    *,
    by: str = "task",
    owner_id: str | None = None,
    key: str | None = None,
    limit: int = 50,
) -> Report:
    """The figures of ``span`` per task (``by="task"``) or job type (``"type"``), the
    busiest ``limit`` keys first; every bucket present (empty ones zero)."""
    if by not in BY:
        raise BadWindow(f"by {by!r}: one of {', '.join(BY)}")
    found = store.insights.trends(
        since=span.since,
        until=span.until,
        bucket_s=span.bucket_s,
        by=by,
        owner_id=owner_id,
        key=key,
    )
    series: dict[str, Series] = {}
    for trend in found:
        one = series.setdefault(trend.key, Series(trend.key))
        if trend.start is None:
            one.total = trend
        else:
            one.buckets.append(trend)
    starts = span.starts()
    for one in series.values():
        have = {t.start: t for t in one.buckets}
        one.buckets = [have.get(start) or Trend(one.key, start) for start in starts]
    busiest = sorted(series.values(), key=lambda s: (-(s.total.finished if s.total else 0), s.key))
    return Report(by, span, busiest[:limit])
