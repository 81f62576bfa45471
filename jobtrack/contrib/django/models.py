"""jobtrack's tables as read-only Django models (``managed = False``: jobtrack's own
migrations make them; Django never writes them). The admin reads them; every change goes
through jobtrack's actions (:mod:`jobtrack.actions`), never through these models."""

from __future__ import annotations

from django.db import models


class Job(models.Model):
    id = models.CharField(primary_key=True, max_length=255)
    task_name = models.CharField(max_length=255, null=True)
    job_type = models.CharField(max_length=100, null=True)
    name = models.TextField(null=True)
    owner_id = models.CharField(max_length=255, null=True)
    status = models.CharField(max_length=20)
    queue = models.CharField(max_length=255, null=True)
    parent_id = models.CharField(max_length=255, null=True)
    root_id = models.CharField(max_length=255, null=True)
    group_id = models.CharField(max_length=255, null=True)
    progress_percent = models.FloatField(null=True)
    progress_stage = models.CharField(max_length=255, null=True)
    processed_items = models.IntegerField()
    failed_items = models.IntegerField()
    total_items = models.IntegerField(null=True)
    retries = models.IntegerField()
    error_type = models.CharField(max_length=255, null=True)
    error_message = models.TextField(null=True)
    traceback = models.TextField(null=True)
    worker = models.CharField(max_length=255, null=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()
    duration_ms = models.BigIntegerField(null=True)

    class Meta:
        managed = False
        db_table = "jobs"
        ordering = ("-created_at",)
        permissions = (("act_on_jobs", "Can retry and cancel jobs"),)

    def __str__(self) -> str:
        return f"{self.name or self.task_name or 'job'} ({self.id})"


class JobItem(models.Model):
    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(Job, models.DO_NOTHING, related_name="items", db_constraint=False)
    key = models.CharField(max_length=500)
    status = models.CharField(max_length=20)
    message = models.TextField(null=True)
    error_code = models.CharField(max_length=100, null=True)
    processed_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "job_items"
        ordering = ("job", "id")

    def __str__(self) -> str:
        return f"{self.key}: {self.status}"


class JobEvent(models.Model):
    id = models.BigIntegerField(primary_key=True)
    job = models.ForeignKey(Job, models.DO_NOTHING, related_name="events", db_constraint=False)
    at = models.DateTimeField()
    status = models.CharField(max_length=20)
    attempt = models.IntegerField()
    worker = models.CharField(max_length=255, null=True)
    error_type = models.CharField(max_length=255, null=True)
    error_message = models.TextField(null=True)
    note = models.CharField(max_length=255, null=True)

    class Meta:
        managed = False
        db_table = "job_events"
        ordering = ("job", "at", "id")

    def __str__(self) -> str:
        return f"{self.status} at {self.at:%Y-%m-%d %H:%M:%S}"
