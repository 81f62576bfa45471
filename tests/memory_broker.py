"""Celery's in-memory broker (kombu's ``memory://``), for in-process workers that start
and stop in every test: the same transport and state, with shorter waits.

An in-process worker runs Celery's blocking loop for transports without an event loop
(``synloop``): it drains the broker for up to 2 s before it looks for a shutdown, and
kombu's memory transport sleeps its ``polling_interval`` (1 s) between empty reads. So
each message waited up to a second to be picked up, and leaving ``start_worker`` took 3
to 4 s, in each of some forty tests. Here a drain given a timeout waits at most
``DRAIN_WAIT_S``, and an empty read sleeps ``polling_interval``: the loop sees a message
or a shutdown within a few hundredths of a second. Nothing else differs: the messages,
queues and acknowledgements are the memory transport's own.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, memory

__all__ = ["DRAIN_WAIT_S", "QuickMemoryTransport", "use_quick_memory"]

DRAIN_WAIT_S = 0.05


class QuickMemoryTransport(memory.Transport):
    polling_interval = 0.01

    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        if timeout is not None:  # None waits for a message, as it always did
            timeout = min(timeout, DRAIN_WAIT_S)
        return super().drain_events(connection, timeout=timeout)  # type: ignore[no-untyped-call]


def use_quick_memory() -> None:
    """``memory://`` names :class:`QuickMemoryTransport` in this process (the state is
    the memory transport's class-wide one, so apps on either share their queues)."""
    TRANSPORT_ALIASES["memory"] = f"{__name__}:QuickMemoryTransport"
