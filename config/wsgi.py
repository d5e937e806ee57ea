import os

from django.core.wsgi import get_wsgi_application

from core import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

# Before the application loads its middleware: Django's instrumentation adds its own first.
tracing.setup()
application = get_wsgi_application()
