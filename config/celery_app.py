import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("kinetic")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fixup closes the database connection around every task unless this is set
# (celery/celery#4116): a new PostgreSQL connection per delivery batch would cost more than the
# batch. Instead, tasks treat connections the way Django treats them around a request (below).
app.conf.CELERY_DB_REUSE_MAX = 1_000_000


@task_prerun.connect
@task_postrun.connect
def _database_connections_as_around_a_request(**kwargs: Any) -> None:
    """Drop connections that are broken (a PostgreSQL restart), errored or past CONN_MAX_AGE,
    as Django does at each request's start and end; keep the healthy ones."""
    from django.db import close_old_connections

    close_old_connections()
