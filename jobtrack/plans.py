"""What is known of a task type once, for every call of it.

The publisher and the worker look a task's plan up by name (one dictionary read) and
do per call only what depends on the call: which fields the record takes, which
argument names are secret, how a ``@track`` template is filled, how arguments become
the recorded input. Nothing here reads the database or Celery's state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from celery.utils.saferepr import saferepr

from .job import JobSpec, job_spec
from .payload import (
    REDACTED,
    Packed,
    is_secret,
    pack,
    plain_arguments,
    secret_values,
    to_json,
)
from .settings import Settings

__all__ = ["Plans", "TaskPlan"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_PLAIN_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
#: What the walker of :func:`~jobtrack.payload.to_json` counts for the input's two keys.
_DOCUMENT_KEYS_COST = len("args") + 2 + len("kwargs") + 2


class TaskPlan:
    """One task type, prepared: see the module docstring.

    ``fn`` is the task's ``run`` (None for a publisher that only knows the task's name:
    positional arguments then cannot be matched to their names, so the input is left
    to the worker).
    """

    __slots__ = (
        "_announce",
        "_binds_by_zip",
        "_fn",
        "_hidden_max",
        "_max_bytes",
        "_names",
        "_params",
        "_redact",
        "_secret_at",
        "_wrap_secret",
        "described",
        "fails_by_items",
        "max_retries",
        "name",
        "spec",
        "stages",
        "tracked",
    )

    def __init__(self, name: str, task: Any, settings: Settings, argsrepr_max: int) -> None:
        self.name = name
        self.spec: JobSpec | None = job_spec(task) if task is not None else None
        self.tracked = self.spec is not None or settings.track_all
        self.max_retries: int | None = getattr(task, "max_retries", None)
        self.stages: tuple[str, ...] = self.spec.stages if self.spec else ()
        self._fn: Callable[..., Any] | None = getattr(task, "run", None)
        self._max_bytes = settings.max_payload_bytes
        self._redact = settings.redact_keys
        self._hidden_max = argsrepr_max
        #: The names positional arguments bind to, in order; None: unknown.
        self._names: tuple[str, ...] | None = None
        #: Every parameter name, when binding by name is exact (no ``*args``/``**kw``).
        self._params: frozenset[str] | None = None
        if self._fn is not None:
            try:
                parameters = list(inspect.signature(self._fn).parameters.values())
            except (TypeError, ValueError):
                parameters = None
            if parameters is not None:
                names: list[str] = []
                for p in parameters:
                    if p.kind not in _POSITIONAL:
                        break
                    names.append(p.name)
                self._names = tuple(names)
                if all(p.kind in _PLAIN_KINDS for p in parameters):
                    self._params = frozenset(p.name for p in parameters)
        self._binds_by_zip = self._params is not None
        self._announce: Callable[[float | None, str | None, str | None], None] | None = None
        #: Positions of positional arguments whose names are secret.
        self._secret_at = frozenset(
            n for n, name in enumerate(self._names or ()) if is_secret(name, self._redact)
        )
        #: Whether the input document's own keys ("args", "kwargs") are secret words.
        self._wrap_secret = is_secret("args", self._redact) or is_secret("kwargs", self._redact)
        spec = self.spec
        #: ``@track(fail_when=...)``: a run that returns normally may fail by its items.
        self.fails_by_items = spec is not None and spec.fail_when is not None
        #: The fields ``@track`` fixes for every call (type, subtype, the stage count).
        self.described: dict[str, Any] = {}
        if spec is not None:
            self.described = {"job_type": spec.job_type, "job_subtype": spec.job_subtype}
            if spec.stages:
                self.described["stage_count"] = len(spec.stages)

    @property
    def knows_task(self) -> bool:
        """Whether the task itself was found (not only its name)."""
        return self._fn is not None

    # -- per call -------------------------------------------------------------------

    def describe(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """``@track``'s fields for one call: its type and subtype, and its ``name``,
        ``ref`` and ``owner_id`` filled from the arguments."""
        spec = self.spec
        if spec is None:
            return {}
        if spec.name is None and spec.owner is None and spec.ref is None:
            return self.described
        return {**self.described, **spec.fill(self.bind(args, kwargs))}

    def bind(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """The call's arguments by parameter name (no defaults filled in); just the
        keyword arguments when they cannot be matched, as ``inspect``'s ``bind_partial``
        does for a call that does not fit."""
        positional = tuple(args or ())
        named: dict[str, Any] = dict(kwargs or {})
        if self._fn is None:
            return named
        names, params = self._names or (), self._params
        if (
            self._binds_by_zip
            and params is not None
            and len(positional) <= len(names)
            and params.issuperset(named)
            and not any(name in named for name in names[: len(positional)])
        ):
            bound = dict(zip(names, positional, strict=False))
            bound.update(named)
            return bound
        try:
            return dict(inspect.signature(self._fn).bind_partial(*positional, **named).arguments)
        except (TypeError, ValueError):
            return named

    def input(self, args: Any, kwargs: Any, argsrepr: Any, kwargsrepr: Any) -> Any:
        """The arguments as the recorded input: a :data:`~jobtrack.payload.Packed` JSON
        document (bounded, secrets redacted), or the caller's own ``argsrepr`` /
        ``kwargsrepr`` when they hid the arguments.

        Positional arguments are matched to the parameter names of the task's ``run``
        so a secret passed by position is redacted like one passed by name. Without
        the task, positional arguments cannot be matched: None (the worker records
        the input instead).
        """
        if (argsrepr is not None or kwargsrepr is not None) and (
            self._hidden(argsrepr, args) or self._hidden(kwargsrepr, kwargs)
        ):
            shown = {"argsrepr": argsrepr, "kwargsrepr": kwargsrepr}
            return pack(to_json(shown, self._max_bytes, self._redact))
        positional = args or ()
        if positional:
            if self._names is None:
                return None
            if self._secret_at:
                positional = [
                    REDACTED if n in self._secret_at else value
                    for n, value in enumerate(positional)
                ]
        named = kwargs or {}
        if not self._wrap_secret:
            # Every argument a plain value: the walker's result, encoded at once.
            cost, named_shown = plain_arguments(positional, named, self._redact)
            if 0 <= cost and (_DOCUMENT_KEYS_COST + cost) * 8 < self._max_bytes:
                return Packed(orjson.dumps({"args": positional, "kwargs": named_shown}))
        document = {"args": list(positional), "kwargs": dict(named)}
        return pack(to_json(document, self._max_bytes, self._redact))

    def announcer(self, task: Any) -> Callable[[float | None, str | None, str | None], None]:
        """Sends a ``task-progress`` event for the task running now (Flower shows the
        task as PROGRESS; the fields reach ``jobtrack.flower.format_task``). Called in
        the task's thread, throttled by the handle."""
        if self._announce is None:

            def send(percent: float | None, stage: str | None, message: str | None) -> None:
                task.send_event(
                    "task-progress",
                    percent=percent,
                    stage=stage,
                    message=message[:200] if message else message,
                )

            self._announce = send
        return self._announce

    def secrets(self, args: Any, kwargs: Any) -> tuple[str, ...]:
        """The values passed under redacted argument names (by name or by position):
        what the job's log lines must not show."""
        named: dict[str, Any] = dict(kwargs) if isinstance(kwargs, Mapping) else {}
        named.update(zip(self._names or (), args or (), strict=False))
        return secret_values(named, self._redact)

    def _hidden(self, shown: Any, value: Any) -> bool:
        """Whether the caller gave Celery its own argsrepr/kwargsrepr (to hide the
        arguments) rather than the one Celery makes, ``saferepr(value)``.

        Celery's repr of short plain arguments equals ``repr()``, which is far cheaper
        than ``saferepr``: that is tried first (publishing pays for this on every task).
        """
        if shown is None:
            return False
        limit = self._hidden_max
        if len(shown) < limit // 2:
            try:
                if repr(value) == shown:
                    return False
            except Exception:  # a user's __repr__ may raise anything
                pass
        if shown == saferepr(value, limit):
            return False
        # A worker has the arguments as a list where the publisher had a tuple.
        return not (type(value) is list and shown == saferepr(tuple(value), limit))


class Plans:
    """The plans of one installed tracker, made on first use by task name."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._argsrepr_max = int(getattr(app.amqp, "argsrepr_maxsize", 1024))
        self._plans: dict[str, TaskPlan] = {}

    def get(self, name: str, task: Any = None) -> TaskPlan:
        """The plan of task ``name`` (``task``: its object, when the caller has it)."""
        plan = self._plans.get(name)
        if plan is not None and plan.knows_task:
            return plan
        if task is None:
            task = self._app.tasks.get(name)
            if plan is not None and task is None:
                return plan  # still not registered here: positional input left to the worker
        plan = self._plans[name] = TaskPlan(name, task, self._settings, self._argsrepr_max)
        return plan
