"""jobtrack's web layer: the dashboard, the JSON API, the live stream and ``/metrics``,
in one ASGI app. Needs the ``web`` extra. ``create_app`` returns an app you can serve
(``jobtrack web``) or mount into your own."""

from __future__ import annotations

from .app import create_app
from .auth import Principal, Role, parse_tokens

__all__ = ["Principal", "Role", "create_app", "parse_tokens"]
