"""A local spool for batches the database could not take.

While the tracking database is unreachable the buffered writer keeps transitions in
memory; past ``buffer_max_jobs`` (or at shutdown) it writes them here instead, one file
per batch, and replays the files oldest first once the database answers, before anything
newer. Any process writing to the same database replays files left by a process that
died. A file is claimed by renaming it, so two processes never replay the same one.

Rows the database refuses for their data (after they were cleaned once more) go to the
``dead`` folder beside the spool files, with the reason; so does a spool file that cannot
be read. ``jobtrack spool`` lists them, replays them (after the cause is fixed) or
discards them. Nothing there blocks the rows behind it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .models import (
    EVENT_COLUMNS,
    Batch,
    Item,
    ItemStatus,
    JobStatus,
    JobUpdate,
    LogLine,
    Row,
    merge_row,
    rows_in_order,
)
from .payload import Packed, safe_repr, unpack

__all__ = ["DeadLetter", "Spool"]

log = logging.getLogger("jobtrack.spool")

_UPDATE_TIMES = frozenset(
    f.name for f in dataclasses.fields(JobUpdate) if "datetime" in str(f.type)
)
_EVENT_TIMES = ("at", "started_at")


def _default(value: Any) -> Any:
    if type(value) is Packed:
        return unpack(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (JobStatus, ItemStatus)):
        return value.value
    return safe_repr(value)  # a spool file must always be writable


def _encode(batch: Batch, **extra: Any) -> str:
    """JSON text of a batch. ASCII-escaped: a lone surrogate survives the round trip."""
    data = {
        **extra,
        # Every column named (a row's missing ones as null), as files always had them; a
        # row holding an earlier run's rows as those rows, then itself (read back as one).
        "updates": [
            {name: row.get(name) for name in JobUpdate.COLUMNS}
            for merged in batch.updates
            for row in rows_in_order(merged)
        ],
        "events": [dict(zip(EVENT_COLUMNS, e, strict=True)) for e in batch.events],
        "items": [dataclasses.asdict(i) for i in batch.items],
        "logs": [dataclasses.asdict(line) for line in batch.logs],
    }
    return json.dumps(data, default=_default, ensure_ascii=True)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A batch the database refused (or a spool file that could not be read)."""

    path: Path
    reason: str
    jobs: int
    items: int
    events: int
    at: datetime


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class Spool:
    """Spool files for one tracking database, in ``directory``."""

    def __init__(self, directory: str | Path, database_url: str) -> None:
        self.directory = Path(directory)
        self.key = hashlib.sha256(database_url.encode()).hexdigest()[:16]

    @property
    def dead_directory(self) -> Path:
        return self.directory / "dead"

    def _name(self) -> str:
        return f"{self.key}-{time.time_ns():020d}-{os.getpid()}.jsonl"

    @staticmethod
    def _write_atomically(path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="ascii")
        tmp.rename(path)
        return path

    def write(self, batch: Batch) -> Path:
        """Write ``batch`` to a new file (atomically); returns its path."""
        return self._write_atomically(self.directory / self._name(), _encode(batch))

    def put_back(self, claimed: Path, left: Batch, *, whole: bool) -> None:
        """A claimed file whose replay stopped part-way: what is ``left`` goes back under
        the file's own name (so it keeps its place in the order)."""
        if whole:
            self.release(claimed)
            return
        original = claimed.with_name(claimed.name[1:].rsplit(".claimed-", 1)[0])
        self._write_atomically(original, _encode(left))
        claimed.unlink()

    def dead_letter(self, batch: Batch, reason: str) -> Path:
        """Keep a refused batch, with the reason, in the dead-letter folder."""
        return self._write_atomically(
            self.dead_directory / self._name(), _encode(batch, reason=reason)
        )

    def bury(self, claimed: Path, reason: str) -> Path:
        """Move a spool file that cannot be read to the dead-letter folder as it is."""
        target = self.dead_directory / (self._name() + ".raw")
        target.parent.mkdir(parents=True, exist_ok=True)
        claimed.rename(target)
        target.with_suffix(".reason").write_text(reason)
        return target

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter of this database, oldest first."""
        found: list[DeadLetter] = []
        if not self.dead_directory.is_dir():
            return found
        for path in sorted(self.dead_directory.glob(f"{self.key}-*.jsonl*")):
            if path.suffix == ".reason":
                continue
            at = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            try:
                data = json.loads(path.read_text())
                found.append(
                    DeadLetter(
                        path,
                        str(data.get("reason", "")),
                        len({row["id"] for row in data["updates"]}),  # a job's runs: one
                        len(data["items"]),
                        len(data["events"]),
                        at,
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                reason_file = path.with_suffix(".reason")
                reason = reason_file.read_text() if reason_file.exists() else "unreadable"
                found.append(DeadLetter(path, reason, 0, 0, 0, at))
        return found

    def discard(self, letter: DeadLetter) -> None:
        letter.path.unlink(missing_ok=True)
        letter.path.with_suffix(".reason").unlink(missing_ok=True)

    def pending(self) -> list[Path]:
        """Unclaimed files for this database that this process may replay, oldest
        first: its own, and those of processes that are gone (a live process replays its
        own files before its newer data, so nobody else may reorder them)."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob(f"{self.key}-*.jsonl") if _replayable_by_me(p))

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
        data = json.loads(path.read_text(encoding="utf-8"))
        updates: list[Row] = []
        by_id: dict[str, Row] = {}
        for raw in data["updates"]:
            unknown = set(raw) - set(JobUpdate.COLUMNS)
            if unknown:
                raise ValueError(f"unknown job columns {sorted(unknown)}")
            row = {name: value for name, value in raw.items() if value is not None}
            row["status"] = JobStatus(row["status"]).value
            for name in _UPDATE_TIMES & row.keys():
                row[name] = _time(row[name])
            earlier = by_id.get(row["id"])
            if earlier is None:
                updates.append(by_id.setdefault(row["id"], row))
            else:  # a later run's row, kept apart from the earlier one's as before
                merge_row(earlier, row)
        events = []
        for raw in data["events"]:  # (files from before folded attempts have no started_at)
            JobStatus(raw["status"])
            for name in _EVENT_TIMES:
                raw[name] = _time(raw.get(name))
            events.append(tuple(raw.get(name) for name in EVENT_COLUMNS))
        items = [
            Item(
                **{
                    **raw,
                    "status": ItemStatus(raw["status"]),
                    "processed_at": _time(raw["processed_at"]),
                }
            )
            for raw in data["items"]
        ]
        logs = [  # (files from before log capture have none)
            LogLine(**{**raw, "at": _time(raw["at"])}) for raw in data.get("logs", ())
        ]
        return Batch(updates, events, items, logs)


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
