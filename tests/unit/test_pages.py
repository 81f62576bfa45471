"""The dashboard's formatting: relative times and the tabs' (capped) counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtrack.models import Count
from jobtrack.web.pages import COUNT_CAP, TABS, _tab_count, ago

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "just now"),
        (1.9, "just now"),
        (-1, "just now"),
        (2, "2 seconds ago"),
        (59, "59 seconds ago"),
        (60, "1 minute ago"),
        (150, "2 minutes ago"),
        (3600, "1 hour ago"),
        (2 * 86400 + 5, "2 days ago"),
        (-300, "in 5 minutes"),
    ],
)
def test_ago(seconds: float, shown: str) -> None:
    assert ago(NOW - timedelta(seconds=seconds), NOW) == shown
    assert ago(None) == ""


def test_tab_counts_sum_statuses_and_say_when_capped() -> None:
    def shown(counts: dict[str, Count], tab: str) -> str:
        return str(_tab_count(counts, TABS[tab]))

    assert shown({"running": Count(3), "retrying": Count(2)}, "running") == "5"
    assert shown({}, "queued") == "0"
    assert shown({"failed": Count(1234), "lost": Count(1)}, "failed") == "1,235"
    over = {"failed": Count(COUNT_CAP, exact=False), "lost": Count(2)}  # more than the cap
    assert shown(over, "failed") == f"{COUNT_CAP + 2:,}+"
    assert not _tab_count(over, TABS["failed"]).exact


def test_estimated_tab_counts_are_marked_and_rounded() -> None:
    rough = {"failed": Count(84_707, exact=False, estimated=True), "lost": Count(12)}
    count = _tab_count(rough, TABS["failed"])
    assert str(count) == "~85,000"
    assert count.estimated and not count.exact
    few = {"completed": Count(37, exact=False, estimated=True)}
    assert str(_tab_count(few, TABS["completed"])) == "~37"
    none = {"completed": Count(0, exact=False, estimated=True)}
    assert str(_tab_count(none, TABS["completed"])) == "~0"
