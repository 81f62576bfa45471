"""Who is calling, and whether they may: tokens, dashboard sessions, CSRF, rate limits.

* **Bearer tokens** (``web_tokens``), each with a role (``viewer`` reads, ``operator``
  also retries and cancels) and optionally an owner id. A token bound to an owner sees
  only that owner's jobs.
* **Dashboard sessions:** the login form takes a token and sets an HttpOnly,
  SameSite=Strict cookie holding a keyed digest of it (not the token itself). Digests are
  derived from the configured tokens, so sessions survive restarts, work across server
  processes, and end when their token is removed.
* **No tokens configured:** only loopback clients are served, as operators, and only
  under a loopback host name (``localhost``, ``127.0.0.1``, ``[::1]``), which stops a
  DNS-rebinding page from reaching the server through the visitor's browser.
* **CSRF:** a request that changes state and is authenticated by something the browser
  sends on its own (the session cookie, or being on loopback) must not come from another
  site (``Sec-Fetch-Site``/``Origin``) and, from a browser, must carry the token of the
  ``jobtrack_csrf`` cookie in a form field or the ``X-CSRF-Token`` header (double
  submit). Bearer-token requests are exempt: browsers never attach those by themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from enum import Enum

from fastapi import HTTPException, Request
from starlette.responses import Response

from ..errors import ConfigurationError
from ..settings import Settings

__all__ = ["Auth", "Principal", "Role", "parse_tokens"]

LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SESSION_COOKIE = "jobtrack_session"
CSRF_COOKIE = "jobtrack_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a role, and the owner id a token is bound to (if any)."""

    name: str
    role: Role
    owner_id: str | None = None

    @property
    def may_act(self) -> bool:
        return self.role is Role.OPERATOR


def parse_tokens(text: str) -> dict[str, Principal]:
    """``token=role`` or ``token=role:owner_id``, comma-separated."""
    tokens: dict[str, Principal] = {}
    for n, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        token, _, grant = part.partition("=")
        role, _, owner = grant.partition(":")
        if not token or role not in (r.value for r in Role):
            raise ConfigurationError("web_tokens", f"entry {n + 1}",
                                     "token=viewer|operator[:owner_id]")
        tokens[token] = Principal(f"token {n + 1}", Role(role), owner or None)
    return tokens


def _session_digest(token: str) -> str:
    return hmac.new(token.encode(), b"jobtrack dashboard session", hashlib.sha256).hexdigest()


class _RateLimiter:
    """A fixed one-minute window per key; small and good enough for one process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def allow(self, key: str) -> bool:
        minute = int(time.monotonic() // 60)
        with self._lock:
            if len(self._windows) > 10_000:  # forget old windows of one-off clients
                self._windows = {k: v for k, v in self._windows.items() if v[0] == minute}
            window, count = self._windows.get(key, (minute, 0))
            if window != minute:
                window, count = minute, 0
            self._windows[key] = (window, count + 1)
            return count + 1 <= self.per_minute


class Auth:
    """Resolves the caller of a request; raises ``HTTPException`` when refused."""

    def __init__(self, settings: Settings) -> None:
        self.tokens = parse_tokens(settings.web_tokens)
        self._sessions = {_session_digest(t): p for t, p in self.tokens.items()}
        self._limiter = _RateLimiter(settings.web_rate_limit_per_min)

    @property
    def open_on_loopback(self) -> bool:
        """True when no tokens are configured (loopback clients need no login)."""
        return not self.tokens

    def login(self, token: str) -> str | None:
        """The session cookie value for a configured token, else None."""
        return _session_digest(token) if token in self.tokens else None

    def identify(self, request: Request) -> tuple[Principal, str, bool] | None:
        """``(principal, rate-limit key, ambient)``, or None when not authenticated.
        ``ambient`` is True when the browser could have sent the credential by itself."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            who = self.tokens.get(token)
            return (who, token, False) if who else None
        session = request.cookies.get(SESSION_COOKIE, "")
        if session and session in self._sessions:
            return self._sessions[session], session, True
        client = request.client.host if request.client else ""
        if not self.tokens and client in LOOPBACK_CLIENTS:
            if (request.url.hostname or "").lower().strip("[]") in LOOPBACK_HOSTS:
                return Principal("loopback", Role.OPERATOR), client, True
        return None

    def require(self, request: Request, *, csrf_token: str | None = None) -> Principal:
        """The caller, after authentication, the rate limit and, for a request that
        changes state on an ambient credential, the cross-site checks. The CSRF token is
        ``csrf_token`` (a form field) or else the ``X-CSRF-Token`` header."""
        found = self.identify(request)
        if found is None:
            if self.tokens:
                raise HTTPException(401, "a valid bearer token is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            raise HTTPException(401, "no API tokens are configured: only loopback clients "
                                     "are served, under a loopback host name (set "
                                     "JOBTRACK_WEB_TOKENS to serve others)")
        who, key, ambient = found
        if not self._limiter.allow(key):
            raise HTTPException(429, "rate limit exceeded; try again in a minute",
                                headers={"Retry-After": "60"})
        if ambient and request.method not in SAFE_METHODS:
            self._refuse_cross_site(request)
            given = csrf_token if csrf_token is not None else request.headers.get(CSRF_HEADER)
            if given is not None or _from_browser(request):
                self._check_csrf(request, given)
        return who

    def check_form(self, request: Request, csrf_token: str) -> None:
        """The cross-site checks for a form posted before sign-in (login, logout)."""
        self._refuse_cross_site(request)
        self._check_csrf(request, csrf_token)

    @staticmethod
    def _refuse_cross_site(request: Request) -> None:
        site = request.headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            raise HTTPException(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-origin request refused")

    @staticmethod
    def _check_csrf(request: Request, given: str | None) -> None:
        """Compare a submitted CSRF token with the cookie's (double submit)."""
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not given or not hmac.compare_digest(expected, given):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and "
                                     "try again")

    @staticmethod
    def csrf_token(request: Request) -> str:
        """The browser's CSRF token (made on its first page view)."""
        token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf", None)
        if not token:
            token = secrets.token_urlsafe(32)
            request.state.csrf = token
        return str(token)

    @staticmethod
    def set_cookies(request: Request, response: Response, *,
                    session: str | None = None, clear_session: bool = False) -> None:
        """Attach the CSRF cookie (if new) and set or clear the session cookie."""
        path = (request.scope.get("root_path") or "") + "/"
        secure = request.url.scheme == "https"
        new_csrf = getattr(request.state, "csrf", None)
        if new_csrf and not request.cookies.get(CSRF_COOKIE):
            response.set_cookie(CSRF_COOKIE, new_csrf, path=path, httponly=True,
                                samesite="strict", secure=secure)
        if session is not None:
            response.set_cookie(SESSION_COOKIE, session, path=path, httponly=True,
                                samesite="strict", secure=secure)
        if clear_session:
            response.delete_cookie(SESSION_COOKIE, path=path)


def _from_browser(request: Request) -> bool:
    """Browsers send Origin on every POST and Sec-Fetch-* on every request; other
    clients (curl, scripts) send neither, and cannot be driven by another site."""
    return "origin" in request.headers or "sec-fetch-site" in request.headers
