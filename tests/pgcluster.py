"""A PostgreSQL primary and its streaming replica, both the test's own: two clusters made
with ``initdb`` and ``pg_basebackup -R`` in a temporary folder, on free ports, never
touching the shared server. As root, the server programs (which refuse root) run as the
``postgres`` user. Replay can be paused, delayed (``recovery_min_apply_delay``) and the
replica stopped and started again."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

#: The database the tests use on the pair.
DATABASE = "jobtrack"


def server_bin() -> Path | None:
    """Where PostgreSQL's server programs are (``JOBTRACK_TEST_PG_BIN``, else the newest
    of Debian's /usr/lib/postgresql/*/bin, else ``pg_config --bindir``)."""
    given = os.environ.get("JOBTRACK_TEST_PG_BIN")
    if given:
        return Path(given)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name or 0),
    )
    if found:
        return Path(found[-1]).parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(out.stdout.strip())
    return folder if (folder / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StreamingPair:
    """A primary on one port and a hot standby streaming from it on another."""

    def __init__(self, bindir: Path) -> None:
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="jobtrack-pg-"))
        self.as_postgres = os.geteuid() == 0  # initdb and postgres refuse root
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.primary_port, self.replica_port = _free_port(), _free_port()
        self.primary_dir, self.replica_dir = self.root / "primary", self.root / "replica"

    # -- addresses ----------------------------------------------------------------------

    def url(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://root@127.0.0.1:{port}/{database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def replica_url(self) -> str:
        return self.url(self.replica_port)

    # -- lifecycle ----------------------------------------------------------------------

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")

    def start(self) -> StreamingPair:
        self._run("initdb", "-D", str(self.primary_dir), "-U", "root", "-A", "trust", "-N")
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.primary_port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nshared_buffers = 16MB\nmax_connections = 60\n"
                "max_wal_senders = 4\nwal_keep_size = 128MB\n"
            )
        self._pg_ctl(self.primary_dir, "start")
        with psycopg.connect(self.url(self.primary_port, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        self._run(
            "pg_basebackup",
            "-h", "127.0.0.1",
            "-p", str(self.primary_port),
            "-U", "root",
            "-D", str(self.replica_dir),
            "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        with (self.replica_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.replica_port}\nhot_standby = on\n")
        self.start_replica()
        return self

    def _pg_ctl(self, folder: Path, what: str, *extra: str) -> None:
        log = self.root / f"{folder.name}.log"
        self._run("pg_ctl", "-D", str(folder), "-l", str(log), "-w", "-t", "30", what, *extra)

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "start")

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "stop", "-m", "fast")

    def close(self) -> None:
        for folder in (self.replica_dir, self.primary_dir):
            if (folder / "postmaster.pid").exists():
                try:
                    self._pg_ctl(folder, "stop", "-m", "immediate")
                except RuntimeError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StreamingPair:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- replay -------------------------------------------------------------------------

    def on_replica(self, sql: str) -> object:
        with psycopg.connect(self.replica_url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]

    def pause_replay(self) -> None:
        """The replica stops applying WAL (it still receives it) until resumed."""
        self.on_replica("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.on_replica("SELECT pg_wal_replay_resume()")

    def apply_delay(self, seconds: float) -> None:
        """``recovery_min_apply_delay``: the replica applies each commit this long after
        the primary made it."""
        self.on_replica(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
        self.on_replica("SELECT pg_reload_conf()")

    def replayed(self) -> str:
        return str(self.on_replica("SELECT pg_last_wal_replay_lsn()::text"))

    def primary_lsn(self) -> str:
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def caught_up(self, timeout_s: float = 20.0) -> None:
        """Wait until the replica has replayed everything the primary has written."""
        target = _number(self.primary_lsn())
        deadline = time.monotonic() + timeout_s
        while _number(self.replayed()) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica did not catch up in {timeout_s} s")
            time.sleep(0.02)

    def reset(self) -> None:
        """Running, replaying at once, caught up: how each test finds the pair."""
        if not (self.replica_dir / "postmaster.pid").exists():
            self.start_replica()
        if self.on_replica("SELECT pg_is_wal_replay_paused()"):
            self.resume_replay()
        self.apply_delay(0)
        self.caught_up()


def _number(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)
