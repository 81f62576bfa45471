"""A read-only admin for jobs, items and events. Retry and cancel are admin actions
that go through jobtrack's audited action path (:func:`jobtrack.actions.perform`, the
one the CLI, the API and the dashboard call), for users with the act permission
(``JOBTRACK['act_permission']``, default ``jobtrack.act_on_jobs``)."""

from __future__ import annotations

from typing import Any, cast

from django.apps import apps
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from ...errors import JobtrackError
from .apps import celery_app
from .models import Job, JobEvent, JobItem


class ReadOnlyAdmin(admin.ModelAdmin):
    """Nothing is added, changed or deleted here: jobtrack's writers own these rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _act(action: str, modeladmin: Any, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    from ...actions import Actor, perform
    from ...tracker import active_tracker

    config = apps.get_app_config("jobtrack")
    settings = config.jobtrack
    app = celery_app(settings.celery_app)
    user = request.user
    actor = Actor(f"django:{user.get_username()}", "operator", _owner(settings, user))
    done, refused = 0, []
    for job_id in queryset.values_list("id", flat=True):
        try:
            perform(app, active_tracker(), actor, action, job_id)
            done += 1
        except JobtrackError as exc:
            refused.append(str(exc))
    if done:
        modeladmin.message_user(request, f"{action}: {done} job(s)", messages.SUCCESS)
    for text in refused[:10]:
        modeladmin.message_user(request, text, messages.WARNING)


def _owner(settings: Any, user: Any) -> str | None:
    return settings.owner_of(user) if settings.owner_of is not None else None


@admin.action(description="Retry the selected jobs", permissions=["act"])
def retry_jobs(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    _act("retry", modeladmin, request, queryset)


@admin.action(description="Cancel the selected jobs", permissions=["act"])
def cancel_jobs(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    _act("cancel", modeladmin, request, queryset)


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "task_name", "status", "owner_id", "created_at", "retries")
    list_filter = ("status", "job_type", "task_name", "owner_id")
    search_fields = ("=id", "name", "error_message")
    readonly_fields = ("parent_link", "root_link")
    actions = (retry_jobs, cancel_jobs)
    date_hierarchy = None

    def has_act_permission(self, request: HttpRequest) -> bool:
        settings = apps.get_app_config("jobtrack").jobtrack
        return bool(request.user.has_perm(settings.act_permission))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        settings = apps.get_app_config("jobtrack").jobtrack
        owner = _owner(settings, request.user)
        queryset = super().get_queryset(request)
        return queryset if owner is None else queryset.filter(owner_id=owner)

    @admin.display(description="parent")
    def parent_link(self, job: Job) -> str:
        return _job_link(job.parent_id)

    @admin.display(description="workflow root")
    def root_link(self, job: Job) -> str:
        return _job_link(job.root_id if job.root_id != job.id else None)


def _job_link(job_id: str | None) -> str:
    if not job_id:
        return "-"
    url = reverse("admin:jobtrack_job_change", args=[job_id])
    return cast(str, format_html('<a href="{}">{}</a>', url, job_id))  # safe: escaped


@admin.register(JobItem)
class JobItemAdmin(ReadOnlyAdmin):
    list_display = ("key", "job_id", "status", "error_code", "processed_at")
    list_filter = ("status",)
    search_fields = ("=job__id", "key")


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ("job_id", "at", "status", "attempt", "worker", "note")
    list_filter = ("status",)
    search_fields = ("=job__id",)
