"""The quick-start example, runnable as it is (tests/unit/test_examples.py runs it).

It uses eager mode and SQLite so it needs no broker or server; with a real broker and
worker the calls are the same.
"""

import sys
import uuid

from celery import Celery

import jobtrack

database = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///quickstart.db"
app = Celery("shop", broker="memory://")
app.conf.task_always_eager = True  # run tasks in this process, for the example
jobtrack.install(app, database, write_mode="sync")


@app.task(bind=True)
@jobtrack.track(job_type="import", job_subtype="csv", name="Import {filename}", owner="user_id")
def import_csv(self, filename, user_id, rows):
    job = jobtrack.current_job()
    for n, row in enumerate(rows, 1):
        if row.get("price") is None:
            job.item(row["sku"], status="error", message="no price", error_code="NO_PRICE")
        else:
            job.item(row["sku"], status="success", after=row)
        job.progress(current=n, total=len(rows), stage="importing")
    return {"imported": len(rows)}


# In a web request: create the row first, answer 202 with its id, then dispatch.
job_id = str(uuid.uuid4())
jobtrack.upsert_job(job_id, job_type="import", name="Import products.csv", owner_id="u1")
rows = [{"sku": "a", "price": 1.5}, {"sku": "b", "price": None}, {"sku": "c", "price": 3}]
import_csv.apply_async(("products.csv", "u1", rows), task_id=job_id)

job = jobtrack.get_job(job_id)
print(
    job.status,
    job.name,
    f"{job.progress_percent:.0f}%",
    f"{job.processed_items} items, {job.failed_items} failed",
)
for failed in jobtrack.list_jobs(status="failed", limit=5):
    print("failed:", failed.name, failed.error_message)
