"""The peer's Django project: django-webhook set up as its docs say. Runs in the peer venv only.

Importing it loads the Celery app, as Celery's "first steps with Django" has a project do, so
that django-webhook's tasks (declared on `celery.current_app`) bind to it.
"""

from bench.peer.site.celery_app import app

__all__ = ["app"]
