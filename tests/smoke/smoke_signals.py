"""jobtrack in the smoke suite's worker container: installed on the worker's app as the
worker starts (pytest-celery imports this module before the app exists). Settings come
from the container's environment (JOBTRACK_*)."""

from celery import signals

import jobtrack


@signals.celeryd_init.connect
def install_jobtrack(sender=None, instance=None, **kwargs):  # type: ignore[no-untyped-def]
    jobtrack.install(instance.app)
