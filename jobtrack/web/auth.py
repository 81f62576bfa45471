"""Who is calling, and whether they may: tokens, dashboard sessions, CSRF, rate limits.

* **Bearer tokens** (``web_tokens``), each with a role (``viewer`` reads, ``operator``
  also retries and cancels), optionally an owner id, and optionally a name the audit
  trail shows (``alice:s3cret…=operator``). A token bound to an owner sees only that
  owner's jobs.
* **Dashboard sessions:** the login form takes a token and sets an HttpOnly,
  SameSite=Strict cookie holding a signed session (the token's fingerprint, when it was
  issued, a random id; never the token): new at each sign-in, valid for
  ``web_session_max_age_s``, ended by signing out, by removing its token, or for all at
  once by changing ``web_secret``. With ``web_secret`` set, sessions survive restarts and
  work across server processes; without it each process makes a secret of its own.
* **Failed authentication** (a wrong bearer token or sign-in) is counted per client
  address in a token bucket of ``web_auth_failures_per_min``: once it is empty the
  address gets 429 on every route until it refills, one guess every ``60 /
  web_auth_failures_per_min`` seconds (``Retry-After`` says when).
* **Rate limit:** one budget per principal (a token's bearer and session use together),
  or per client address before sign-in, over every route, static files included: a token
  bucket of ``web_rate_limit_per_min``, which a burst may spend at once, refilled one
  request every ``60 / web_rate_limit_per_min`` seconds.
* Both buckets allow N a minute sustained and a burst of N: at most 2N - 1 in any 60
  seconds (a full bucket, then its refills), where fixed minutes allowed 2N within a
  second across the turn of one.
* **No tokens configured:** only loopback clients are served, as operators, and only
  under a loopback host name (``localhost``, ``127.0.0.1``, ``[::1]``), which stops a
  DNS-rebinding page from reaching the server through the visitor's browser.
* **CSRF:** a request that changes state and is authenticated by something the browser
  sends on its own (the session cookie, or being on loopback) must not come from another
  site (``Sec-Fetch-Site``/``Origin``) and, from a browser, must carry its CSRF token in a
  form field or the ``X-CSRF-Token`` header: for a session, a token derived from that
  session (so it changes at every sign-in); before sign-in and on loopback, the one of
  the ``jobtrack_csrf`` cookie (double submit). Bearer-token requests are exempt:
  browsers never attach those by themselves.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from fastapi import HTTPException, Request
from starlette.responses import Response

from ..errors import ConfigurationError
from ..settings import Settings
from ..store import is_owner_id

__all__ = ["MIN_TOKEN_CHARS", "Auth", "Identity", "Principal", "Role", "parse_tokens"]

LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SESSION_COOKIE = "jobtrack_session"
CSRF_COOKIE = "jobtrack_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(StrEnum):
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


#: Shortest token accepted: a guessable token is no authentication.
MIN_TOKEN_CHARS = 16
#: Fewest different characters a token must hold: ``aaaaaaaaaaaaaaaa`` is 16 characters
#: and no secret. (``secrets.token_urlsafe(32)`` holds about 30.)
MIN_TOKEN_DISTINCT_CHARS = 8


#: A token's name (``name:secret=role``): what the audit trail and the page show.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def parse_tokens(text: str) -> dict[str, Principal]:
    """``[name:]token=role[:owner_id]``, comma-separated. A named token acts under its
    name (``alice:s3cret…=operator``: "Retried by alice"); an unnamed one as
    ``token N``, N its place in the list. A token that itself holds ``:`` must be
    named (what comes before the first ``:`` is read as the name). Refused (a
    :class:`~jobtrack.errors.ConfigurationError` at start-up): text with no entry at all
    (``,,,``: it would serve as if no token were set), a short token or one of too few
    different characters, an unknown role, an owner that names no single owner (empty,
    ``*``: every owner to row-level security), a token listed twice, a name given twice."""
    tokens: dict[str, Principal] = {}
    names: set[str] = set()
    entries = [p.strip() for p in text.split(",") if p.strip()]
    if text.strip() and not entries:
        raise ConfigurationError(
            "web_tokens", text, "token=role entries (unset it to serve loopback clients only)"
        )
    for n, part in enumerate(entries):
        given, _, grant = part.partition("=")
        named, colon, secret = given.partition(":")
        name, token = (named, secret) if colon else (f"token {n + 1}", given)
        role, bound, owner = grant.partition(":")
        owner = owner.strip()
        where = f"entry {n + 1}"
        if not token or role not in (r.value for r in Role):
            raise ConfigurationError("web_tokens", where, "[name:]token=viewer|operator[:owner_id]")
        if colon and not _NAME.fullmatch(name):
            raise ConfigurationError(
                "web_tokens",
                where,
                "a name of up to 64 letters, digits, '_', '.', '@' or '-' before ':'",
            )
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigurationError(
                "web_tokens", where, f"a token of at least {MIN_TOKEN_CHARS} characters"
            )
        if len(set(token)) < MIN_TOKEN_DISTINCT_CHARS:
            raise ConfigurationError(
                "web_tokens",
                where,
                f"a random token (at least {MIN_TOKEN_DISTINCT_CHARS} different characters; "
                'python -c "import secrets; print(secrets.token_urlsafe(32))" makes one)',
            )
        if bound and not owner:
            raise ConfigurationError(
                "web_tokens", where, "an owner id after 'role:' (or no ':' for all owners)"
            )
        if bound and not is_owner_id(owner):
            raise ConfigurationError(
                "web_tokens",
                where,
                f"one owner id after 'role:', not {owner!r} ('*' means every owner: "
                "leave out ':' for that)",
            )
        if token in tokens:
            raise ConfigurationError("web_tokens", where, "each token listed once")
        if name in names:
            raise ConfigurationError("web_tokens", where, "each name given to one token")
        names.add(name)
        tokens[token] = Principal(name, Role(role), owner.strip() or None)
    return tokens


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: The clock the rate limits are read from (monotonic seconds; a test may hold it).
_limit_clock: Callable[[], float] = time.monotonic


class _RateLimiter:
    """``per_minute`` a minute per key, sustained: a token bucket (the generic cell rate
    algorithm) that holds ``per_minute`` and refills one every ``60 / per_minute``
    seconds. A burst may spend the whole bucket at once; after it, one request passes
    per refill (so at most ``2 * per_minute - 1`` in any 60 seconds). A refused request
    spends nothing. Unlike fixed minutes, a burst that straddles the turn of one cannot
    spend two budgets. One number per key: small, and good enough for one process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._step = 60.0 / per_minute
        #: How far ahead of now a key's budget may be spent, and still take one more
        #: (a microsecond more, for the rounding of many small steps added up).
        self._slack = 60.0 - self._step + 1e-6
        self._lock = threading.Lock()
        #: Key -> when its bucket is full again (now or earlier: full).
        self._full_at: dict[str, float] = {}

    def _due(self, key: str, now: float) -> float:
        if len(self._full_at) > 10_000:  # forget the full buckets of one-off clients
            self._full_at = {k: at for k, at in self._full_at.items() if at > now}
        return max(self._full_at.get(key, now), now)

    def allow(self, key: str) -> bool:
        """Spend one of ``key``'s budget; False (nothing spent) when none is left."""
        now = _limit_clock()
        with self._lock:
            due = self._due(key, now)
            if due - now > self._slack:
                return False
            self._full_at[key] = due + self._step
            return True

    def spent(self, key: str) -> bool:
        """True while ``key`` has nothing left to spend (spends nothing)."""
        now = _limit_clock()
        with self._lock:
            return self._due(key, now) - now > self._slack

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may spend one again (at least 1)."""
        now = _limit_clock()
        with self._lock:
            return max(1, math.ceil(self._due(key, now) - now - self._slack))


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a request comes from, as far as its credentials say."""

    principal: Principal
    #: The browser could have sent the credential on its own (cookie, loopback).
    ambient: bool
    #: The session's id, for a dashboard session.
    session: str | None = None


