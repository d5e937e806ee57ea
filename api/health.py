"""Liveness and readiness, for load balancers and orchestrators (no API key, no envelope).

`/healthz`: the process answers. `/readyz`: it can do its job — the database answers, every
migration is applied, the broker accepts a connection; `503` names what failed.
"""

import threading

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from kombu import Connection

BROKER_TIMEOUT = 2.0
DATABASE_TIMEOUT = 5.0  # seconds; PostgreSQL's connect_timeout (config.settings.base) as well


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> str | None:
    """The check runs in a thread of its own, on a connection of its own, for at most
    DATABASE_TIMEOUT: on the worker's kept connection, a server that stopped answering (hung)
    held /readyz until gunicorn killed the worker, and libpq has no client-side query timeout.
    A new connection to it fails after connect_timeout; the thread, left behind if it has not,
    ends when its connection does."""
    outcome: list[str | None] = []
    check = threading.Thread(target=lambda: outcome.append(_database_check()), daemon=True)
    check.start()
    check.join(DATABASE_TIMEOUT)
    if not outcome:
        return f"database unavailable: no answer in {DATABASE_TIMEOUT:g} s"
    return outcome[0]


def _database_check() -> str | None:
    connection = connections[DEFAULT_DB_ALIAS]  # this thread's own
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # whatever it is, the database is not usable
        return f"database unavailable: {type(exc).__name__}"
    finally:
        connection.close()
    if pending:
        return f"migrations: {len(pending)} not applied"
    return None


def _broker() -> str | None:
    try:
        # socket_timeout as well: connect_timeout bounds the connecting alone, and a Redis that
        # takes the connection and never answers kept /readyz waiting past gunicorn's timeout.
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
        with Connection(
            settings.CELERY_BROKER_URL,
            transport_options={**options, "socket_timeout": BROKER_TIMEOUT},
            connect_timeout=BROKER_TIMEOUT,
        ) as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # as above: any failure means "not ready"
        return f"broker unavailable: {type(exc).__name__}"
    return None


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "broker": _broker()}
    failing = {name: problem for name, problem in checks.items() if problem}
    body = {
        "status": "unavailable" if failing else "ok",
        "checks": {name: problem or "ok" for name, problem in checks.items()},
    }
    return JsonResponse(body, status=503 if failing else 200)
