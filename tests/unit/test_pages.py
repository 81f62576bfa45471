"""The dashboard's formatting: relative times and the tabs' (capped) counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
    assert _tab_count({"running": 3, "retrying": 2}, TABS["running"]) == "5"
    assert _tab_count({}, TABS["queued"]) == "0"
    assert _tab_count({"failed": 1234, "lost": 1}, TABS["failed"]) == "1,235"
    over = {"failed": COUNT_CAP + 1, "lost": 2}  # the store's "more than the cap"
    assert _tab_count(over, TABS["failed"]) == f"{COUNT_CAP + 2:,}+"
