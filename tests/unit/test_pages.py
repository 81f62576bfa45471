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


def test_a_traceback_folds_library_frames_and_keeps_the_tasks_own_open() -> None:
    from jobtrack.web.tracebacks import fold

    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/venv/lib/python3.12/site-packages/celery/app/trace.py", line 1, in t',
            "    R = retval = fun(*args, **kwargs)",
            "                 ^^^^^^^^^^^^^^^^^^^^",
            '  File "/venv/lib/python3.12/site-packages/kombu/x.py", line 2, in k',
            "    k()",
            '  File "/srv/app/billing.py", line 40, in charge',
            "    raise GatewayError(code)",
            '  File "/usr/lib/python3.12/socket.py", line 9, in connect',
            "    pass",
            "billing.GatewayError: 402",
        ]
    )
    runs = fold(text)
    assert [(r.library, r.frames) for r in runs] == [
        (False, 0),
        (True, 2),
        (False, 1),
        (True, 1),
        (False, 0),
    ]
    assert runs[1].summary == "2 library frames (celery, kombu)"
    assert runs[3].summary == "1 library frame (python)"
    assert runs[2].text.endswith("raise GatewayError(code)")
    assert "\n".join(r.text for r in runs) == text  # nothing lost, nothing reordered


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/jobs/abc?item_status=error", "/jobs/abc?item_status=error"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/jobs/a\nSet-Cookie: x", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_sign_in_goes_back_only_to_a_page_of_its_own(given: str | None, kept: str) -> None:
    from jobtrack.web.pages import safe_next

    assert safe_next(given) == kept
