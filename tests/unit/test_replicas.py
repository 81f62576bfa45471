"""The replica routing's pieces that need no server: WAL positions, how a route is told
in the footer, and a policy that refuses an unknown fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jobtrack.store.replicas import ReadRoute, ReplicaPolicy, lsn_number, lsn_text, server_name


@pytest.mark.parametrize(
    ("text", "number"),
    [("0/0", 0), ("0/3000000", 0x3000000), ("16/B374D848", (0x16 << 32) + 0xB374D848)],
)
def test_wal_positions_read_and_written_as_postgresql_spells_them(text: str, number: int) -> None:
    assert lsn_number(text) == number
    assert lsn_text(number) == text
    assert lsn_number(text.lower()) == number


@pytest.mark.parametrize("bad", ["", "16", "/1", "1/", "x/1", "1/2/3", "123456789/0", "0-1"])
def test_anything_else_is_not_a_position(bad: str) -> None:
    with pytest.raises(ValueError):
        lsn_number(bad)


def test_a_route_says_which_server_served_and_how_far_behind() -> None:
    assert ReadRoute().describe() is None  # nothing read yet
    primary = ReadRoute(server="db1:5432/jobs", note="replica db2:5432/jobs is down (refused)")
    assert (
        primary.describe() == "the primary (db1:5432/jobs): replica db2:5432/jobs is down (refused)"
    )
    assert server_name("postgresql+psycopg://u:secret@db2:6432/jobs") == "db2:6432/jobs"
    assert "secret" not in server_name("postgresql://u:secret@db2/jobs")


def test_a_policy_takes_primary_or_error_only() -> None:
    assert ReplicaPolicy(("postgresql://r/db",), fallback="error").fallback == "error"
    with pytest.raises(ValueError, match="fallback"):
        ReplicaPolicy(("postgresql://r/db",), fallback="replica")


def test_an_app_over_a_store_without_the_replicas_its_settings_name_says_so(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from jobtrack.settings import Settings
    from jobtrack.store import Store
    from jobtrack.web import create_app

    settings = Settings(
        database_url="postgresql://jobs@db1/jobs", read_database_url=("postgresql://jobs@db2/jobs",)
    )
    store = Store(f"sqlite:///{tmp_path / 'unused.db'}", create_tables=False)
    with caplog.at_level(logging.WARNING, logger="jobtrack.web"):
        create_app(store, settings)
    assert any("has no replicas" in r.getMessage() for r in caplog.records)
    store.close()
