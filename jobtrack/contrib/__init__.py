"""Integrations with frameworks Celery users run jobtrack inside (each needs its extra)."""
