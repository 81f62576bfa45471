"""Tasks of the smoke suite's worker container (pytest-celery copies this module into
the container's volume and imports it there)."""

import time

from celery import shared_task

import jobtrack


@shared_task(name="smoke.import_rows", bind=True)
@jobtrack.track(job_type="import", name="Import {source}", stages=["read", "write"])
def import_rows(self, source, rows, delay_s=0.0):  # type: ignore[no-untyped-def]
    job = jobtrack.current_job()
    job.stage("read")
    job.stage("write")
    for n in range(rows):
        job.item(f"{source}-{n}", status="success")
        job.progress(current=n + 1, total=rows)
        time.sleep(delay_s)
    return rows
