"""What jobtrack can ask a broker directly: whether messages are in it.

Only a bulk action resuming after its run died needs this, for the one batch it was
publishing when it died: a message found here was sent, so it is not sent again. Redis
is read (the queue lists and the hash of messages delivered but not acknowledged, as
Kombu's Redis transport keeps them); other brokers answer None ("cannot tell") and the
caller takes the safe way (see :mod:`jobtrack.actions`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["find_messages"]

log = logging.getLogger("jobtrack.brokers")

#: Messages read per round trip.
_CHUNK = 1000


def _id_of(raw: Any) -> str | None:
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries: [message, exchange, routing key]
            message = message[0]
        found = (message.get("headers") or {}).get("id")
    except (ValueError, TypeError, AttributeError, IndexError):
        return None
    return found if isinstance(found, str) else None


def find_messages(
    app: Any, queues: Iterable[str], ids: Iterable[str], *, scan_limit: int = 1_000_000
) -> set[str] | None:
    """Which of the task ids ``ids`` have a message waiting in ``queues`` (or delivered
    to a worker and not acknowledged yet). None when the broker cannot be read this way
    (not Redis, an error) or a queue holds more than ``scan_limit`` messages."""
    wanted = set(ids)
    if not wanted:
        return set()
    try:
        with app.connection_for_write() as conn:
            if conn.transport.driver_type != "redis":
                return None
            channel = conn.default_channel
            client = channel.client
            found: set[str] = set()
            keys = {
                channel._q_for_pri(queue, step)
                for queue in set(queues)
                for step in channel.priority_steps
            }
            for key in keys:
                length = int(client.llen(key))
                if length > scan_limit:
                    return None
                for start in range(0, length, _CHUNK):
                    for raw in client.lrange(key, start, start + _CHUNK - 1):
                        if (job_id := _id_of(raw)) in wanted:
                            found.add(job_id)
            for raw in client.hvals(channel.unacked_key):
                if (job_id := _id_of(raw)) in wanted:
                    found.add(job_id)
            return found
    except Exception as exc:  # a broker we cannot read: the caller takes the safe way
        log.warning(
            "could not read the broker's queues (%s)",
            exc,
            extra={"job_id": None, "action": "find messages"},
        )
        return None
