"""The pytest plugin for task authors (jobtrack.testing), used the way a user would:
a pytester project with its own tracked tasks, Celery's own pytest fixtures, and no
database server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"

PROJECT = """
import jobtrack
import pytest


@pytest.fixture
def celery_config():
    return {"broker_url": "memory://", "result_backend": "cache+memory://"}


def define(app):
    @app.task(name="shop.import_rows", bind=True)
    @jobtrack.track(
        job_type="import", name="Import {rows}", stages=["read", "write"],
        fail_when="any_item_failed",
    )
    def import_rows(self, rows):
        job = jobtrack.current_job()
        job.stage("read")
        job.stage("write")
        for n, ok in enumerate(rows):
            job.item(f"row-{n}", status="success" if ok else "error")
            job.progress(current=n + 1, total=len(rows))
            job.checkpoint({"row": n + 1})
        return len(rows)

    return import_rows


def test_with_a_worker(celery_app, celery_worker, jobs):
    task = define(celery_app)
    celery_worker.reload()
    result = task.delay([True, True])
    jobs.wait(result.id).expect(
        status="completed",
        items={"success": 2},
        progress=100.0,
        stages=["read", "write"],
        checkpoint={"row": 2},
        output=2,
        job_type="import",
    )


def test_in_eager_mode(celery_app, jobs):
    celery_app.conf.task_always_eager = True
    task = define(celery_app)
    result = task.delay([True, False])
    job = jobs.get(result.id).expect(
        status="failed", items={"success": 1, "error": 1}, error="1 of 2 items failed"
    )
    assert job.keys("error") == ["row-1"]
    assert [j.id for j in jobs.all(status="failed")] == [result.id]
    # jobs.all() gives what get() gives, as the docs say: each one a RecordedJob.
    ok = task.delay([True]).id
    (listed,) = jobs.all(status="completed")
    assert listed.id == ok and listed.keys() == ["row-0"]
    listed.expect(status="completed", items={"success": 1}, stages=["read", "write"])


def test_a_wrong_expectation_shows_the_record(celery_app, jobs):
    celery_app.conf.task_always_eager = True
    job = jobs.get(define(celery_app).delay([True]).id)
    with pytest.raises(AssertionError) as failed:
        job.expect(status="failed", items={"success": 2}, retries=0)
    text = str(failed.value)
    assert "status: expected 'failed', recorded 'completed'" in text
    assert "items: expected {'success': 2}, recorded {'success': 1}" in text
    assert "retries" not in text.split("recorded:")[0]  # only what differs is listed
    assert "trace: running -> completed" in text and "stages: ['read', 'write']" in text


def test_no_job_is_a_clear_failure(celery_app, jobs):
    with pytest.raises(AssertionError, match="recorded no job with id 'nope'"):
        jobs.get("nope")
"""


#: Celery's own fixtures (celery_app, celery_worker) are named, as Celery's docs say;
#: jobtrack's plugin is found through its entry point: nothing names it.
CONFTEST = 'pytest_plugins = ("celery.contrib.pytest",)\n'


def test_a_project_tests_its_tracked_tasks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tasks=PROJECT)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:celery", "-W", "error"
    )
    result.assert_outcomes(passed=4)


def test_a_failing_test_reads_well(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_wrong=PROJECT.split("def test_with_a_worker")[0]
        + """
def test_expects_too_much(celery_app, jobs):
    celery_app.conf.task_always_eager = True
    jobs.get(define(celery_app).delay([True, False]).id).expect(status="completed")
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:celery")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for line in (
        "is not as expected:",
        "status: expected 'completed', recorded 'failed'",
        "items: {'success': 1, 'error': 1}; failed: ['row-1']",
        "error: ItemsFailed: 1 of 2 items failed",
    ):
        assert line in out, out
    assert "def expect(" not in out  # jobtrack's own frames are hidden from the report


def test_the_documented_example_passes(pytester: pytest.Pytester) -> None:
    """docs/testing.md's complete example, as written there."""
    text = DOC.read_text()
    blocks = dict(
        re.findall(r"`(conftest\.py|test_imports\.py)`:\n\n```python\n(.*?)```", text, re.S)
    )
    assert set(blocks) == {"conftest.py", "test_imports.py"}
    pytester.makeconftest(blocks["conftest.py"])
    pytester.makepyfile(test_imports=blocks["test_imports.py"])
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:celery", "-W", "error"
    )
    result.assert_outcomes(passed=2)
