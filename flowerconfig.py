"""Example Flower configuration (docker-compose uses it): jobtrack's progress on Flower's
task pages. Start Flower with: celery -A yourapp flower --conf=flowerconfig.py"""

from jobtrack.flower import format_task  # noqa: F401 - Flower reads this name
