"""A fuzz pass of the JSON API from its own OpenAPI schema (schemathesis): whatever the
input, no 5xx. Runs over PostgreSQL, which is pickier about input than SQLite (NUL
characters, out-of-range dates), with a Celery app to retry through (no worker)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from celery import Celery
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from jobtrack.control import JobControl
from jobtrack.settings import Settings
from jobtrack.tracker import Tracker
from jobtrack.web import create_app

pytestmark = pytest.mark.postgres

# The operator is bound to the owner of the jobs made here: what it deletes or acts on in
# bulk (a generated "delete every job") stays within them, in the session's shared database.
TOKENS = "fuzz-operator-token=operator:someone,fuzz-owner-token-01=viewer:someone"


@pytest.fixture(scope="module")
def api_schema(pg_url: str) -> Iterator[Any]:
    tracker = Tracker(Settings(database_url=pg_url))
    for n in range(3):
        job_id = f"fuzz-{uuid.uuid4().hex[:8]}-{n}"
        tracker.upsert_job(
            job_id,
            task_name="fuzz.task",
            job_type="fuzz",
            name=f"job {n}",
            owner_id="someone",
            input_data={"args": [n], "kwargs": {}},
        )
        tracker.fail_job(job_id, "boom")
    tracker.flush()
    app = Celery(f"fuzz{uuid.uuid4().hex[:6]}", broker="memory://")
    web = create_app(
        tracker.store,
        Settings(database_url="unused", web_tokens=TOKENS, web_rate_limit_per_min=1_000_000),
        control=JobControl(app, tracker),
    )
    yield schemathesis.openapi.from_asgi("/api/openapi.json", web).exclude(
        path="/api/stream"
    )  # endless by design; covered by test_stream.py
    tracker.store.close()


FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("token", ["fuzz-operator-token", "fuzz-owner-token-01"])
def test_api_never_answers_5xx(api_schema: Any, token: str) -> None:
    """Every operation, with an operator token and with an owner-bound viewer's."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 6
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @FUZZ
        def fuzz(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
            )

        fuzz()
