import gc
import os
from typing import Any

from celery import Celery
from celery.concurrency import get_implementation
from celery.signals import (
    beat_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
)

from core import tracing

# As gunicorn's config.wsgi: a worker or beat started without the variable runs with the
# production settings, which refuse to start without their secrets; a worker must never fall
# back to local settings (DEBUG, private destinations allowed, a published encryption key).
# Local development opts in (bin/dev sets config.settings.local).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

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


@worker_ready.connect
@worker_process_init.connect
def startup_objects_out_of_the_collectors_way(**kwargs: Any) -> None:
    """What a worker process builds to start (Django, Celery, every module's objects) lives as
    long as it does. Frozen (gc.freeze), it is left out of the collector's full passes, which
    otherwise walk all of it again: each took about 85 ms of a busy worker, with the
    interpreter stopped (docs/delivery-control.md)."""
    gc.collect()
    gc.freeze()


@worker_init.connect
def worker_commits_without_waiting_for_the_disk(**kwargs: Any) -> None:
    """WEBHOOKS_WORKER_SYNCHRONOUS_COMMIT (see its comment in the settings).

    Behind a transaction pooler the session SET would stay on a server connection the pooler
    then lends to the web, whose commits must wait; there the pooler sets it for the workers
    instead (README: Behind PgBouncer).
    """
    from django.conf import settings
    from django.db.backends.signals import connection_created

    sessions_are_ours = not settings.DATABASE_TRANSACTION_POOLING
    if not settings.WEBHOOKS_WORKER_SYNCHRONOUS_COMMIT and sessions_are_ours:
        connection_created.connect(_commit_asynchronously, dispatch_uid="worker-async-commit")


def _commit_asynchronously(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")


@worker_init.connect
def tracing_in_a_worker_that_does_not_fork(sender: Any, **kwargs: Any) -> None:
    """Traces (core.tracing) where the tasks run: in this process with the threads or solo
    pool; with prefork, in each child after its fork (below), not in the parent."""
    if get_implementation(sender.pool_cls).__module__ != "celery.concurrency.prefork":
        tracing.setup()


@worker_process_init.connect
@beat_init.connect
def tracing_in_a_pool_process_or_beat(**kwargs: Any) -> None:
    tracing.setup()
