"""The Django scenarios run in a process of their own per database (Django's settings
are per process): tests/django/test_site.py starts them; a plain run leaves them out."""

import os

collect_ignore = [] if os.environ.get("JOBTRACK_DJANGO_SCENARIOS") else ["scenarios"]