class Auth:
    """Resolves the caller of a request; raises ``HTTPException`` when refused."""

    def __init__(
        self,
        settings: Settings,
        *,
        owner_filter: bool = True,
        sign_in: Callable[[Request], Principal | None] | None = None,
    ) -> None:
        self.tokens = parse_tokens(settings.web_tokens)
        #: Who a request's own sign-in says it is (a host framework's session, e.g.
        #: Django's): asked after a bearer token, instead of the dashboard's sessions
        #: and the loopback rule.
        self.sign_in = sign_in
        #: False only in tests proving that the database's row-level security alone
        #: keeps owners apart: handlers then see every principal as unbound.
        self.owner_filter = owner_filter
        self._by_fingerprint = {_fingerprint(t): p for t, p in self.tokens.items()}
        self._secret = (
            settings.web_secret.encode() if settings.web_secret else secrets.token_bytes(32)
        )
        self._max_age_s = settings.web_session_max_age_s
        self._limiter = _RateLimiter(settings.web_rate_limit_per_min)
        self._failures = _RateLimiter(settings.web_auth_failures_per_min)
        self._ended: dict[str, float] = {}  # signed-out session ids, until they expire
        self._lock = threading.Lock()

    @property
    def open_on_loopback(self) -> bool:
        """True when no tokens are configured (loopback clients need no login) and no
        host framework signs requests in."""
        return not self.tokens and self.sign_in is None

    # -- sessions ------------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._secret, text.encode(), hashlib.sha256).digest())

    def login(self, token: str) -> str | None:
        """A new session cookie value for a configured token, else None."""
        if token not in self.tokens:
            return None
        body = f"{_fingerprint(token)}.{int(time.time())}.{_b64(secrets.token_bytes(12))}"
        return f"{body}.{self._sign(body)}"

    def _session(self, value: str) -> tuple[Principal, str] | None:
        """The principal and id of a valid, unexpired, not signed-out session."""
        if not value.isascii() or value.count(".") != 3:
            return None
        fingerprint, issued, session_id, mac = value.split(".")
        body = f"{fingerprint}.{issued}.{session_id}"
        if not mac or not hmac.compare_digest(mac, self._sign(body)):
            return None
        who = self._by_fingerprint.get(fingerprint)
        if who is None or not issued.isdigit():
            return None  # its token was removed
        if time.time() - int(issued) > self._max_age_s or session_id in self._ended:
            return None
        return who, session_id

    def logout(self, request: Request) -> None:
        """End the request's session, whatever cookie copies of it remain."""
        found = self._session(request.cookies.get(SESSION_COOKIE, ""))
        if found is not None:
            with self._lock:
                now = time.time()
                self._ended = {k: v for k, v in self._ended.items() if v > now}
                self._ended[found[1]] = now + self._max_age_s

    # -- identifying and limiting -----------------------------------------------------

    def identify(self, request: Request) -> Identity | None:
        """Who the request's credentials name, or None when it has no valid one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            who = self.tokens.get(token)
            return Identity(who, ambient=False) if who else None
        if self.sign_in is not None:
            signed = self.sign_in(request)
            return Identity(signed, ambient=True) if signed is not None else None
        session = request.cookies.get(SESSION_COOKIE, "")
        if session:
            found = self._session(session)
            if found is not None:
                return Identity(found[0], ambient=True, session=found[1])
        client = _client(request)
        if not self.tokens and client in LOOPBACK_CLIENTS:
            if (request.url.hostname or "").lower().strip("[]") in LOOPBACK_HOSTS:
                return Identity(Principal("loopback", Role.OPERATOR), ambient=True)
        return None

    def gate(self, request: Request) -> None:
        """Every request, every route (static files too): refuse a client address past
        its failed-authentication budget, count a wrong bearer token, and spend one
        request of the caller's budget (its principal's, else its address's). Raises
        ``HTTPException(429)``; the identity is kept for :meth:`require`."""
        client = _client(request)
        if self._failures.spent(client):
            wait = self._failures.retry_after(client)
            raise HTTPException(
                429,
                f"too many failed sign-ins or tokens from this address; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        found = self.identify(request)
        if found is None and _presents_credentials(request):
            self.failed(client)
        request.state.identity = found
        key = f"principal {found.principal.name}" if found else f"client {client}"
        if not self._limiter.allow(key):
            wait = self._limiter.retry_after(key)
            raise HTTPException(
                429,
                f"rate limit exceeded; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, client: str) -> None:
        """Count one failed authentication from ``client``."""
        self._failures.allow(client)

    def require(self, request: Request, *, csrf_token: str | None = None) -> Principal:
        """The caller, after authentication and, for a request that changes state on an
        ambient credential, the cross-site checks. The CSRF token is ``csrf_token`` (a
        form field) or else the ``X-CSRF-Token`` header."""
        found: Identity | None = getattr(request.state, "identity", None)
        if found is None and not hasattr(request.state, "identity"):
            found = self.identify(request)  # not through the app's gate (tests)
        if found is None:
            if self.tokens:
                raise HTTPException(
                    401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
                )
            raise HTTPException(
                401,
                "no API tokens are configured: only loopback clients "
                "are served, under a loopback host name (set "
                "JOBTRACK_WEB_TOKENS to serve others)",
            )
        if found.ambient and request.method not in SAFE_METHODS:
            self._refuse_cross_site(request)
            given = csrf_token if csrf_token is not None else request.headers.get(CSRF_HEADER)
            if given is not None or _from_browser(request):
                self._check_csrf(request, given)
        if not self.owner_filter:
            return dataclasses.replace(found.principal, owner_id=None)
        return found.principal

    def check_form(self, request: Request, csrf_token: str) -> None:
        """The cross-site checks for a form posted around sign-in (login, logout)."""
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

    def _check_csrf(self, request: Request, given: str | None) -> None:
        """Compare a submitted CSRF token with the session's (or the cookie's)."""
        expected = self.csrf_token(request, create=False)
        if (
            not expected
            or not given
            or not given.isascii()
            or not expected.isascii()
            or not hmac.compare_digest(expected, given)
        ):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and try again")

    def csrf_token(self, request: Request, *, create: bool = True) -> str:
        """The CSRF token forms must carry: derived from the session when signed in
        (it changes at every sign-in), else the ``jobtrack_csrf`` cookie's (made on the
        first page view)."""
        if hasattr(request.state, "identity"):  # the gate verified the session already
            found: Identity | None = request.state.identity
            session_id = found.session if found is not None else None
        else:
            session = self._session(request.cookies.get(SESSION_COOKIE, ""))
            session_id = session[1] if session is not None else None
        if session_id is not None:
            return self._sign(f"csrf.{session_id}")
        token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "csrf", None)
        if not token and create:
            token = secrets.token_urlsafe(32)
            request.state.csrf = token
        return str(token or "")

    def set_cookies(
        self,
        request: Request,
        response: Response,
        *,
        session: str | None = None,
        clear_session: bool = False,
    ) -> None:
        """Attach the CSRF cookie (if new) and set or clear the session cookie."""
        path = (request.scope.get("root_path") or "") + "/"
        secure = request.url.scheme == "https"
        new_csrf = getattr(request.state, "csrf", None)
        if new_csrf and not request.cookies.get(CSRF_COOKIE):
            response.set_cookie(
                CSRF_COOKIE, new_csrf, path=path, httponly=True, samesite="strict", secure=secure
            )
        if session is not None:
            response.set_cookie(
                SESSION_COOKIE,
                session,
                path=path,
                httponly=True,
                samesite="strict",
                secure=secure,
                max_age=int(self._max_age_s),
            )
        if clear_session:
            response.delete_cookie(SESSION_COOKIE, path=path)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _presents_credentials(request: Request) -> bool:
    """A credential that can be guessed: a bearer token. (A session cookie is signed: a
    stale one, after a restart or a sign-out, is no guess and must not lock a browser
    out; wrong sign-ins are counted by the sign-in form.)"""
    return bool(request.headers.get("authorization"))


def _from_browser(request: Request) -> bool:
    """Browsers send Origin on every POST and Sec-Fetch-* on every request; other
    clients (curl, scripts) send neither, and cannot be driven by another site."""
    return "origin" in request.headers or "sec-fetch-site" in request.headers
