"""A local spool for batches the database could not take.

While the tracking database is unreachable the buffered writer keeps transitions in
memory; past ``buffer_max_jobs`` (or at shutdown) it writes them here instead, one file
per batch, and replays the files oldest first once the database answers, before anything
newer. Any process writing to the same database replays files left by a process that
died. A file is claimed by renaming it, so two processes never replay the same one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import Event, Item, ItemStatus, JobStatus, JobUpdate
from .store import Batch

__all__ = ["Spool"]

log = logging.getLogger("jobtrack.spool")

_UPDATE_TIMES = frozenset(f.name for f in dataclasses.fields(JobUpdate)
                          if "datetime" in str(f.type))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (JobStatus, ItemStatus)):
        return value.value
    raise TypeError(type(value).__name__)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class Spool:
    """Spool files for one tracking database, in ``directory``."""

    def __init__(self, directory: str | Path, database_url: str) -> None:
        self.directory = Path(directory)
        self.key = hashlib.sha256(database_url.encode()).hexdigest()[:16]

    def write(self, batch: Batch) -> Path:
        """Write ``batch`` to a new file (atomically); returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self.key}-{time.time_ns():020d}-{os.getpid()}.jsonl"
        data = {
            "updates": [dataclasses.asdict(u) for u in batch.updates],
            "events": [dataclasses.asdict(e) for e in batch.events],
            "items": [dataclasses.asdict(i) for i in batch.items],
        }
        tmp = self.directory / f".{name}.tmp"
        tmp.write_text(json.dumps(data, default=_default, ensure_ascii=False))
        path = self.directory / name
        tmp.rename(path)
        return path

    def pending(self) -> list[Path]:
        """Unclaimed files for this database that this process may replay, oldest
        first: its own, and those of processes that are gone (a live process replays its
        own files before its newer data, so nobody else may reorder them)."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(f"{self.key}-*.jsonl")
                      if _replayable_by_me(p))

    def claim(self, path: Path) -> Path | None:
        """Take a file for replay; None if another process took it first."""
        claimed = path.with_name(f".{path.name}.claimed-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        return claimed

    def release(self, claimed: Path) -> None:
        """Give a claimed file back (its replay failed)."""
        original = claimed.name[1:].rsplit(".claimed-", 1)[0]
        with contextlib.suppress(FileNotFoundError):
            claimed.rename(claimed.with_name(original))

    @staticmethod
    def read(path: Path) -> Batch:
        data = json.loads(path.read_text())
        updates = []
        for raw in data["updates"]:
            raw["status"] = JobStatus(raw["status"])
            for name in _UPDATE_TIMES:
                raw[name] = _time(raw[name])
            updates.append(JobUpdate(**raw))
        events = [Event(**{**raw, "status": JobStatus(raw["status"]),
                           "at": _time(raw["at"])}) for raw in data["events"]]
        items = [Item(**{**raw, "status": ItemStatus(raw["status"]),
                            "processed_at": _time(raw["processed_at"])})
                 for raw in data["items"]]
        return Batch(updates, events, items)


def _replayable_by_me(path: Path) -> bool:
    try:
        pid = int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True  # its writer is gone
    except PermissionError:
        return False  # alive, another user's
    return False
