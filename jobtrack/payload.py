"""Turn arbitrary task values into bounded, JSON-safe, database-safe data.

PostgreSQL refuses NUL in text and ``\\u0000`` in jsonb, and any driver refuses lone
surrogates; task arguments may be megabytes, nest without end, or have a ``repr`` that
raises. Everything stored passes through here first. The work done is bounded by the
size limit, not by the size of the value: long strings are cut before they are copied,
and a walk stops once its budget is spent.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import operator
import re
import reprlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "TRUNCATED",
    "Cleaner",
    "clean_text",
    "describe_error",
    "is_secret",
    "jsonable",
    "mask_url_passwords",
    "safe_repr",
    "secret_values",
    "to_json",
]

REDACTED = "[redacted]"
TRUNCATED = "…[truncated]"
_MAX_DEPTH = 32
_REPR = reprlib.Repr()
_REPR.maxstring = 200
_REPR.maxother = 200


def clean_text(value: object, max_chars: int, *, keep: str = "start") -> str:
    """A string any database accepts, at most ``max_chars`` long.

    ``keep="end"`` keeps the end instead (a traceback's last lines hold the error).
    """
    text = value if isinstance(value, str) else safe_repr(value)
    if len(text) > max_chars:
        marker = TRUNCATED
        if keep == "end":
            text = marker + text[len(text) - max_chars + len(marker) :]
        else:
            text = text[: max(max_chars - len(marker), 0)] + marker
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def safe_repr(value: object, max_chars: int = 400) -> str:
    """``repr`` that never raises and never runs long."""
    try:
        text = _REPR.repr(value)
    except Exception as exc:  # a user's __repr__ may raise anything
        text = f"<{type(value).__qualname__} object (repr failed: {type(exc).__name__})>"
    if len(text) > max_chars:
        text = text[:max_chars] + TRUNCATED
    return text


def is_secret(key: str, redact_keys: Iterable[str]) -> bool:
    """Whether a parameter or mapping key names a secret (see ``redact_keys``)."""
    lowered = key.lower()
    return any(word in lowered for word in redact_keys)


#: Shorter values are not masked in text: "[redacted]" in place of every "no" would hide
#: more than it protects.
_MIN_SECRET_CHARS = 4


def secret_values(
    named: Mapping[str, Any], redact_keys: Iterable[str], *, limit: int = 100
) -> tuple[str, ...]:
    """The values (as text) under secret names (see ``redact_keys``) in ``named`` and in
    mappings and lists nested in it, longest first, at most ``limit``: what log text
    must not show verbatim. Bounded: at most ``limit * 10`` values are looked at."""
    keys = tuple(redact_keys)
    found: set[str] = set()
    stack: list[tuple[Any, bool]] = [(named, False)]
    budget = limit * 10
    while stack and budget > 0 and len(found) < limit:
        value, secret = stack.pop()
        budget -= 1
        if isinstance(value, Mapping):
            stack.extend(
                (v, secret or (isinstance(k, str) and is_secret(k, keys))) for k, v in value.items()
            )
        elif isinstance(value, (list, tuple)):
            stack.extend((v, secret) for v in value)
        elif secret and isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value)
            if len(text) >= _MIN_SECRET_CHARS:
                found.add(text)
    return tuple(sorted(found, key=len, reverse=True))


#: ``scheme://user:password@host``: the password part of a URL or DSN.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)[^@/?#\s]+@")


def mask_url_passwords(text: str) -> str:
    """``postgresql://u:secret@h/db`` becomes ``postgresql://u:[redacted]@h/db``."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)


class _Walker:
    def __init__(self, budget: int, redact_keys: tuple[str, ...]) -> None:
        self.start = self.budget = budget
        self.redact_keys = redact_keys
        self.truncated = False

    def spent(self) -> int:
        return self.start - self.budget

    def text(self, value: str) -> str:
        if self.budget <= 0:
            self.truncated = True
            return TRUNCATED
        # One string gets at most half of what is left, so later values (the kwargs
        # after a huge positional argument) still fit.
        limit = max(self.budget // 2, 16)
        out = mask_url_passwords(clean_text(value, limit))
        self.budget -= (len(out) if out.isascii() else len(out.encode("utf-8"))) + 2
        if len(out) < len(value):
            self.truncated = True
        return out

    def walk(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            self.budget -= 5
            return value
        if isinstance(value, int):
            self.budget -= 20
            # Outside double precision a JSON reader may mangle it: keep the digits.
            return value if abs(value) < 2**53 else str(value)
        if isinstance(value, float):
            self.budget -= 24
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value[: max(self.budget, 16)])
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError:
                decoded = "base64:" + base64.b64encode(raw).decode("ascii")
            if len(raw) < len(value):
                self.truncated = True
            return self.text(decoded)
        if depth >= _MAX_DEPTH:
            self.truncated = True
            return self.text(safe_repr(value, 80))
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if self.budget <= 0:
                    self.truncated = True
                    out[TRUNCATED] = f"{len(value) - len(out)} more keys"
                    break
                key = self.text(k if isinstance(k, str) else safe_repr(k, 80))
                if is_secret(key, self.redact_keys):
                    out[key] = REDACTED
                    self.budget -= len(REDACTED)
                else:
                    out[key] = self.walk(v, depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items: list[Any] = []
            for v in value:
                if self.budget <= 0:
                    self.truncated = True
                    items.append(f"{TRUNCATED} {len(value) - len(items)} more items")
                    break
                items.append(self.walk(v, depth + 1))
            return items
        return self.text(safe_repr(value))


def jsonable(value: Any, max_bytes: int, redact_keys: tuple[str, ...] = ()) -> Any:
    """A JSON-safe copy of ``value`` whose encoding stays near ``max_bytes``.

    Mapping keys that look secret (see ``redact_keys``) have their values replaced.
    Values JSON cannot hold become their ``repr``; bytes become text (or base64 when
    not UTF-8). A value cut to fit is marked with "…[truncated]".
    """
    walker = _Walker(max_bytes * 9 // 10, redact_keys)  # headroom for JSON syntax
    return walker.walk(value, 0)


def to_json(value: Any, max_bytes: int, redact_keys: tuple[str, ...] = ()) -> Any:
    """:func:`jsonable`, then a final guarantee that the encoding fits ``max_bytes``."""
    walker = _Walker(max_bytes * 9 // 10, redact_keys)  # headroom for JSON syntax
    data = walker.walk(value, 0)
    # Skip encoding to measure when even the worst case fits: JSON escapes grow a
    # character to at most 6 bytes, and punctuation adds less than half a byte per
    # counted byte (every value is counted at 5 bytes or more).
    if walker.spent() * 8 < max_bytes:
        return data
    encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if len(encoded.encode("utf-8")) <= max_bytes:
        return data
    return {"_truncated": True, "preview": clean_text(encoded, max(max_bytes // 4, 64))}


def describe_error(exc: BaseException | None) -> tuple[str | None, str | None]:
    """The error's type name and message, never raising.

    An exception Celery could not pickle reaches the failure signal replaced: by the
    nearest base class that pickles with its arguments (``Exception(*args)``), or by an
    ``UnpickleableExceptionWrapper`` naming the original's module and class. The signal
    runs inside the task's ``except``, so the original is the exception being handled:
    when it is the one replaced, it is described instead. A wrapper met elsewhere is
    described by the names it carries and the message its arguments make."""
    if exc is None:
        return None, None
    handled = sys.exc_info()[1]
    if handled is not None and handled is not exc and _replaced_by(handled, exc):
        exc = handled
    cls_name = getattr(exc, "exc_cls_name", None)
    if type(exc).__name__ == _WRAPPER and isinstance(cls_name, str):
        args = tuple(getattr(exc, "exc_args", None) or ())
        message = str(args[0]) if len(args) == 1 else str(args) if args else ""
        return _qualified(str(getattr(exc, "exc_module", None) or "builtins"), cls_name), message
    name = _qualified(type(exc).__module__, type(exc).__qualname__)
    try:
        message = str(exc)
    except Exception:
        message = safe_repr(exc)
    return name, message


#: Celery's stand-in for an exception that cannot be pickled
#: (``celery.utils.serialization``), known by name: this module imports no Celery.
_WRAPPER = "UnpickleableExceptionWrapper"


def _replaced_by(original: BaseException, given: BaseException) -> bool:
    """Whether ``given`` is what Celery made of ``original`` to pickle it."""
    try:
        if type(given).__name__ == _WRAPPER:
            return (
                type(original).__name__ == getattr(given, "exc_cls_name", None)
                and type(original).__module__ == getattr(given, "exc_module", None)
                and type(original).__name__ != _WRAPPER
            )
        return (
            type(original) is not type(given)
            and isinstance(original, type(given))
            and original.args == given.args
        )
    except Exception:  # an odd __eq__ in the arguments: keep what was given
        return False


def _qualified(module: str, name: str) -> str:
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


# -- whole records ----------------------------------------------------------------------

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


class Cleaner:
    """Makes every text and number of a job update, item or event one the database takes.

    This is the one place user-reachable values are bounded before they are buffered:
    ids, names, owners, stages, messages, item keys, error fields. Each text field is cut
    to its column's size (or the message / traceback / name limits), NUL characters and
    lone surrogates are replaced, integers are held to their column's range and
    non-finite floats dropped. JSON documents are made safe where they are built
    (:func:`to_json`); :meth:`deep` cleans them again for a row the database refused.

    The common case (short ASCII text) costs a length check and a scan per field.
    """

    def __init__(
        self,
        texts: dict[type, tuple[tuple[str, int, str], ...]],
        ints: dict[type, tuple[tuple[str, int], ...]],
        floats: dict[type, tuple[str, ...]],
        jsons: dict[type, tuple[str, ...]],
        max_payload_bytes: int,
        redact_keys: tuple[str, ...],
    ) -> None:
        self._texts = texts
        self._ints = ints
        self._floats = floats
        self._jsons = jsons
        self._max_payload_bytes = max_payload_bytes
        self._redact_keys = redact_keys
        self._getters = {
            kind: (
                texts[kind],
                _getter(n for n, _, _ in texts[kind]),
                ints[kind],
                _getter(n for n, _ in ints[kind]),
            )
            for kind in texts
        }

    @classmethod
    def for_limits(
        cls,
        *,
        message_chars: int,
        traceback_chars: int,
        name_chars: int,
        max_payload_bytes: int,
        redact_keys: tuple[str, ...] = (),
    ) -> Cleaner:
        """Limits from the table definitions (``String(n)``) and the given settings."""
        from sqlalchemy import JSON, BigInteger, Float, Integer, String, Text

        from .models import Event, Item, JobUpdate, LogLine
        from .schema import job_events, job_items, job_logs, jobs

        special = {"name": (name_chars, "start"), "traceback": (traceback_chars, "end")}
        texts: dict[type, tuple[tuple[str, int, str], ...]] = {}
        ints: dict[type, tuple[tuple[str, int], ...]] = {}
        floats: dict[type, tuple[str, ...]] = {}
        jsons: dict[type, tuple[str, ...]] = {}
        for record, table in (
            (JobUpdate, jobs),
            (Item, job_items),
            (Event, job_events),
            (LogLine, job_logs),
        ):
            names = set(record.__dataclass_fields__)
            t: list[tuple[str, int, str]] = []
            i: list[tuple[str, int]] = []
            fl: list[str] = []
            js: list[str] = []
            for column in table.columns:
                name = column.name
                if name not in names or name in ("status", "state_seq"):
                    continue
                kind = column.type
                if isinstance(kind, String) and not isinstance(kind, Text) and kind.length:
                    t.append((name, kind.length, "start"))
                elif isinstance(kind, (Text, String)):
                    limit, keep = special.get(name, (message_chars, "start"))
                    t.append((name, limit, keep))
                elif isinstance(kind, BigInteger):
                    i.append((name, _INT64))
                elif isinstance(kind, Integer):
                    i.append((name, _INT32))
                elif isinstance(kind, Float):
                    fl.append(name)
                elif isinstance(kind, JSON):
                    js.append(name)
            texts[record], ints[record] = tuple(t), tuple(i)
            floats[record], jsons[record] = tuple(fl), tuple(js)
        return cls(texts, ints, floats, jsons, max_payload_bytes, redact_keys)

    def __call__(self, record: Any) -> Any:
        """``record`` with every text and number safe; the same object when it was
        already safe (a mutable record is changed in place)."""
        kind = type(record)
        texts, get_texts, ints, get_ints = self._getters[kind]
        changes: dict[str, Any] = {}
        for (name, limit, keep), value in zip(texts, get_texts(record), strict=True):
            if value is not None and (
                type(value) is not str
                or len(value) > limit
                or "\x00" in value
                or (not value.isascii() and not _encodable(value))
            ):
                changes[name] = clean_text(value, limit, keep=keep)
        for (name, bound), value in zip(ints, get_ints(record), strict=True):
            if value is not None and (type(value) is not int or not -bound <= value <= bound):
                changes[name] = _bounded_int(value, bound)
        for name in self._floats[kind]:
            value = getattr(record, name)
            if value is not None and (type(value) is not float or not math.isfinite(value)):
                changes[name] = _finite(value)
        return self._apply(record, changes) if changes else record

    def deep(self, record: Any) -> Any:
        """:meth:`__call__`, and every JSON document rebuilt through :func:`to_json`: the
        form a refused row is tried again in."""
        record = self(record)
        changes = {
            name: to_json(getattr(record, name), self._max_payload_bytes, self._redact_keys)
            for name in self._jsons[type(record)]
            if getattr(record, name) is not None
        }
        return self._apply(record, changes)

    @staticmethod
    def _apply(record: Any, changes: dict[str, Any]) -> Any:
        if not changes:
            return record
        if type(record).__dataclass_params__.frozen:
            return dataclasses.replace(record, **changes)
        for name, value in changes.items():
            setattr(record, name, value)
        return record


def _getter(names: Iterable[str]) -> Callable[[Any], tuple[Any, ...]]:
    """Read several attributes at once, always as a tuple."""
    wanted = tuple(names)
    if not wanted:
        return lambda _record: ()
    get = operator.attrgetter(*wanted)
    if len(wanted) == 1:
        return lambda record: (get(record),)
    return get


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bounded_int(value: Any, bound: int) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(-bound, min(bound, number))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
