# The usual Django + Celery layout: the Celery app is made when the project loads.
from .celery import app as celery_app

__all__ = ("celery_app",)
