from __future__ import annotations

from pathlib import Path

import pytest

from jobtrack.errors import ConfigurationError, JobtrackError
from jobtrack.settings import Settings
from jobtrack.store import Store


def test_argument_beats_celery_conf_beats_environment() -> None:
    env = {"JOBTRACK_DATABASE_URL": "sqlite:///env.db", "JOBTRACK_FLUSH_INTERVAL_S": "2"}
    conf = {"jobtrack_database_url": "sqlite:///conf.db"}
    assert Settings.resolve(conf, env).database_url == "sqlite:///conf.db"
    assert Settings.resolve({}, env).database_url == "sqlite:///env.db"
    assert Settings.resolve(conf, env, database_url="sqlite:///arg.db").database_url == (
        "sqlite:///arg.db"
    )
    assert Settings.resolve({}, env).flush_interval_s == 2.0
    assert Settings.resolve({}, {}).database_url == "sqlite:///jobtrack.db"


def test_environment_kill_switch_wins() -> None:
    settings = Settings.resolve({"jobtrack_enabled": True}, {"JOBTRACK_ENABLED": "0"}, enabled=True)
    assert settings.enabled is False


def test_lists_and_booleans_from_text() -> None:
    s = Settings.resolve({}, {"JOBTRACK_REDACT_KEYS": "Pin, cvv", "JOBTRACK_TRACK_ALL": "no"})
    assert s.redact_keys == ("pin", "cvv")
    assert s.track_all is False


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"JOBTRACK_WRITE_MODE": "fast"}, "write_mode"),
        ({"JOBTRACK_FLUSH_INTERVAL_S": "-1"}, "flush_interval_s"),
        ({"JOBTRACK_FLUSH_MAX_JOBS": "many"}, "flush_max_jobs"),
        ({"JOBTRACK_ENABLED": "maybe"}, "enabled"),
        ({"JOBTRACK_DATABASE_URL": "oracle://u:pw@h/db"}, "supports PostgreSQL, MySQL"),
        ({"JOBTRACK_EXIT_FLUSH_TIMEOUT_S": "-1"}, "exit_flush_timeout_s"),
        ({"JOBTRACK_WEB_TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, "web_trusted_proxies"),
        ({"JOBTRACK_READ_FALLBACK": "ignore"}, "read_fallback"),
        ({"JOBTRACK_READ_WAIT_S": "-1"}, "read_wait_s"),
        ({"JOBTRACK_READ_MAX_LAG_S": "0"}, "read_max_lag_s"),
        ({"JOBTRACK_READ_DATABASE_URL": "sqlite:///copy.db"}, "streaming replicas"),
        (  # replicas of SQLite: there are none
            {"JOBTRACK_READ_DATABASE_URL": "postgresql://r/db"},
            "read_database_url",
        ),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as info:
        Settings.resolve({}, env)
    assert isinstance(info.value, JobtrackError) and isinstance(info.value, ValueError)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    env = {"JOBTRACK_WEB_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16,::1"}
    assert Settings.resolve({}, env).web_trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "::1")
    assert Settings.resolve({}, {}).web_trusted_proxies == ()


def test_read_replicas_from_text() -> None:
    s = Settings.resolve(
        {},
        {
            "JOBTRACK_DATABASE_URL": "postgresql://primary/jobs",
            "JOBTRACK_READ_DATABASE_URL": "postgresql://r1/jobs, postgresql://r2:5433/jobs",
            "JOBTRACK_READ_FALLBACK": "error",
        },
    )
    assert s.read_database_url == ("postgresql://r1/jobs", "postgresql://r2:5433/jobs")
    assert (s.read_fallback, s.read_wait_s, s.read_max_lag_s) == ("error", 2.0, 30.0)
    assert Settings().read_database_url == ()  # by default every read on database_url


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="flush_every"):
        Settings.resolve({}, {}, flush_every=3)


def test_an_unsupported_database_is_one_line_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.resolve({}, {}, database_url="oracle+oracledb://user:hunter2@db/jobs")
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_refused_with_what_to_use(url: str) -> None:
    """Each connection to one is a database of its own: the writer's thread would write
    where nothing reads (every write failed, "no such table", and was spooled)."""
    with pytest.raises(ConfigurationError) as info:
        Store(url)
    assert "database_url" in str(info.value) and "sqlite:///jobs.db" in str(info.value)


def test_a_sqlite_file_is_taken(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.ensure_schema()
    assert store.schema_revision() is not None
    store.close()
