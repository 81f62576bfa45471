"""The example Django project end to end: tracking with Django's settings, the read-only
admin and its audited actions, the dashboard mounted under /jobs/ with Django sign-in."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
from django.contrib.auth.models import Permission, User
from django.test import Client

from jobtrack.models import JobFilter, JobStatus
from tests.conftest import wait_for


def finished(store: Any, job_id: str) -> Any:
    return wait_for(
        lambda: (
            (job := store.find_job(job_id)) is not None
            and job.status in (JobStatus.COMPLETED, JobStatus.FAILED)
            and job
        ),
        message=f"job {job_id} finished",
    )


def user(name: str, *perms: str, staff: bool = True) -> User:
    User.objects.filter(username=name).delete()
    made = User.objects.create_user(name, password="pw-unused-here", is_staff=staff)
    for codename in perms:
        made.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=made.pk)  # permissions read afresh


def test_tasks_are_tracked_with_settings_from_django(worker: Any, store: Any) -> None:
    from django.conf import settings
    from shop.tasks import import_orders

    job = finished(store, import_orders.delay("acme", 3).id)
    assert job.status is JobStatus.COMPLETED
    assert (job.name, job.owner_id, job.processed_items) == ("Import orders of acme", "acme", 3)
    # the database is the DATABASES alias JOBTRACK names, not a second configuration
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[1]
    assert store.dialect in {"postgresql": ("postgresql",), "mysql": ("mysql", "mariadb")}[engine]


def test_the_admin_is_read_only_and_acts_through_the_audited_path(worker: Any, store: Any) -> None:
    from shop.tasks import import_orders

    job_id = import_orders.delay("globex", 2).id
    finished(store, job_id)
    viewer, operator = Client(), Client()
    viewer.force_login(user("viewer@globex", "view_job"))
    operator.force_login(user("ops@globex", "view_job", "act_on_jobs"))

    listed = viewer.get("/admin/jobtrack/job/", {"status__exact": "completed"})
    assert listed.status_code == 200 and job_id in listed.content.decode()
    assert "Retry the selected jobs" not in listed.content.decode()  # no act permission
    page = viewer.get(f"/admin/jobtrack/job/{job_id}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert viewer.post(f"/admin/jobtrack/job/{job_id}/delete/").status_code == 403

    shown = operator.get("/admin/jobtrack/job/")
    assert "Retry the selected jobs" in shown.content.decode()
    # a completed job cannot be retried: refused, and the refusal is in the audit trail
    acted = operator.post(
        "/admin/jobtrack/job/",
        {"action": "retry_jobs", "_selected_action": [job_id]},
        follow=True,
    )
    assert "only failed, cancelled and lost jobs can be retried" in acted.content.decode()
    trail = store.actions.actions_for_job(job_id)
    assert [(a.action, a.actor, a.owner_id) for a, _ in trail] == [
        ("retry", "django:ops@globex", "globex")
    ]
    # the owner_of callable scopes the admin too: another customer's job is not listed
    other = finished(store, import_orders.delay("initech", 1).id)
    assert other.id not in operator.get("/admin/jobtrack/job/").content.decode()


def test_the_dashboard_is_mounted_and_signed_in_by_the_django_session(
    worker: Any, store: Any
) -> None:
    from proj.asgi import application
    from shop.tasks import import_orders

    mine = finished(store, import_orders.delay("umbrella", 1).id)
    theirs = finished(store, import_orders.delay("wayne", 1).id)
    signed = Client()
    signed.force_login(user("ops@umbrella", "view_job"))
    cookie = {"sessionid": signed.cookies["sessionid"].value}
    nobody = Client()
    nobody.force_login(user("someone@umbrella", staff=False))  # no view permission
    refused_cookie = {"sessionid": nobody.cookies["sessionid"].value}
    # owner_of gives "*" for this one: not one owner id, so not every owner's jobs either
    starred = Client()
    starred.force_login(user("ops@*", "view_job"))
    starred_cookie = {"sessionid": starred.cookies["sessionid"].value}

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 4000))
        answers = []
        for path, params, session in (
            ("/jobs/api/jobs", None, cookie),
            ("/jobs/", {"tab": "all"}, cookie),
            ("/jobs/", None, None),
            ("/jobs/api/jobs", None, None),
            ("/jobs/api/jobs", None, refused_cookie),
            ("/jobs/api/jobs", None, starred_cookie),
            ("/admin/login/", None, None),
        ):
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", cookies=session
            ) as c:
                answers.append(await c.get(path, params=params))
        return answers

    api, page, anonymous, anonymous_api, refused, starred_api, django_page = asyncio.run(calls())
    assert api.status_code == 200, api.text
    ids = {j["id"] for j in api.json()["jobs"]}
    assert mine.id in ids and theirs.id not in ids  # owner_of: umbrella's jobs only
    assert page.status_code == 200 and 'href="/jobs/jobs/' in page.text
    assert anonymous.status_code == 302
    assert anonymous.headers["location"] == "/admin/login/?next=/jobs/"
    assert anonymous_api.status_code == 401
    assert refused.status_code == 401
    assert starred_api.status_code == 401, starred_api.text
    assert django_page.status_code == 200  # the rest of the site is Django's
    assert store.list_jobs(JobFilter(owner_id="umbrella"))[0].id == mine.id
