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
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = [
    "NOT_FLAT",
    "REDACTED",
    "TRUNCATED",
    "Cleaner",
    "clean_text",
    "describe_error",
    "flat_cost",
    "flat_json",
    "is_secret",
    "jsonable",
    "mask_url_passwords",
    "pack",
    "plain_arguments",
    "safe_repr",
    "secret_values",
    "to_json",
    "unpack",
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


#: Answers of :func:`_secret` per tuple of redacted words: the same few keys (a task's
#: keyword arguments) are asked about on every call. Bounded: cleared when full.
_SECRET_ANSWERS: dict[tuple[str, ...], dict[str, bool]] = {}
_SECRET_ANSWERS_MAX = 4096


def _secret(key: str, redact_keys: tuple[str, ...]) -> bool:
    """:func:`is_secret`, remembered."""
    answers = _SECRET_ANSWERS.get(redact_keys)
    if answers is None:
        answers = _SECRET_ANSWERS[redact_keys] = {}
    found = answers.get(key)
    if found is None:
        if len(answers) >= _SECRET_ANSWERS_MAX:
            answers.clear()
        found = answers[key] = is_secret(key, redact_keys)
    return found


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
                if _secret(key, self.redact_keys):
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
    flat = flat_json(value, max_bytes, redact_keys)
    if flat is not NOT_FLAT:
        return flat
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


#: What :func:`flat_json` returns for a value it leaves to the walker.
NOT_FLAT: Any = object()
_NOTHING_COST = 5  # the walker's count for None and booleans
_INT_COST = 20
_FLOAT_COST = 24
_EXACT_INT = 2**53


def _plain_cost(value: Any) -> int:
    """What the walker counts for a value it would keep exactly as it is (a scalar of
    an exact built-in type, text that needs no cleaning or masking), or -1."""
    kind = type(value)
    if kind is str:
        if "\x00" in value or ("://" in value and "@" in value):
            return -1
        if value.isascii():
            return len(value) + 2
        try:
            return len(value.encode("utf-8")) + 2
        except UnicodeEncodeError:
            return -1
    if kind is int:
        return _INT_COST if -_EXACT_INT < value < _EXACT_INT else -1
    if value is None or kind is bool:
        return _NOTHING_COST
    if kind is float:
        return _FLOAT_COST if math.isfinite(value) else -1
    return -1


def flat_json(value: Any, max_bytes: int, redact_keys: tuple[str, ...] = ()) -> Any:
    """:func:`to_json` of the common small values at a fraction of its cost: a plain
    scalar, or a list, tuple or dict of them (string keys), when the walker would keep
    every part as it is and the whole fits without measuring. The same result as the
    walker (a copy of a container, a secret key's value redacted), or
    :data:`NOT_FLAT` for anything else."""
    copy, cost = flat_cost(value, redact_keys)
    # below max_bytes / 8 the walker returns without encoding to measure
    return copy if 0 <= cost and cost * 8 < max_bytes else NOT_FLAT


def plain_arguments(
    args: Any, kwargs: dict[str, Any], redact_keys: tuple[str, ...]
) -> tuple[int, dict[str, Any]]:
    """What the walker counts for a task's arguments (``args`` a sequence, ``kwargs``
    a dict) when every one is a plain value it keeps as it is, and ``kwargs`` with the
    values of secret names redacted (the same dict when there are none); or
    (-1, ``kwargs``). The per-call check of the input's fast path: no copy is made
    when nothing needs hiding."""
    total = 0
    for item in args:
        cost = _plain_cost(item)
        if cost < 0:
            return -1, kwargs
        total += cost
    shown = kwargs
    for key, item in kwargs.items():
        key_cost = _plain_cost(key) if type(key) is str else -1
        if key_cost < 0:
            return -1, kwargs
        if _secret(key, redact_keys):
            if shown is kwargs:
                shown = dict(kwargs)
            shown[key] = REDACTED
            total += key_cost + len(REDACTED)
            continue
        cost = _plain_cost(item)
        if cost < 0:
            return -1, kwargs
        total += key_cost + cost
    return total, shown


def flat_cost(value: Any, redact_keys: tuple[str, ...] = ()) -> tuple[Any, int]:
    """What :func:`flat_json` would return, and what the walker counts for it; or
    (:data:`NOT_FLAT`, -1)."""
    kind = type(value)
    if kind is list or kind is tuple:
        total = 0
        for item in value:
            cost = _plain_cost(item)
            if cost < 0:
                return NOT_FLAT, -1
            total += cost
        return list(value), total
    if kind is dict:
        total = 0
        out = {}
        for key, item in value.items():
            key_cost = _plain_cost(key) if type(key) is str else -1
            if key_cost < 0:
                return NOT_FLAT, -1
            if _secret(key, redact_keys):
                out[key] = REDACTED
                total += key_cost + len(REDACTED)
                continue
            cost = _plain_cost(item)
            if cost < 0:
                return NOT_FLAT, -1
            out[key] = item
            total += key_cost + cost
        return out, total
    cost = _plain_cost(value)
    return (value, cost) if cost >= 0 else (NOT_FLAT, -1)


#: A JSON document encoded once, where it was captured: what the per-task path puts in a
#: row (``input_data``, ``output_data``). Unlike the lists and dicts it was made of, it is
#: invisible to Python's garbage collector while the row waits for its flush, and the
#: store's encoder copies it into a batch as it is.
Packed = orjson.Fragment


def pack(value: Any) -> Any:
    """``value`` (already made safe by :func:`to_json`) as a :data:`Packed` document;
    None stays None, and a plain scalar stays as it is (nothing to hide from the
    collector)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    return orjson.Fragment(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def unpack(value: Any) -> Any:
    """The Python value of a :data:`Packed` document (anything else as it is)."""
    if type(value) is Packed:
        return orjson.loads(orjson.dumps(value))  # a Fragment shows its bytes only so
    return value


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


_TEXT, _INT, _FLOAT, _JSON = range(4)
#: Where a merged row keeps an earlier run's rows (``jobtrack.models.BEFORE``: this
#: module sits below the models).
_BEFORE = "_before"
#: A column's cleaning rule: its kind, and for text its limit and which end to keep; for
#: an integer column its bound.
_Rule = tuple[int, int, str]


class Cleaner:
    """Makes every text and number of a job row, item, event or log line one the
    database takes.

    This is the one place user-reachable values are bounded before they are written:
    ids, names, owners, stages, messages, item keys, error fields. Each text field is cut
    to its column's size (or the message / traceback / name limits), NUL characters and
    lone surrogates are replaced, integers are held to their column's range and
    non-finite floats dropped. An owner id is kept whole or not at all: cut or mended, it
    could become another owner's (a tenant's), so one that does not fit is dropped. JSON
    documents are made safe where they are built (:func:`to_json`); :meth:`deep` cleans
    them again for a row the database refused.

    It takes the writer's rows (a ``jobs`` :data:`~jobtrack.models.Row`, changed in
    place; a ``job_events`` :data:`~jobtrack.models.EventRow`) and the records
    (:class:`~jobtrack.models.JobUpdate`, ``Item``, ``Event``, ``LogLine``). The common
    case (short ASCII text) costs a length check and a scan per field.
    """

    def __init__(
        self,
        rules: dict[type, dict[str, _Rule]],
        max_payload_bytes: int,
        redact_keys: tuple[str, ...],
    ) -> None:
        from .models import EVENT_COLUMNS, Event, JobUpdate

        self._rules = rules
        #: Per record type: its checked fields with their rules, and one call reading
        #: them all (an item passes here for every one recorded).
        self._fields = {
            kind: (tuple(found.items()), _reader(tuple(found))) for kind, found in rules.items()
        }
        self._row_rules = rules[JobUpdate]
        event_rules = rules[Event]
        #: The event row's positions that have a rule, with it.
        self._event_rules = tuple(
            (n, event_rules[name]) for n, name in enumerate(EVENT_COLUMNS) if name in event_rules
        )
        self._max_payload_bytes = max_payload_bytes
        self._redact_keys = redact_keys

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
        rules: dict[type, dict[str, _Rule]] = {}
        for record, table in (
            (JobUpdate, jobs),
            (Item, job_items),
            (Event, job_events),
            (LogLine, job_logs),
        ):
            names = set(record.__dataclass_fields__)
            found: dict[str, _Rule] = {}
            for column in table.columns:
                name = column.name
                if name not in names or name in ("status", "state_seq"):
                    continue
                kind = column.type
                if isinstance(kind, String) and not isinstance(kind, Text) and kind.length:
                    found[name] = (_TEXT, kind.length, _WHOLE if name == "owner_id" else "start")
                elif isinstance(kind, (Text, String)):
                    limit, keep = special.get(name, (message_chars, "start"))
                    found[name] = (_TEXT, limit, keep)
                elif isinstance(kind, BigInteger):
                    found[name] = (_INT, _INT64, "")
                elif isinstance(kind, Integer):
                    found[name] = (_INT, _INT32, "")
                elif isinstance(kind, Float):
                    found[name] = (_FLOAT, 0, "")
                elif isinstance(kind, JSON):
                    found[name] = (_JSON, 0, "")
            rules[record] = found
        return cls(rules, max_payload_bytes, redact_keys)

    def __call__(self, record: Any) -> Any:
        """``record`` with every text and number safe: a row is changed in place, a
        record is the same object when it was already safe (a mutable one is changed in
        place, a frozen one copied)."""
        if type(record) is dict:
            earlier = record.get(_BEFORE)  # an earlier run's rows (models.merge_row)
            if earlier is not None:
                self(earlier)
            return self.row(record)
        if type(record) is tuple:
            return self.event_row(record)
        checked, read = self._fields[type(record)]
        changes = None
        for (name, rule), value in zip(checked, read(record), strict=True):
            if value is not None and not _clean(rule, value):
                if changes is None:
                    changes = {}
                changes[name] = _cleaned(rule, value)
        return self._apply(record, changes) if changes else record

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A ``jobs`` row made safe, in place (the checks of :func:`_clean` inlined: a
        row passes here for every transition written)."""
        rules = self._row_rules
        changes = None
        for name, value in row.items():
            if value is None:
                continue
            rule = rules.get(name)
            if rule is None:
                continue
            kind = rule[0]
            if kind == _TEXT:
                if (
                    type(value) is str
                    and len(value) <= rule[1]
                    and "\x00" not in value
                    and (value.isascii() or _encodable(value))
                ):
                    continue
            elif kind == _INT:
                if type(value) is int and -rule[1] <= value <= rule[1]:
                    continue
            elif kind != _FLOAT or (type(value) is float and math.isfinite(value)):
                continue
            if changes is None:
                changes = {}
            changes[name] = _cleaned(rule, value)
        if changes:
            row.update(changes)
        return row

    def event_row(self, event: tuple[Any, ...]) -> tuple[Any, ...]:
        """A ``job_events`` row made safe (the same tuple when it was)."""
        fixed: list[Any] | None = None
        for n, rule in self._event_rules:
            value = event[n]
            if value is not None and not _clean(rule, value):
                if fixed is None:
                    fixed = list(event)
                fixed[n] = _cleaned(rule, value)
        return event if fixed is None else tuple(fixed)

    def deep(self, record: Any) -> Any:
        """:meth:`__call__`, and every JSON document rebuilt through :func:`to_json`: the
        form a refused row is tried again in."""
        record = self(record)
        if type(record) is tuple:
            return record  # events hold no JSON
        if type(record) is dict:
            earlier = record.get(_BEFORE)
            if earlier is not None:
                self.deep(earlier)
            rules = self._row_rules
            for name, value in record.items():
                if value is not None and rules.get(name, (None,))[0] == _JSON:
                    record[name] = to_json(
                        unpack(value), self._max_payload_bytes, self._redact_keys
                    )
            return record
        changes = {
            name: to_json(getattr(record, name), self._max_payload_bytes, self._redact_keys)
            for name, rule in self._rules[type(record)].items()
            if rule[0] == _JSON and getattr(record, name) is not None
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


def _reader(names: tuple[str, ...]) -> Any:
    """Reads ``names`` of a record at once, always as a tuple."""
    if not names:
        return lambda _record: ()
    get = operator.attrgetter(*names)
    return (lambda record: (get(record),)) if len(names) == 1 else get


#: A text rule's keep mode for a value stored exactly or not at all (an owner id).
_WHOLE = "whole"


def _clean(rule: _Rule, value: Any) -> bool:
    """Whether a (non-None) value already meets its column's rule."""
    kind, limit, _keep = rule
    if kind == _TEXT:
        return (
            type(value) is str
            and len(value) <= limit
            and "\x00" not in value
            and (value.isascii() or _encodable(value))
        )
    if kind == _INT:
        return type(value) is int and -limit <= value <= limit
    if kind == _FLOAT:
        return type(value) is float and math.isfinite(value)
    return True


def _cleaned(rule: _Rule, value: Any) -> Any:
    kind, limit, keep = rule
    if kind == _TEXT:
        return None if keep == _WHOLE else clean_text(value, limit, keep=keep)
    if kind == _INT:
        return _bounded_int(value, limit)
    if kind == _FLOAT:
        return _finite(value)
    return value


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
