"""Example Celery configuration with jobtrack, used by ./scripts/demo and docker-compose.

With no environment set it is self-contained: SQLite for jobtrack and Kombu's
``filesystem://`` broker (messages are files in a folder), so the demo needs no server.
docker-compose sets CELERY_BROKER_URL and JOBTRACK_DATABASE_URL to Redis and PostgreSQL.
"""

import os

_data = os.environ.get("JOBTRACK_DEMO_DIR", os.path.join(os.getcwd(), ".demo"))

broker_url = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if broker_url.startswith("filesystem"):
    broker_transport_options = {
        "data_folder_in": os.path.join(_data, "broker"),
        "data_folder_out": os.path.join(_data, "broker"),
        "control_folder": os.path.join(_data, "control"),
        "store_processed": False,
        # Look for new message files every 0.1 s, not every 1 s (kombu's default):
        # each task is picked up sooner, at the cost of one directory read per tick.
        "polling_interval": 0.1,
    }
broker_connection_retry_on_startup = True

# No result backend: jobtrack's table is where outcomes are read.
task_default_queue = "default"
task_acks_late = True             # a task whose worker dies is redelivered ...
task_reject_on_worker_lost = True  # ... instead of being marked failed
worker_prefetch_multiplier = 1

# jobtrack settings: any Settings field as jobtrack_<name> (or JOBTRACK_<NAME> in env).
jobtrack_database_url = os.environ.get(
    "JOBTRACK_DATABASE_URL", "sqlite:///" + os.path.join(_data, "jobtrack.db")
)
jobtrack_flush_interval_s = 0.25
