"""Operator actions over the API, the dashboard and the CLI, on rows a real worker
produced (PostgreSQL): bulk retry by filter with its progress, owner-bound operators,
delete, replay with edited arguments, the audit trail, and every refusal (403, 404, 409,
422, a usage error)."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from jobtrack.cli import main
from jobtrack.models import Batch, JobFilter, JobStatus, JobUpdate, masked_error
from jobtrack.payload import REDACTED
from jobtrack.web import create_app
from tests.acceptance.webkit import World, tracked_worker
from tests.conftest import wait_for

pytestmark = pytest.mark.postgres

RUN = uuid.uuid4().hex[:8]
U1, U2 = f"a1-{RUN}", f"a2-{RUN}"
OP, VIEW = "operator-token-01", "viewer-token-0001"
OP1, OP2 = "operator-a1-token1", "operator-a2-token1"
TOKENS = f"{OP}=operator,{VIEW}=viewer,{OP1}=operator:{U1},{OP2}=operator:{U2}"
BROWSER = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture(scope="module")
def world(pg_url: str) -> Iterator[World]:
    with tracked_worker(pg_url) as w:
        yield w


def api(w: World, **settings: Any) -> TestClient:
    return TestClient(w.web(web_tokens=TOKENS, **settings))


def pages(w: World, **settings: Any) -> TestClient:
    """The dashboard as a loopback visitor sees it (no tokens: an operator)."""
    return TestClient(w.web(**settings), base_url="http://localhost", client=("127.0.0.1", 50000))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def failed_syncs(w: World, owner: str, count: int) -> list[str]:
    """Jobs that failed on their first run (a retry succeeds)."""
    batch = uuid.uuid4().hex[:6]  # flaky fails on an account's first run only
    ids = [w.tasks["flaky"].delay(f"{batch}-{n}", user=owner).id for n in range(count)]
    w.finished(*ids)
    assert {w.tracker.store.get_job(i).status for i in ids} == {JobStatus.FAILED}
    return ids


def wait_action(c: TestClient, action_id: int, token: str = OP) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (
            (a := c.get(f"/api/actions/{action_id}", headers=auth(token)).json())["status"]
            in ("completed", "failed")
            and a
        ),
        message=f"action {action_id} finished",
    )


def test_bulk_retry_over_the_api_with_its_progress_and_audit(world: World) -> None:
    c = api(world)
    ids = failed_syncs(world, U1, 6)
    body = {"action": "retry", "filter": {"status": ["failed"], "owner_id": U1}}
    assert c.post("/api/actions", json=body, headers=auth(VIEW)).status_code == 403
    started = c.post("/api/actions", json=body, headers=auth(OP))
    assert started.status_code == 202, started.text
    action = started.json()
    assert action["matched"] == 6 and started.headers["location"].endswith(f"/{action['id']}")
    done = wait_action(c, action["id"])
    assert (done["done"], done["skipped"], done["failed"], done["progress_percent"]) == (
        6,
        0,
        0,
        100.0,
    )
    assert done["actor"] == "token 1" and done["bulk"] is True
    retries = []
    for job_id in ids:
        listed = c.get("/api/actions", params={"job_id": job_id}, headers=auth(VIEW)).json()
        assert [a["id"] for a in listed["actions"]] == [action["id"]]
        (_, target), *_ = world.tracker.store.actions.actions_for_job(job_id)
        retries.append(target.result_id)
    world.finished(*retries)
    assert {world.tracker.store.get_job(r).status for r in retries} == {JobStatus.COMPLETED}
    run = c.get(f"/api/jobs/{done['job_id']}", headers=auth(VIEW)).json()["job"]
    assert (run["status"], run["processed_items"], run["job_type"]) == (
        "completed",
        6,
        "jobtrack.action",
    )
    # The job page says who retried it, and links the bulk action.
    page = pages(world).get(f"/jobs/{ids[0]}").text
    assert f"bulk action #{action['id']}" in page and "Retried by <b>token 1</b>" in page
    assert f'href="/jobs/{retries[0]}"' in page


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"action": "retry", "filter": {}}, "empty filter"),
        ({"action": "retry", "filter": {"colour": "red"}}, "unknown filter field"),
        ({"action": "retry", "filter": {"status": []}}, "is empty"),
        ({"action": "retry", "filter": {"status": ["exploded"]}}, "exploded"),
        ({"action": "explode", "filter": {"status": ["failed"]}}, "'retry'"),
        ({"action": "retry", "filter": {"status": ["failed"]}, "extra": 1}, "extra"),
    ],
)
def test_a_bad_bulk_request_is_a_clear_422(
    world: World, body: dict[str, Any], problem: str
) -> None:
    answer = api(world).post("/api/actions", json=body, headers=auth(OP))
    assert answer.status_code == 422 and problem in str(answer.json()["detail"])


def test_bad_json_unknown_actions_and_viewers(world: World) -> None:
    c = api(world)
    broken = c.post("/api/actions", content=b"{", headers=auth(OP))
    assert broken.status_code == 422 and "not JSON" in broken.json()["detail"]
    assert c.get("/api/actions/999999999", headers=auth(VIEW)).status_code == 404
    assert c.get("/api/actions/zero", headers=auth(VIEW)).status_code == 422


def test_an_owner_bound_operator_acts_on_its_owners_jobs_only(world: World) -> None:
    c = api(world)
    mine, theirs = failed_syncs(world, U1, 2), failed_syncs(world, U2, 2)
    body = {"action": "cancel", "filter": {"ids": [*mine, *theirs]}}
    action = c.post("/api/actions", json=body, headers=auth(OP2)).json()
    assert action["matched"] == 2 and action["owner_id"] == U2
    done = wait_action(c, action["id"], OP2)
    # Cancelling a finished job makes no sense: skipped, not an error.
    assert (done["done"], done["skipped"], done["failed"]) == (0, 2, 0)
    touched = [j for j in [*mine, *theirs] if world.tracker.store.actions.actions_for_job(j)]
    assert set(touched) >= set(theirs) and not set(touched) & set(mine)
    assert c.get(f"/api/actions/{action['id']}", headers=auth(OP1)).status_code == 404
    listed = c.get("/api/actions", headers=auth(OP1)).json()["actions"]
    assert action["id"] not in [a["id"] for a in listed]
    other = c.post(
        "/api/actions",
        json={"action": "retry", "filter": {"owner_id": U1}},
        headers=auth(OP2),
    ).json()
    assert other["matched"] == 0  # another owner named: nothing


def test_delete_one_job_and_clear_completed(world: World) -> None:
    c = api(world)
    owner = f"del-{RUN}"
    done = [world.tasks["report"].delay(f"r{n}", user=owner).id for n in range(3)]
    world.finished(*done)
    queued = world.tasks["report"].apply_async(("q", owner), queue=f"nobody-{RUN}").id
    world.tracker.flush()
    assert c.delete(f"/api/jobs/{done[0]}", headers=auth(VIEW)).status_code == 403
    assert c.delete(f"/api/jobs/{done[0]}", headers=auth(OP)).json()["result"] == "deleted"
    assert c.get(f"/api/jobs/{done[0]}", headers=auth(OP)).status_code == 404
    assert c.get(f"/api/jobs/{done[0]}/items", headers=auth(OP)).status_code == 404
    assert c.delete(f"/api/jobs/{done[0]}", headers=auth(OP)).status_code == 404
    refused = c.delete(f"/api/jobs/{queued}", headers=auth(OP))
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    audit = c.get("/api/actions", params={"job_id": done[0]}, headers=auth(OP)).json()
    assert [(a["action"], a["outcome"]) for a in audit["actions"]] == [("delete", "deleted")]
    clear = c.post(
        "/api/actions",
        json={"action": "delete", "filter": {"status": ["completed"], "owner_id": owner}},
        headers=auth(OP),
    ).json()
    assert wait_action(c, clear["id"])["done"] == 2
    assert world.tracker.store.actions.count_matching(JobFilter.of(owner_id=owner)) == 1  # queued


def test_replay_with_edited_arguments(world: World) -> None:
    c = api(world, web_publishable_tasks=(world.tasks["report"].name,))
    original = world.tasks["report"].delay("march", user=U1).id
    world.finished(original)
    replay = c.post(
        f"/api/jobs/{original}/replay",
        json={"kwargs": {"title": "april", "user": U1}},
        headers=auth(OP),
    )
    assert replay.status_code == 202, replay.text
    new_id = replay.json()["id"]
    world.finished(new_id)
    again = world.tracker.store.get_job(new_id)
    assert (again.output_data, again.replay_of, again.status) == (
        {"title": "april"},
        original,
        JobStatus.COMPLETED,
    )
    page = pages(world).get(f"/jobs/{original}").text
    assert f'href="/jobs/{new_id}"' in page and "Replayed as" in page
    assert (
        c.post(f"/api/jobs/{original}/replay", content=b"{nope", headers=auth(OP))
        .json()["detail"]
        .startswith("the body is not JSON")
    )
    assert c.post(f"/api/jobs/{original}/replay", headers=auth(VIEW)).status_code == 403
    # Input that was redacted is refused unless the complete arguments are given.
    hidden = f"hidden-{RUN}"
    world.tracker.store.create_job(
        JobUpdate.transition(
            hidden,
            JobStatus.FAILED,
            task_name=world.tasks["report"].name,
            input_data={"args": [], "kwargs": {"title": REDACTED, "user": U1}},
        )
    )
    plain = c.post(f"/api/jobs/{hidden}/replay", headers=auth(OP))
    assert plain.status_code == 409 and "give the complete arguments" in plain.json()["detail"]
    marked = c.post(
        f"/api/jobs/{hidden}/replay",
        json={"kwargs": {"title": REDACTED, "user": U1}},
        headers=auth(OP),
    )
    assert marked.status_code == 409 and "complete values" in marked.json()["detail"]
    whole = c.post(f"/api/jobs/{hidden}/replay", json={"args": ["may", U1]}, headers=auth(OP))
    assert whole.status_code == 202
    world.finished(whole.json()["id"])
    assert world.tracker.store.get_job(whole.json()["id"]).output_data == {"title": "may"}


def test_edited_replay_obeys_the_publishable_list(world: World) -> None:
    """Edited arguments start a task with input of the caller's choosing, as
    ``POST /api/jobs`` does: the same list (``web_publishable_tasks``) applies. A replay
    as recorded is a retry: no list needed. Nothing refused is published."""
    flaky, report = world.tasks["flaky"], world.tasks["report"]
    c = api(world, web_publishable_tasks=(report.name,))
    (unlisted,) = failed_syncs(world, U1, 1)  # a flaky job: its task is not listed
    before = world.tracker.store.actions.count_matching(JobFilter.of(owner_id=U1))
    for body in (
        {"args": ["elsewhere", U1]},  # the owner-bound operator's own job, new arguments
        {"kwargs": {"account": "x", "user": U2}},  # or another tenant's id as argument
    ):
        refused = c.post(f"/api/jobs/{unlisted}/replay", json=body, headers=auth(OP1))
        assert refused.status_code == 403, refused.text
        assert "not in web_publishable_tasks" in refused.json()["detail"]
        assert c.post(f"/api/jobs/{unlisted}/replay", json=body, headers=auth(OP)).status_code == (
            403
        )
    assert world.tracker.store.actions.count_matching(JobFilter.of(owner_id=U1)) == before
    # The recorded arguments given back unchanged, or none: a retry, allowed.
    recorded = world.tracker.store.get_job(unlisted).input_data
    for body in (None, recorded):
        again = c.post(f"/api/jobs/{unlisted}/replay", json=body, headers=auth(OP1))
        assert again.status_code == 202, again.text
        world.finished(again.json()["id"])
        assert world.tracker.store.get_job(again.json()["id"]).task_name == flaky.name
    # The dashboard's form obeys the same list.
    page = pages(world, web_publishable_tasks=(report.name,))
    form = page.get(f"/jobs/{unlisted}").text
    answer = page.post(
        f"/jobs/{unlisted}/replay",
        headers=BROWSER,
        data={"csrf_token": csrf_of(form), "input": json.dumps({"args": ["other", U2]})},
        follow_redirects=False,
    )
    assert answer.status_code == 403 and "web_publishable_tasks" in answer.text
    # A listed task takes edited arguments; the job stays its caller's owner's.
    original = report.delay("august", user=U1).id
    world.finished(original)
    edited = c.post(
        f"/api/jobs/{original}/replay",
        json={"kwargs": {"title": "september", "user": U2}},
        headers=auth(OP1),
    )
    assert edited.status_code == 202, edited.text
    world.finished(edited.json()["id"])
    assert world.tracker.store.get_job(edited.json()["id"]).owner_id == U1


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries no CSRF field"
    return found.group(1)


def test_the_dashboard_confirms_the_count_then_shows_the_action(world: World) -> None:
    owner = f"dash-{RUN}"
    ids = failed_syncs(world, owner, 3)
    c = pages(world)
    listing = c.get("/", params={"tab": "failed", "owner_id": owner}).text
    assert "Retry all 3 matching" in listing
    confirm = c.get("/actions/new", params={"action": "retry", "tab": "failed", "owner_id": owner})
    assert confirm.status_code == 200 and "Retry 3 matching jobs?" in confirm.text
    started = c.post(
        "/actions",
        headers=BROWSER,
        data={
            "csrf_token": csrf_of(confirm.text),
            "action": "retry",
            "tab": "failed",
            "owner_id": owner,
        },
        follow_redirects=False,
    )
    assert started.status_code == 303
    action_id = int(started.headers["location"].rsplit("/", 1)[1])
    wait_for(
        lambda: world.tracker.store.actions.get_action(action_id).status == "completed",
        message="the action done",
    )
    page = c.get(f"/actions/{action_id}").text
    assert (
        "3 done, 0 skipped, 0 failed" in page
        and f'data-stream="/api/stream?job_id=jobtrack-action-{action_id}"' in page
    )
    assert f"#{action_id}" in c.get("/actions").text
    refused = c.post("/actions", headers=BROWSER, data={"action": "retry", "tab": "failed"})
    assert refused.status_code == 403  # no CSRF token
    assert c.get("/actions/new", params={"action": "retry", "tab": "all"}).status_code == 422
    assert all(world.tracker.store.actions.actions_for_job(i) for i in ids)


def test_the_dashboard_deletes_and_replays_with_edited_input(world: World) -> None:
    original = world.tasks["report"].delay("june", user=U1).id
    world.finished(original)
    c = pages(world, web_publishable_tasks=(world.tasks["report"].name,))
    page = c.get(f"/jobs/{original}").text
    assert "Replay with edited input" in page and f'action="/jobs/{original}/delete"' in page
    token = csrf_of(page)
    bad = c.post(
        f"/jobs/{original}/replay",
        headers=BROWSER,
        data={"csrf_token": token, "input": '{"args": ['},
        follow_redirects=False,
    )
    assert bad.status_code == 422 and "not JSON" in bad.text
    made = c.post(
        f"/jobs/{original}/replay",
        headers=BROWSER,
        data={"csrf_token": token, "input": json.dumps({"args": ["july", U1]})},
        follow_redirects=False,
    )
    assert made.status_code == 303
    new_id = made.headers["location"].rsplit("/", 1)[1]
    world.finished(new_id)
    assert world.tracker.store.get_job(new_id).output_data == {"title": "july"}
    assert f'id="replay-of">{original}' in c.get(f"/jobs/{new_id}").text
    kept = c.post(  # not from its confirmation page: nothing is deleted
        f"/jobs/{original}/delete",
        headers=BROWSER,
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert kept.headers["location"] == f"/jobs/{original}/delete"
    assert world.tracker.store.find_job(original) is not None
    asked = c.get(f"/jobs/{original}/delete").text
    assert "This cannot be undone" in asked and 'name="confirmed" value="1"' in asked
    gone = c.post(
        f"/jobs/{original}/delete",
        headers=BROWSER,
        data={"csrf_token": token, "confirmed": "1"},
        follow_redirects=False,
    )
    assert gone.status_code == 303 and gone.headers["location"] == "/"
    assert world.tracker.store.find_job(original) is None


def test_the_cli_counts_asks_and_refuses_an_empty_filter(world: World, pg_url: str) -> None:
    owner = f"cli-{RUN}"
    done = [world.tasks["report"].delay(f"c{n}", user=owner).id for n in range(2)]
    world.finished(*done)
    runner = CliRunner()
    base = ["--database-url", pg_url, "jobs", "delete", "--owner", owner, "--status", "completed"]
    dry = runner.invoke(main, [*base, "--dry-run"])
    assert dry.exit_code == 0 and "2 job(s) match" in dry.output
    declined = runner.invoke(main, base, input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert all(world.tracker.store.find_job(i) for i in done)
    empty = runner.invoke(main, ["--database-url", pg_url, "jobs", "delete"])
    assert empty.exit_code == 2 and "empty filter" in empty.output
    yes = runner.invoke(main, [*base, "--yes"])
    assert yes.exit_code == 0 and "2 done, 0 skipped, 0 failed (of 2)" in yes.output
    assert not any(world.tracker.store.find_job(i) for i in done)
    listed = runner.invoke(main, ["--database-url", pg_url, "actions", "ls", "--json"])
    assert '"actor": "cli"' in listed.output and '"action": "delete"' in listed.output


def test_a_bulk_confirmation_shows_its_newest_jobs_and_no_tab_offers_zero(world: World) -> None:
    owner = f"sample-{RUN}"
    start = datetime.now(UTC) - timedelta(minutes=5)
    world.tracker.store.write_batch(
        Batch(
            [
                JobUpdate.transition(
                    f"sample-{RUN}-{n:02d}",
                    JobStatus.FAILED,
                    at=start + timedelta(seconds=n),
                    name=f"Sample {n}",
                    task_name="samples.load",
                    owner_id=owner,
                    error_type="ValueError",
                    error_message=f"bad row {n}",
                )
                for n in range(12)
            ]
        )
    )
    c = pages(world)
    page = c.get("/actions/new", params={"action": "retry", "tab": "failed", "owner_id": owner})
    assert "Retry 12 matching jobs?" in page.text and "The newest 10 of them" in page.text
    shown = re.findall(r'<tr data-job-id="([^"]+)"', page.text)
    assert shown == [f"sample-{RUN}-{n:02d}" for n in range(11, 1, -1)]
    assert "Sample 11" in page.text and "bad row 11" in page.text and "bad row 1<" not in page.text
    assert "Retry all 12 matching…" in c.get("/", params={"tab": "failed", "owner_id": owner}).text
    empty = c.get("/", params={"tab": "cancelled", "owner_id": owner}).text
    assert "matching…" not in empty and 'id="bulk"' not in empty
    # "The selected…" with nothing ticked acts on nothing (not on the whole tab).
    nothing = c.get("/actions/new", params={"action": "retry", "tab": "failed", "selection": 1})
    assert nothing.status_code == 422 and "no job selected" in nothing.text
    ticked = [("ids", f"sample-{RUN}-03"), ("ids", f"sample-{RUN}-07")]
    asked = [("action", "delete"), ("tab", "failed"), ("selection", "1"), *ticked]
    two = c.get("/actions/new", params=asked)
    assert "Delete 2 matching jobs?" in two.text


def test_a_named_token_acts_under_its_name(world: World, pg_url: str) -> None:
    alice = "alice-ops-token-0001"
    c = TestClient(world.web(web_tokens=f"alice:{alice}=operator,{VIEW}=viewer"))
    [failed] = failed_syncs(world, f"named-{RUN}", 1)
    assert c.post(f"/api/jobs/{failed}/retry", headers=auth(alice)).status_code == 200
    audit = c.get("/api/actions", params={"job_id": failed}, headers=auth(VIEW)).json()
    assert [a["actor"] for a in audit["actions"]] == ["alice"]
    listed = CliRunner().invoke(main, ["--database-url", pg_url, "actions", "ls", "--job", failed])
    assert listed.exit_code == 0 and "alice" in listed.output and "token" not in listed.output
    page = pages(world).get(f"/jobs/{failed}").text
    assert "Retried by <b>alice</b>" in page


def test_a_retried_failure_is_handled_and_a_second_bulk_retry_skips_it(
    world: World, pg_url: str
) -> None:
    owner = f"handled-{RUN}"
    ids = failed_syncs(world, owner, 3)
    c = api(world)
    one = c.post(f"/api/jobs/{ids[0]}/retry", headers=auth(OP)).json()["result"]
    world.finished(one)
    job = c.get(f"/api/jobs/{ids[0]}", headers=auth(VIEW)).json()["job"]
    assert job["retried_by"] == one
    query = {"status": "failed", "owner_id": owner, "handled": "false"}
    unhandled = c.get("/api/jobs", params=query, headers=auth(VIEW)).json()["jobs"]
    assert sorted(j["id"] for j in unhandled) == sorted(ids[1:])
    runner = CliRunner()
    ls = ["--database-url", pg_url, "jobs", "ls", "--owner", owner, "--status", "failed"]
    listed = runner.invoke(main, [*ls, "--unhandled", "--json"])
    assert sorted(j["id"] for j in json.loads(listed.output)) == sorted(ids[1:])
    # A bulk retry by filter covers the two nobody retried; a second one finds none.
    body = {"action": "retry", "filter": {"status": ["failed"], "owner_id": owner}}
    first = c.post("/api/actions", json=body, headers=auth(OP)).json()
    assert first["matched"] == 2 and first["filter"]["handled"] is False
    assert wait_action(c, first["id"])["done"] == 2
    again = c.post("/api/actions", json=body, headers=auth(OP)).json()
    assert again["matched"] == 0
    cli = ["--database-url", pg_url, "jobs", "retry", "--status", "failed", "--owner", owner]
    dry = runner.invoke(main, [*cli, "--dry-run"])
    assert dry.exit_code == 0 and "0 job(s) match" in dry.output
    dry_all = runner.invoke(main, [*cli, "--dry-run", "--include-retried"])
    assert "3 job(s) match" in dry_all.output
    every = c.post("/api/actions", json={**body, "include_retried": True}, headers=auth(OP))
    assert every.json()["matched"] == 3 and every.json()["options"] == {"include_retried": True}
    assert wait_action(c, every.json()["id"])["done"] == 3
    newest = c.get("/api/jobs", params={"owner_id": owner, "handled": "true"}, headers=auth(VIEW))
    assert {j["id"] for j in newest.json()["jobs"]} == set(ids)  # each names its newest
    assert all(j["retried_by"] != one for j in newest.json()["jobs"])


def test_failure_groups_over_the_api_and_the_cli(world: World, pg_url: str) -> None:
    owner = f"groups-{RUN}"
    ids = failed_syncs(world, owner, 3)
    c = api(world)
    found = c.get("/api/failures", params={"owner_id": owner}, headers=auth(VIEW)).json()
    [group] = found["groups"]
    assert group["count"] == 3 and group["error_type"] == "ConnectionError"
    # The batch's id is masked as an id or, all digits, as a number: as the masks say.
    assert group["message"] == masked_error(group["example_message"])
    assert re.fullmatch(r"upstream timed out for <(id|n)>-<n>", group["message"])
    assert group["example_id"] in ids and sum(group["hourly"]) == 3 and len(group["hourly"]) == 24
    members = c.get(
        "/api/jobs", params={"error_group": group["key"], "owner_id": owner}, headers=auth(VIEW)
    )
    assert sorted(j["id"] for j in members.json()["jobs"]) == sorted(ids)
    bound = c.get("/api/failures", params={"owner_id": owner}, headers=auth(OP2)).json()
    assert bound["groups"] == []  # another owner's token sees none of them
    listed = CliRunner().invoke(
        main, ["--database-url", pg_url, "failures", "ls", "--owner", owner, "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert [g["count"] for g in json.loads(listed.output)["groups"]] == [3]
    table = CliRunner().invoke(main, ["--database-url", pg_url, "failures", "ls", "--owner", owner])
    assert group["key"] in table.output and group["message"].split()[-1] in table.output
    # Retrying the group (by its key) handles it: the group is gone.
    body = {
        "action": "retry",
        "filter": {"error_group": group["key"], "status": ["failed"], "owner_id": owner},
    }
    action = c.post("/api/actions", json=body, headers=auth(OP)).json()
    assert action["matched"] == 3 and wait_action(c, action["id"])["done"] == 3
    after = c.get("/api/failures", params={"owner_id": owner}, headers=auth(VIEW)).json()
    assert after["groups"] == []


def test_workers_and_queues_over_the_api(world: World, pg_url: str) -> None:
    c = api(world)
    queue = str(world.app.conf.task_default_queue)
    world.finished(world.tasks["report"].delay("counted", user=U1).id)
    assert c.get("/api/workers", headers=auth(OP1)).status_code == 403  # bound to an owner
    found = c.get("/api/workers", headers=auth(VIEW)).json()
    assert found["inspected"] and found["answered"] == 1
    [worker] = [w for w in found["workers"] if w["online"]]
    assert worker["pool"] == "thread" and worker["queues"] == [queue]
    # The thread pool's jobs carry the machine's host name, not the node's: they are
    # that node's all the same (no second, silent worker of the same host); bulk
    # actions' runs are no workers.
    names = [w["name"] for w in found["workers"]]
    assert worker["tasks_per_min"] > 0 and socket.gethostname() not in names, names
    assert not any(name.count(":") == 2 for name in names), names
    assert c.post(f"/api/queues/{queue}/pause", headers=auth(VIEW)).status_code == 403
    try:
        paused = c.post(f"/api/queues/{queue}/pause", headers=auth(OP))
        assert paused.status_code == 200 and "no longer consuming" in paused.json()["result"]
        queues = {q["name"]: q for q in c.get("/api/queues", headers=auth(VIEW)).json()["queues"]}
        assert queues[queue]["paused"] and queues[queue]["consumers"] == []
        assert queues[queue]["last_control"]["actor"] == "token 1"
        again = c.post(f"/api/queues/{queue}/pause", headers=auth(OP))
        assert again.status_code == 409 and "no live worker consumes it" in again.json()["detail"]
    finally:
        resumed = c.post(f"/api/queues/{queue}/resume", headers=auth(OP))
    assert resumed.status_code == 200
    assert resumed.json()["result"].startswith("1 worker: ")
    # The thread pool cannot grow: Celery's refusal is the answer, recorded.
    refused = c.post(
        f"/api/workers/{worker['name']}/scale", params={"concurrency": 9}, headers=auth(OP)
    )
    assert refused.status_code == 409 and "cannot scale worker" in refused.json()["detail"]
    audit = c.get("/api/actions", params={"limit": 4}, headers=auth(VIEW)).json()["actions"]
    assert [(a["action"], a["status"]) for a in audit] == [
        ("worker-scale", "failed"),
        ("queue-resume", "completed"),
        ("queue-pause", "failed"),
        ("queue-pause", "completed"),
    ]
    bare = TestClient(create_app(world.tracker.store, world.settings(web_tokens=TOKENS)))
    assert bare.post(f"/api/queues/{queue}/pause", headers=auth(OP)).status_code == 501
    assert bare.get("/api/queues", headers=auth(VIEW)).json()["inspected"] is False
