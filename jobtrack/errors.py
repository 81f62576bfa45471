"""The errors jobtrack raises. Every one derives from :class:`JobtrackError`."""

from __future__ import annotations

__all__ = [
    "ActionNotFound",
    "AmbiguousJobId",
    "ConfigurationError",
    "DataRefused",
    "JobNotFound",
    "JobtrackError",
    "NoCurrentJob",
    "NotInstalled",
    "NotSupported",
    "QueryTimeout",
    "ReplicaUnavailable",
    "StoreError",
    "WorkersRefused",
]


class JobtrackError(Exception):
    """Root of every error raised by jobtrack."""


def is_time_limit(error: BaseException) -> bool:
    """Whether ``error`` is Celery's soft time limit (billiard's ``SoftTimeLimitExceeded``,
    told by name: nothing here imports Celery). It is raised into the task's thread
    wherever that thread is, inside jobtrack's own code too (a handle call, a log line
    kept, a step aside for the writer): it is the task's, and tracking that catches
    errors to keep them from the task lets this one go on to it."""
    return any(kind.__name__ == "SoftTimeLimitExceeded" for kind in type(error).__mro__)


class ConfigurationError(JobtrackError, ValueError):
    """A setting has a value jobtrack cannot use."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"setting {name}={value!r} is invalid: expected {expected}")


class JobNotFound(JobtrackError, LookupError):
    """No job row has this id."""

    def __init__(self, job_id: str, message: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message or f"no job with id {job_id!r}")


class ActionNotFound(JobNotFound):
    """No operator action has this id (a :class:`JobNotFound` too: whoever answers "not
    found" for a job does for an action)."""

    def __init__(self, action_id: int) -> None:
        self.action_id = action_id
        super().__init__(f"action {action_id}", f"no operator action with id {action_id}")


class AmbiguousJobId(JobtrackError, LookupError):
    """A job id prefix matches more than one job."""

    def __init__(self, prefix: str, matches: list[str], more: bool = False) -> None:
        self.prefix = prefix
        self.matches = matches
        listed = ", ".join(matches) + (", …" if more else "")
        count = f"{len(matches)}{' or more' if more else ''}"
        super().__init__(
            f"{prefix!r} is the start of {count} job ids ({listed}): give more of the id"
        )


class NoCurrentJob(JobtrackError, LookupError):
    """``current_job()`` was called outside a running Celery task."""

    def __init__(self) -> None:
        super().__init__("current_job() needs a running Celery task; none is running here")


class NotInstalled(JobtrackError, RuntimeError):
    """A helper was called before ``jobtrack.install(app)`` ran in this process."""

    def __init__(self) -> None:
        super().__init__(
            "jobtrack is not installed in this process: call jobtrack.install(app) first"
        )


class WorkersRefused(JobtrackError, ValueError):
    """The workers did not do what an operator asked of them (pause a queue, resize a
    pool, set a rate limit): none answered, or each one refused."""

    def __init__(self, action: str, subject: str, reason: str) -> None:
        self.action = action
        self.subject = subject
        super().__init__(f"cannot {action} {subject}: {reason}")


class NotSupported(JobtrackError):
    """The database in use cannot do what was asked (row-level security on SQLite)."""


class StoreError(JobtrackError):
    """The tracking database refused or failed an operation.

    The driver's exception is kept as ``__cause__``.
    """

    def __init__(self, action: str, detail: str) -> None:
        self.action = action
        super().__init__(f"tracking database failed during {action}: {detail}")


class QueryTimeout(StoreError):
    """A read ran past its time limit (``Store.time_limit``, the dashboard's
    ``web_query_timeout_s``) and was stopped; the connection is free again."""

    def __init__(self, action: str, limit_s: float) -> None:
        self.limit_s = limit_s
        super().__init__(action, f"stopped after {limit_s:g} s (its time limit)")


class ReplicaUnavailable(StoreError):
    """No replica can serve a read, and reads may not fall back to the primary
    (``read_fallback="error"``): ``reason`` says what each replica is doing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__("read on a replica", f"no replica can serve it: {reason}")


class DataRefused(StoreError):
    """The database refused the data itself (a value, a missing row it refers to), not
    because it could not be reached: trying the same rows again would fail again."""
