"""How ``jobtrack web`` serves the app: uvicorn, told whom to believe about clients.

* **Forwarded headers.** uvicorn believes ``X-Forwarded-For`` and ``X-Forwarded-Proto``
  from loopback by default, so behind no proxy any local process (or a request that
  reaches the server through a local forwarder) can name the client address it likes,
  and the failed-authentication limit, kept per address, counts nothing. Here they are
  believed only from the addresses and networks in ``web_trusted_proxies``; with none
  set, the client is the connection's peer, whatever the headers say.
* **Saying where it listens** happens once the socket is bound: on a port in use the
  server says why it stopped and never claims an address it does not serve.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from ..settings import Settings

__all__ = ["ListeningServer", "server_config"]


def server_config(
    asgi: Any, settings: Settings, *, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn's configuration for ``asgi``: forwarded headers believed only from
    ``settings.web_trusted_proxies`` (none: never)."""
    trusted = list(settings.web_trusted_proxies)
    return uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
    )


class ListeningServer(uvicorn.Server):
    """A uvicorn server that calls ``on_listening`` once its socket is bound and the
    app has started (not at all when either fails: uvicorn then logs why and exits)."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_listening()
