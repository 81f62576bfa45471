"""What jobtrack can ask a broker directly: how many messages wait in a queue, and
whether given messages are in it.

* :func:`queue_depths`: the Workers & Queues view's depth of each queue, by a passive
  declare (Kombu's Redis transport counts its lists, RabbitMQ answers its count; it
  creates nothing).
* :func:`find_messages`: a bulk action resuming after its run died, for the one batch it
  was publishing when it died: a message found here was sent, so it is not sent again.
* :func:`vanished_messages`: the reaper, for jobs still ``pending`` long after they were
  queued: a job whose message is in no queue and held by no worker (purged, or dropped
  as expired) will never run.

Redis is read (the queue lists and the hash of messages delivered but not acknowledged,
as Kombu's Redis transport keeps them); other brokers answer None ("cannot tell") and the
caller takes the safe way (see :mod:`jobtrack.actions` and :mod:`jobtrack.maintenance`).
RabbitMQ offers no way to read a queue without taking its messages, nor those a consumer
holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["find_messages", "queue_depths", "vanished_messages"]

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


class _TooLong(Exception):
    """A queue holds more messages than the caller's bound."""


def _queued(channel: Any, queues: Iterable[str], wanted: set[str], scan_limit: int) -> set[str]:
    """Of ``wanted``, the ids with a message in the lists of ``queues`` (every priority
    step). Raises :class:`_TooLong` past ``scan_limit`` messages in one list."""
    client = channel.client
    found: set[str] = set()
    keys = {channel._q_for_pri(queue, step) for queue in queues for step in channel.priority_steps}
    for key in keys:
        length = int(client.llen(key))
        if length > scan_limit:
            raise _TooLong(key)
        for start in range(0, length, _CHUNK):
            for raw in client.lrange(key, start, start + _CHUNK - 1):
                if (job_id := _id_of(raw)) in wanted:
                    found.add(job_id)
    return found


def _held(channel: Any, wanted: set[str]) -> set[str]:
    """Of ``wanted``, the ids delivered to a worker and not acknowledged yet."""
    return {
        job_id
        for raw in channel.client.hvals(channel.unacked_key)
        if (job_id := _id_of(raw)) in wanted
    }


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
            return _queued(channel, set(queues), wanted, scan_limit) | _held(channel, wanted)
    except _TooLong:
        return None
    except Exception as exc:  # a broker we cannot read: the caller takes the safe way
        log.warning(
            "could not read the broker's queues (%s)",
            exc,
            extra={"job_id": None, "action": "find messages"},
        )
        return None


def vanished_messages(
    app: Any, queued: Mapping[str, str], *, scan_limit: int = 100_000
) -> set[str] | None:
    """Of ``queued`` (task id → the queue its job names), the ids whose message is in
    no queue and held by no worker. Only queues ``app`` declares (``app.amqp.queues``:
    its default queue, ``task_queues``, those it routed to) are read: an id naming
    another (a routing key of an exchange that is no queue's name, say) is never
    returned, nor one whose queue holds more than ``scan_limit`` messages. None when
    the broker cannot be read this way (not Redis, an error)."""
    known = set(app.amqp.queues)
    by_queue: dict[str, set[str]] = {}
    for job_id, queue in queued.items():
        if queue in known:
            by_queue.setdefault(queue, set()).add(job_id)
    if not by_queue:
        return set()
    try:
        with app.connection_for_write() as conn:
            if conn.transport.driver_type != "redis":
                return None
            channel = conn.default_channel
            # Held messages are read before and after the queues: one a worker takes
            # from its queue, or gives back to it (a warm shutdown), while the queues
            # are read is found in one place or the other.
            held = _held(channel, set().union(*by_queue.values()))
            missing: set[str] = set()
            for queue, wanted in by_queue.items():
                try:
                    missing |= wanted - held - _queued(channel, [queue], wanted, scan_limit)
                except _TooLong:
                    continue  # cannot tell for this queue's jobs
            return missing - _held(channel, missing) if missing else missing
    except Exception as exc:  # a broker we cannot read: nothing is taken for gone
        log.warning(
            "could not read the broker's queues (%s)",
            exc,
            extra={"job_id": None, "action": "vanished messages"},
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
