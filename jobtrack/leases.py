"""Leases held by a process: who may do a chore or run an action now.

A lease row (``jobtrack_leases``) names its holder as ``host:pid:thread``. A holder that
is a process of this host and no longer runs (killed) gives its lease up at once, not
when it expires: a killed run is resumed, or the next alert pass runs, right away.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from .store import Store

__all__ = ["holder_id", "release", "take"]

log = logging.getLogger("jobtrack.leases")


def holder_id() -> str:
    """This thread of this process, as a lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _gone(holder: str) -> bool:
    """Whether ``holder`` is a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def take(store: Store, name: str, holder: str, ttl_s: float) -> bool:
    """Take (or keep) the lease ``name``: free, expired, held by ``holder`` already, or
    held by a process of this host that is gone."""
    if store.leases.take(name, holder, ttl_s):
        return True
    held = store.leases.holder(name)
    if held is None or not _gone(held[0]):
        return False
    log.warning(
        "taking over the lease %s from %s (that process is gone)",
        name,
        held[0],
        extra={"job_id": None, "action": "lease"},
    )
    return store.leases.take_over(name, held[0], holder, ttl_s)


def release(store: Store, name: str, holder: str) -> None:
    """Give the lease up (if ``holder`` still holds it)."""
    store.leases.release(name, holder)
