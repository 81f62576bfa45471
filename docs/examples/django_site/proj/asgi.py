import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django_app = get_asgi_application()

from jobtrack.contrib.django import mount  # noqa: E402  (after Django is set up)

# The dashboard at /jobs/, signed in by the Django session.
application = mount(django_app, "/jobs")
