"""Workflow trees, per-job logs, time left and trends through the API, the dashboard and
the CLI, over rows a real in-process worker produced on PostgreSQL; bad input answers
404/422, and owner-bound tokens see only their owner's."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, group
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from fastapi.testclient import TestClient

import jobtrack
from jobtrack.cli import main
from jobtrack.control import JobControl
from jobtrack.models import JobFilter, JobStatus
from jobtrack.settings import Settings
from jobtrack.web import create_app
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:8]
U1, U2 = f"s1-{RUN}", f"s2-{RUN}"
VIEW, OP, OWNED2 = "viewer-token-0001", "operator-token-01", "owner-s2-token-01"
TOKENS = f"{VIEW}=viewer,{OP}=operator,{OWNED2}=viewer:{U2}"
CHILDREN = 10


@pytest.fixture(scope="module")
def world(pg_url: str) -> Iterator[dict[str, Any]]:
    app = Celery(f"sh{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    app.conf.broker_connection_retry_on_startup = True
    name = app.main

    @app.task(name=f"{name}.child")
    @jobtrack.track(job_type="child", owner="user")
    def child(i: int, user: str) -> int:
        if i % 5 == 4:
            raise ValueError(f"child {i} failed")
        return i

    @app.task(name=f"{name}.fan", bind=True)
    @jobtrack.track(job_type="fan", name="Fan out for {user}", owner="user")
    def fan(self: Any, user: str, count: int) -> int:
        logging.getLogger("shapes.fan").info("fanning out %d for %s", count, user)
        logging.getLogger("shapes.fan").warning("<b>not markup</b>")
        group(child.s(i, user=user) for i in range(count)).apply_async()
        return count

    tracker = jobtrack.install(app, pg_url, flush_interval_s=0.05)
    # The in-process worker sets the root logger to ERROR: this logger says INFO itself.
    logging.getLogger("shapes.fan").setLevel(logging.INFO)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        root = fan.delay(U1, CHILDREN).id
        other = fan.delay(U2, 0).id

        def done() -> bool:
            jobtrack.flush()
            found = tracker.store.list_jobs(jobtrack.JobFilter(workflow=root), limit=100)
            return len(found) == CHILDREN + 1 and all(j.status.is_terminal for j in found)

        wait_for(done, message="the workflow finished")
        wait_for(
            lambda: (
                jobtrack.flush() and (j := tracker.store.find_job(other)) and j.status.is_terminal
            ),
            message="the other owner's job finished",
        )
    yield {"app": app, "tracker": tracker, "root": root, "other": other}
    jobtrack.uninstall()
    tracker.store.close()


@pytest.fixture
def client(world: dict[str, Any]) -> TestClient:
    settings = Settings(database_url="unused", web_tokens=TOKENS)
    tracker = world["tracker"]
    return TestClient(
        create_app(tracker.store, settings, control=JobControl(world["app"], tracker))
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tree_api_from_any_job_of_the_workflow(world: dict[str, Any], client: TestClient) -> None:
    root = world["root"]
    tree = client.get(f"/api/jobs/{root}/tree", headers=auth(VIEW)).json()
    assert tree["count"] == CHILDREN + 1
    assert tree["summary"] == "9 of 11 done, 2 failed"
    (top,) = tree["nodes"]
    assert top["kind"] == "job" and top["id"] == root and top["status"] == "completed"
    (grouped,) = top["children"]
    assert grouped["kind"] == "group" and grouped["summary"] == "8 of 10 done, 2 failed"
    member = grouped["children"][3]["id"]
    again = client.get(f"/api/jobs/{member}/tree", headers=auth(VIEW)).json()
    assert again["focus"] == member and again["count"] == tree["count"]
    # The list rolls the workflow up on its root's row, counting what its tree counts.
    listed = client.get("/api/jobs", params={"workflow": root, "limit": 50}, headers=auth(VIEW))
    rows = {j["id"]: j for j in listed.json()["jobs"]}
    assert len(rows) == CHILDREN + 1
    assert rows[root]["workflow"] == {
        "total": CHILDREN + 1,
        "counts": {"completed": 9, "failed": 2},
        "summary": tree["summary"],
    }
    assert "workflow" not in rows[member]


def test_retry_the_failed_jobs_of_a_workflow_through_the_bulk_machinery(
    world: dict[str, Any], client: TestClient
) -> None:
    root = world["root"]
    body = {"action": "retry", "filter": {"workflow": root, "status": ["failed"]}}
    answer = client.post("/api/actions", json=body, headers=auth(OP))
    assert answer.status_code == 202, answer.text
    assert answer.json()["matched"] == 2
    location = answer.headers["Location"]
    ended = wait_for(
        lambda: (a := client.get(location, headers=auth(OP)).json())["status"] == "completed" and a,
        message="the bulk retry finished",
    )
    assert (ended["done"], ended["failed"]) == (2, 0)


def test_logs_api_pages_after_a_seq(world: dict[str, Any], client: TestClient) -> None:
    root = world["root"]
    first = client.get(f"/api/jobs/{root}/logs", headers=auth(VIEW)).json()
    messages = [line["message"] for line in first["lines"]]
    assert messages == [f"fanning out {CHILDREN} for {U1}", "<b>not markup</b>"]
    assert first["lines"][1]["level"] == "WARNING"
    assert first["lines"][0]["logger"] == "shapes.fan"
    seq = first["lines"][0]["seq"]
    rest = client.get(f"/api/jobs/{root}/logs", params={"after": seq}, headers=auth(VIEW)).json()
    assert [line["message"] for line in rest["lines"]] == messages[1:]
    assert rest["next_after"] == first["lines"][1]["seq"]
    empty = client.get(
        f"/api/jobs/{root}/logs", params={"after": rest["next_after"]}, headers=auth(VIEW)
    ).json()
    assert empty == {"lines": [], "next_after": rest["next_after"]}


def test_insights_api_figures_and_owner_scope(world: dict[str, Any], client: TestClient) -> None:
    answer = client.get(
        "/api/insights", params={"since": "1h", "every": "5m"}, headers=auth(VIEW)
    ).json()
    series = {s["key"]: s for s in answer["series"]}
    name = world["app"].main
    child = series[f"{name}.child"]["total"]
    assert (child["completed"], child["failed"]) == (8, 2)
    assert child["failure_rate"] == pytest.approx(0.2)
    assert child["run_p50_ms"] is not None and child["wait_p95_ms"] is not None
    assert series[f"{name}.fan"]["total"]["completed"] >= 2
    assert len(series[f"{name}.child"]["buckets"]) in (12, 13)
    assert answer["bucket_s"] == 300
    by_type = client.get(
        "/api/insights", params={"by": "type", "since": "1h", "key": "child"}, headers=auth(VIEW)
    ).json()
    assert [s["key"] for s in by_type["series"]] == ["child"]
    # An owner-bound token counts only its owner's jobs (one fan job, no children).
    owned = client.get("/api/insights", params={"since": "1h"}, headers=auth(OWNED2)).json()
    assert {s["key"]: s["total"]["completed"] for s in owned["series"]} == {f"{name}.fan": 1}


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/api/jobs/no-such-job/tree", {}, 404, "no job"),
        ("/api/jobs/no-such-job/logs", {}, 404, "no job"),
        ("/api/jobs/{root}/logs", {"after": "abc"}, 422, "integer"),
        ("/api/jobs/{root}/logs", {"after": "-1"}, 422, "greater than or equal"),
        ("/api/jobs/{root}/logs", {"after": str(2**64)}, 422, "less than or equal"),
        ("/api/insights", {"since": "200d"}, 422, "between 1s and 90d"),
        ("/api/insights", {"every": "10s"}, 422, "between 1m and 7d"),
        ("/api/insights", {"since": "30d", "every": "1m"}, 422, "more than 500 buckets"),
        ("/api/insights", {"by": "queue"}, 422, "task"),
        ("/api/insights", {"since": "x" * 41}, 422, "at most 40"),
    ],
)
def test_bad_input_answers_404_or_422(
    world: dict[str, Any],
    client: TestClient,
    path: str,
    params: dict[str, str],
    status: int,
    says: str,
) -> None:
    answer = client.get(path.format(root=world["root"]), params=params, headers=auth(VIEW))
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_other_owners_trees_and_logs_are_404(world: dict[str, Any], client: TestClient) -> None:
    root = world["root"]
    for path in (f"/api/jobs/{root}/tree", f"/api/jobs/{root}/logs"):
        assert client.get(path, headers=auth(OWNED2)).status_code == 404
    own = client.get(f"/api/jobs/{world['other']}/tree", headers=auth(OWNED2)).json()
    assert own["count"] == 1


def test_job_page_shows_the_tree_and_logs_and_the_list_its_rollup(
    world: dict[str, Any], client: TestClient
) -> None:
    root = world["root"]
    page = client.get(f"/jobs/{root}", headers=auth(OP)).text
    assert 'id="tree"' in page and "8 of 10 done, 2 failed" in page
    assert "11 jobs: 9 of 11 done, 2 failed." in page
    # The workflow's own state, apart from its root's; only the buttons that can act.
    assert re.search(
        r'Workflow <span class="badge failed">failed</span> <span class="sub">'
        r"\(its root job: completed\)",
        page,
    )
    left = world["tracker"].store.actions.count_matching(
        JobFilter(workflow=root, status=(JobStatus.FAILED,), handled=False)
    )  # an earlier test may have retried them
    retry = f"Retry the workflow's {left} failed job{'' if left == 1 else 's'}…"
    assert (retry in page) == bool(left) and "Retry the workflow's 0" not in page
    assert "Cancel the workflow's" not in page  # nothing of it runs or waits
    assert "&lt;b&gt;not markup&lt;/b&gt;" in page and "<b>not markup</b>" not in page
    assert f"fanning out {CHILDREN} for {U1}" in page
    listed = client.get("/", params={"tab": "all", "workflow": root}, headers=auth(VIEW)).text
    assert listed.count('class="workflow-rollup"') == 1
    assert re.search(
        r"workflow</a>: <progress max=\"11\" value=\"9\" aria-label=\"workflow progress\">"
        r"</progress> 9 of 11 done, 2 failed <span class=\"sub\">· root completed · workflow "
        r"<b>failed</b>",
        listed,
    )
    # The workflow's 2 failed jobs, less those an operator retried already (an earlier
    # test may have): a retry leaves those out, and says so.
    unhandled = world["tracker"].store.actions.count_matching(
        JobFilter(workflow=root, status=(JobStatus.FAILED,), handled=False)
    )
    confirm = client.get(
        "/actions/new",
        params={"action": "retry", "tab": "failed", "workflow": root, "handled": "all"},
        headers=auth(OP),
    )
    assert confirm.status_code == 200
    assert f"Retry {unhandled} matching job{'' if unhandled == 1 else 's'}?" in confirm.text
    assert (f"the {2 - unhandled} retried already" in confirm.text) == (unhandled < 2)


def test_the_live_fragment_reads_the_workflow_only_when_asked(
    world: dict[str, Any], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, store = world["root"], world["tracker"].store
    reads: list[str] = []
    read = store.workflows.jobs

    def counted(job_id: str, **kwargs: Any) -> Any:
        reads.append(job_id)
        return read(job_id, **kwargs)

    monkeypatch.setattr(store.workflows, "jobs", counted)
    parts = re.compile(r'data-part="([a-z-]+)"')
    whole = client.get(f"/jobs/{root}", params={"partial": 1}, headers=auth(VIEW)).text
    assert parts.findall(whole) == ["job", "tree", "job-detail"] and reads == [root]
    assert "11 jobs: 9 of 11 done, 2 failed." in whole and 'data-group-id="' in whole
    lean = client.get(f"/jobs/{root}", params={"partial": 1, "tree": 0}, headers=auth(VIEW))
    assert parts.findall(lean.text) == ["job", "job-detail"] and reads == [root]
    assert 'id="job-status"' in lean.text and 'id="tree"' not in lean.text
    # A whole page always has its tree; a job alone, an empty tree part to fill later.
    page = client.get(f"/jobs/{root}", params={"tree": 0}, headers=auth(VIEW)).text
    assert 'id="tree"' in page and reads == [root, root]
    alone = client.get(f"/jobs/{world['other']}", params={"partial": 1}, headers=auth(VIEW))
    assert '<div data-part="tree"></div>' in alone.text


def test_insights_page_draws_charts_with_text_legends(
    world: dict[str, Any], client: TestClient
) -> None:
    page = client.get("/insights", params={"since": "1h", "every": "5m"}, headers=auth(VIEW))
    assert page.status_code == 200
    html = page.text
    name = world["app"].main
    assert f"{name}.child" in html and 'id="insights-table"' in html
    assert html.count('<svg class="chart"') >= 6  # three per task charted
    assert ">completed</text>" in html and ">failed</text>" in html and ">p95</text>" in html
    assert "url(#jt-hatch)" in html and "stroke-dasharray" not in html  # dashes come from CSS
    assert "8 completed and 2 failed" in html  # the chart's description
    bad = client.get("/insights", params={"every": "1s"}, headers=auth(VIEW))
    assert bad.status_code == 422 and "between 1m and 7d" in bad.text


def run(pg_url: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--database-url", pg_url, *args], catch_exceptions=False)
    return result


def test_cli_tree_logs_and_trends(world: dict[str, Any], pg_url: str) -> None:
    root, name = world["root"], world["app"].main
    shown = run(pg_url, "jobs", "tree", root)
    assert shown.exit_code == 0, shown.output
    assert "workflow of 11 jobs: 9 of 11 done, 2 failed" in shown.output
    assert "group 8 of 10 done, 2 failed" in shown.output
    as_json = json.loads(run(pg_url, "jobs", "tree", root, "--json").output)
    assert as_json["count"] == 11
    missing = run(pg_url, "jobs", "tree", "no-such-job")
    assert missing.exit_code == 1 and "no-such-job" in missing.output
    logs = run(pg_url, "jobs", "logs", root)
    assert logs.exit_code == 0 and f"fanning out {CHILDREN} for {U1}" in logs.output
    assert "<b>not markup</b>" in logs.output  # printed as text, never as markup
    followed = run(pg_url, "jobs", "logs", root, "-f", "--interval", "0.05", "--json")
    assert [json.loads(line)["level"] for line in followed.output.splitlines()] == [
        "INFO",
        "WARNING",
    ]
    trends = run(pg_url, "stats", "--by", "task", "--every", "1h", "--since", "2h", "--json")
    series = {s["key"]: s for s in json.loads(trends.output)["series"]}
    assert series[f"{name}.child"]["total"]["failed"] == 2
    table = run(pg_url, "stats", "--by", "type", "--every", "1h", "--since", "2h", "--key", "child")
    assert table.exit_code == 0 and "child (type)" in table.output and "total" in table.output
    bad = run(pg_url, "stats", "--by", "task", "--every", "5s")
    assert bad.exit_code == 2 and "between 1m and 7d" in bad.output
