"""The alert rules and channels, read from TOML (a file, or the ``alerts_rules`` setting).

Every problem is reported with where it is: ``alerts.toml:12: rule 'import-failed':
unknown kind 'faild' (one of failed, lost, ...)``. Secrets are written ``"env:NAME"``
(read from the environment when the file is loaded) or in the file itself; either way
they are kept out of every message, log line and page (:meth:`AlertConfig.mask`).
"""

from __future__ import annotations

import codecs
import html
import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from ..errors import JobtrackError
from ..models import Scope
from .channels import Channel, Email, Slack, Webhook

__all__ = [
    "KINDS",
    "AlertConfig",
    "Rule",
    "RuleFileError",
    "load",
    "parse_duration",
]

#: What a rule watches for.
KINDS = ("failed", "lost", "stuck", "slow", "queued", "failure_rate", "item_failure_rate")
#: Each kind's own settings (beyond the ones every rule takes), and which it needs.
_KIND_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "failed": ((), ()),
    "lost": ((), ()),
    "stuck": (("after",), ("after",)),
    "slow": (("over",), ("over",)),
    "queued": (("over",), ("over",)),
    "failure_rate": (("threshold", "window", "min_jobs"), ("threshold", "window")),
    "item_failure_rate": (("threshold", "min_items"), ("threshold",)),
}
_COMMON_KEYS = (
    "name",
    "kind",
    "channels",
    "task_names",
    "job_types",
    "queues",
    "owners",
    "cooldown",
    "group_wait",
    "lookback",
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class RuleFileError(JobtrackError, ValueError):
    """A rule file that cannot be used: where, and what is wrong."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


def parse_duration(value: Any, *, zero: bool = False) -> float:
    """Seconds from ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"250ms"`` or a number of
    seconds (0 too, with ``zero``); ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise ValueError(f"{value!r} is not a duration (30s, 10m, 2h, 1d)")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(f"{value!r} is not a duration above 0")
    return seconds


@dataclass(frozen=True)
class Rule:
    """One alert rule (see docs/alerts.md for each kind)."""

    name: str
    kind: str
    channels: tuple[str, ...]
    scope: Scope = field(default_factory=Scope)
    #: stuck: no progress (nor heartbeat) change for this long.
    after_s: float | None = None
    #: slow: running longer than this; queued: waiting longer than this.
    over_s: float | None = None
    #: failure_rate, item_failure_rate: a percentage.
    threshold: float | None = None
    #: failure_rate: the window the rate is measured over, and the fewest jobs it counts.
    window_s: float | None = None
    min_jobs: int = 10
    #: item_failure_rate: the fewest items a job must have for its rate to count.
    min_items: int = 10
    #: At most one message per this long (what comes meanwhile is in the next one).
    cooldown_s: float = 600.0
    #: A burst is gathered for this long before its message goes.
    group_wait_s: float = 30.0
    #: How far back failed, lost and item_failure_rate rules look (a runner started today
    #: does not report last month's failures); slow, queued and stuck are about now.
    lookback_s: float = 3600.0

    @property
    def per_job(self) -> bool:
        return self.kind != "failure_rate"


@dataclass(frozen=True)
class AlertConfig:
    """The rules and the channels they send to."""

    rules: tuple[Rule, ...]
    channels: dict[str, Channel]
    source: str = ""

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def secrets(self) -> list[str]:
        return [s for channel in self.channels.values() for s in channel.secrets() if s]

    def mask(self, text: str) -> str:
        """``text`` with every secret of every channel replaced (errors, logs, pages),
        in every form it may take there: as written, and as a server's reply or an
        exception quotes it (``repr`` of text or bytes, JSON, URL-encoded, HTML-escaped,
        and each of those once more)."""
        forms = {form for secret in self.secrets() for form in _renderings(secret)}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "[secret]")
        return text


def _rendered(text: str) -> Iterator[str]:
    """The ways ``text`` is commonly written inside other text (quotes left out)."""
    yield repr(text)[1:-1]
    for quote_char in ("'", '"'):  # a repr quoted with either, escaping that one
        yield text.replace("\\", "\\\\").replace(quote_char, "\\" + quote_char)
    yield json.dumps(text)[1:-1]
    yield text.encode("unicode_escape").decode("ascii")
    raw = text.encode("utf-8", "surrogateescape")
    yield repr(raw)[2:-1]  # b'...': how an SMTP reply (bytes) prints in an exception
    yield codecs.escape_encode(raw)[0].decode("ascii")  # the same, quotes escaped
    yield quote(text, safe="")
    yield quote(text)
    yield quote_plus(text)
    yield html.escape(text)
    yield html.escape(text, quote=False)


