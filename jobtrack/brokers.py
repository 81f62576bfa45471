"""What jobtrack can ask a broker directly: how many messages wait in a queue, and
whether given messages are in it.

* :func:`queue_depths`: the Workers & Queues view's depth of each queue, by a passive
  declare (Kombu's Redis transport counts its lists, RabbitMQ answers its count; it
  creates nothing).
* :func:`find_messages`: only a bulk action resuming after its run died needs this, for
  the one batch it was publishing when it died: a message found here was sent, so it is
  not sent again. Redis is read (the queue lists and the hash of messages delivered but
  not acknowledged, as Kombu's Redis transport keeps them); other brokers answer None
  ("cannot tell") and the caller takes the safe way (see :mod:`jobtrack.actions`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["find_messages", "queue_depths"]

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


def queue_depths(app: Any, queues: Iterable[str]) -> dict[str, int | None]:
    """How many messages wait in each queue, as the broker says (a passive declare); 0
    for a queue the broker does not have (nothing was ever sent to it, or Redis holds
    no list for it: it is empty), None where the broker could not be asked."""
    names = sorted(set(queues))
    depths: dict[str, int | None] = dict.fromkeys(names)
    try:
        with app.connection_for_read() as conn:
            for name in names:
                channel = conn.channel()
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True)[1])
                except conn.channel_errors as exc:  # 404: no such queue, nothing in it
                    if "NOT_FOUND" in str(exc) or getattr(exc, "code", None) == 404:
                        depths[name] = 0
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
    except Exception as exc:  # a broker we cannot reach: the view says "unknown"
        log.warning(
            "could not read the queues' depths (%s)",
            exc,
            extra={"job_id": None, "action": "queue depths"},
        )
    return depths
