from celery import shared_task

import jobtrack


@shared_task
@jobtrack.track(name="Import orders of {customer}", owner="customer")
def import_orders(customer: str, count: int) -> int:
    job = jobtrack.current_job()
    for n in range(count):
        job.item(f"order-{n}", status="success")
    return count