def _renderings(secret: str) -> set[str]:
    """``secret``, its renderings, and theirs (an escaped form escaped again: a reply
    quoted in an exception, quoted in a log line)."""
    forms = {secret}
    for _ in range(2):
        forms |= {form for known in list(forms) for form in _rendered(known)}
    return {form for form in forms if form}


class _Locator:
    """Lines of a TOML text's tables and keys, for error messages."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def _find(self, pattern: str, start: int = 0) -> int | None:
        regex = re.compile(pattern)
        for n in range(start, len(self.lines)):
            if regex.match(self.lines[n]):
                return n
        return None

    def rule(self, index: int, key: str | None = None) -> int | None:
        """The line of the ``index``-th ``[[rules]]`` (or of ``key`` inside it)."""
        at, seen = None, -1
        for n, line in enumerate(self.lines):
            if re.match(r"^\s*\[\[\s*rules\s*\]\]", line):
                seen += 1
                if seen == index:
                    at = n
                    break
        if at is None:
            return None
        return self._key(at, key)

    def channel(self, name: str, key: str | None = None) -> int | None:
        at = self._find(rf"^\s*\[\s*channels\.\"?{re.escape(name)}\"?\s*\]")
        return None if at is None else self._key(at, key)

    def _key(self, table_line: int, key: str | None) -> int:
        if key is not None:
            for n in range(table_line + 1, len(self.lines)):
                if re.match(r"^\s*\[", self.lines[n]):
                    break
                if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", self.lines[n]):
                    return n + 1
        return table_line + 1


def _globs(value: Any, problem: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise problem('a glob or a list of globs ("import*")')
    return tuple(values)


def _secret(value: Any, problem: Any) -> str:
    if not isinstance(value, str) or not value:
        raise problem('a string, or "env:NAME" to read it from the environment')
    if value.startswith("env:"):
        name = value[4:]
        if not name or os.environ.get(name) is None:
            raise problem(f"the environment variable {name or '(none)'} is not set")
        return os.environ[name]
    return value


def _channel(name: str, data: Any, where: _Locator, source: str) -> Channel:
    def problem(key: str | None, text: str) -> RuleFileError:
        return RuleFileError(source, where.channel(name, key), f"channel {name!r}: {text}")

    if not isinstance(data, dict):
        raise problem(None, "a table ([channels.NAME])")
    kind = data.get("type")
    allowed: dict[str, tuple[str, ...]] = {
        "webhook": ("type", "url", "secret", "timeout", "max_attempts", "retry_after"),
        "slack": ("type", "url", "timeout", "max_attempts", "retry_after"),
        "email": (
            "type",
            "host",
            "port",
            "starttls",
            "username",
            "password",
            "from",
            "to",
            "timeout",
            "max_attempts",
            "retry_after",
        ),
    }
    if kind not in allowed:
        raise problem("type", f"type: one of {', '.join(allowed)}, not {kind!r}")
    unknown = sorted(set(data) - set(allowed[kind]))
    if unknown:
        raise problem(unknown[0], f"unknown key {unknown[0]!r} for a {kind} channel")
    options: dict[str, Any] = {}
    try:
        if "timeout" in data:
            options["timeout_s"] = parse_duration(data["timeout"])
        if "retry_after" in data:
            options["retry_base_s"] = parse_duration(data["retry_after"])
    except ValueError as exc:
        raise problem("timeout" if "timeout" in data else "retry_after", str(exc)) from exc
    if "max_attempts" in data:
        attempts = data["max_attempts"]
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise problem("max_attempts", "max_attempts: a whole number, 1 or more")
        options["max_attempts"] = attempts

    def url() -> str:
        value = _secret(data.get("url"), lambda text: problem("url", f"url: {text}"))
        if not re.match(r"^https?://[^\s/]+", value):
            raise problem("url", "url: an http:// or https:// address")
        return value

    if kind == "webhook":
        secret = _secret(data.get("secret"), lambda text: problem("secret", f"secret: {text}"))
        return Webhook(name=name, url=url(), secret=secret, **options)
    if kind == "slack":
        return Slack(name=name, url=url(), **options)
    host = data.get("host")
    if not isinstance(host, str) or not host:
        raise problem("host", "host: the SMTP server's name")
    port = data.get("port", 587 if data.get("starttls", True) else 25)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise problem("port", "port: a port number")
    to = data.get("to")
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise problem("to", "to: an address or a list of addresses")
    sender = data.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        raise problem("from", "from: the sender's address")
    starttls = data.get("starttls", True)
    if not isinstance(starttls, bool):
        raise problem("starttls", "starttls: true or false")
    username = data.get("username")
    if username is not None and not isinstance(username, str):
        raise problem("username", "username: a string")
    password = (
        _secret(data["password"], lambda text: problem("password", f"password: {text}"))
        if "password" in data
        else None
    )
    return Email(
        name=name,
        host=host,
        port=port,
        starttls=starttls,
        username=username,
        password=password,
        sender=sender,
        to=tuple(to),
        **options,
    )


def _rule(
    index: int, data: Any, channels: dict[str, Channel], where: _Locator, source: str
) -> Rule:
    label = (
        f"rule {data.get('name')!r}"
        if isinstance(data, dict) and data.get("name")
        else (f"rule {index + 1}")
    )

    def problem(key: str | None, text: str) -> RuleFileError:
        return RuleFileError(source, where.rule(index, key), f"{label}: {text}")

    if not isinstance(data, dict):
        raise problem(None, "a table ([[rules]])")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise problem("name", "name: letters, digits, '.', '_' or '-' (at most 100)")
    kind = data.get("kind")
    if kind not in _KIND_KEYS:
        raise problem("kind", f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    own, needed = _KIND_KEYS[kind]
    unknown = sorted(set(data) - set(_COMMON_KEYS) - set(own))
    if unknown:
        raise problem(unknown[0], f"unknown key {unknown[0]!r} for a {kind} rule")
    missing = [key for key in needed if key not in data]
    if missing:
        raise problem(None, f"a {kind} rule needs {' and '.join(missing)}")
    wanted = data.get("channels")
    wanted = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(wanted, list) or not wanted:
        raise problem("channels", "channels: the names of one or more [channels.NAME]")
    for channel in wanted:
        if channel not in channels:
            raise problem("channels", f"no channel named {channel!r}")
    values: dict[str, Any] = {}
    for key, attribute in (
        ("after", "after_s"),
        ("over", "over_s"),
        ("window", "window_s"),
        ("cooldown", "cooldown_s"),
        ("group_wait", "group_wait_s"),
        ("lookback", "lookback_s"),
    ):
        if key in data:
            try:
                values[attribute] = parse_duration(
                    data[key], zero=key in ("cooldown", "group_wait")
                )
            except ValueError as exc:
                raise problem(key, f"{key}: {exc}") from exc
    if "threshold" in data:
        threshold = data["threshold"]
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not (0 <= threshold < 100)
        ):
            raise problem("threshold", "threshold: a percentage, at least 0 and under 100")
        values["threshold"] = float(threshold)
    for key in ("min_jobs", "min_items"):
        if key in data:
            count = data[key]
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise problem(key, f"{key}: a whole number, 1 or more")
            values[key] = count
    scope = {}
    for key in ("task_names", "job_types", "queues", "owners"):
        if key in data:
            scope[key] = _globs(data[key], lambda text, key=key: problem(key, f"{key}: {text}"))
    return Rule(name=name, kind=kind, channels=tuple(wanted), scope=Scope(**scope), **values)


def load(path: str | Path | None = None, *, text: str | None = None) -> AlertConfig:
    """The rules and channels of a TOML file (or of ``text``, the ``alerts_rules``
    setting); :class:`RuleFileError` says where the first problem is."""
    if (path is None) == (text is None):
        raise ValueError("give a rule file or the rules' text")
    source = str(path) if path is not None else "(the alerts_rules setting)"
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleFileError(source, None, f"cannot read it: {exc.strerror or exc}") from exc
    assert text is not None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RuleFileError(source, int(found.group(1)) if found else None, message) from exc
    where = _Locator(text)
    unknown = sorted(set(data) - {"channels", "rules"})
    if unknown:
        line = next(
            (
                n + 1
                for n, text_line in enumerate(where.lines)
                if re.match(rf"^\s*\[?\[?\s*{re.escape(unknown[0])}\b", text_line)
            ),
            None,
        )
        raise RuleFileError(source, line, f"unknown table {unknown[0]!r} (channels, rules)")
    raw_channels = data.get("channels", {})
    if not isinstance(raw_channels, dict):
        raise RuleFileError(source, None, "channels: tables [channels.NAME]")
    channels = {name: _channel(name, value, where, source) for name, value in raw_channels.items()}
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RuleFileError(source, None, "no rules: add one or more [[rules]]")
    rules = [_rule(n, value, channels, where, source) for n, value in enumerate(raw_rules)]
    seen: set[str] = set()
    for n, rule in enumerate(rules):
        if rule.name in seen:
            raise RuleFileError(
                source, where.rule(n, "name"), f"rule {rule.name!r}: a second rule of that name"
            )
        seen.add(rule.name)
    return AlertConfig(tuple(rules), channels, source)
