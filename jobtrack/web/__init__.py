"""jobtrack's web layer: the JSON API (and, later, the dashboard). Needs the ``web``
extra. ``create_api`` returns an ASGI app you can serve or mount into your own."""

from __future__ import annotations

from .api import create_api, parse_tokens

__all__ = ["create_api", "parse_tokens"]
