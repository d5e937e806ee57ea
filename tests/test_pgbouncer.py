"""The service behind PgBouncer in transaction pooling (Debian's `pgbouncer`): gunicorn and a
Celery worker reach PostgreSQL only through a private PgBouncer, as a deployment that outgrows
one machine runs them.

Each pool holds a single server connection, so every client of a pooler database takes turns
on one PostgreSQL session. Whatever one client left on that session (a prepared statement, a
server-side cursor, a session SET) would meet the next one; the tests look at that session once
the API has been used and a delivery made.
"""

from typing import Any

import psycopg
import pytest
import requests
from django.db import connection
from psycopg.rows import dict_row

from deliveries import signature
from tests import factories
from tests.servers import (
    FAST_DELIVERY_SETTINGS,
    CeleryWorker,
    Gunicorn,
    PrivatePgBouncer,
    PrivateRedis,
    Receiver,
    pgbouncer_binary,
    wait_for,
)

# Connections kept across requests and tasks, as production keeps them (DATABASE_CONN_MAX_AGE):
# a client connection then outlives many transactions, each on whichever session the pooler has.
POOLED = {"DATABASE_TRANSACTION_POOLING": "true", "TEST_DATABASE_CONN_MAX_AGE": "60"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        pgbouncer_binary() is None, reason="needs Debian's pgbouncer (apt-get install pgbouncer)"
    ),
]


def workers_entry(database: str) -> str:
    """The pooler database the README's deployment gives the workers: their own pool, whose
    server sessions skip the wait for the WAL flush."""
    return f"{database}_workers"


@pytest.fixture
def pgbouncer(transactional_db):
    s = connection.settings_dict
    database = s["NAME"]
    upstream = f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432}"
    pooler = PrivatePgBouncer(
        pool_size=1,
        upstream=upstream,
        databases={
            workers_entry(database): (
                f"{upstream} dbname={database} connect_query='SET synchronous_commit = off; "
                "SET max_parallel_workers_per_gather = 0; SET jit = off'"
            )
        },
    )
    yield pooler
    pooler.destroy()


def session_of(pooler: PrivatePgBouncer, database: str) -> dict[str, Any]:
    """The pool's one PostgreSQL session, as a client of that pooler database finds it."""
    with psycopg.connect(pooler.url(database), autocommit=True, row_factory=dict_row) as c:
        row = c.execute(
            "SELECT pg_backend_pid() AS pid,"
            " (SELECT count(*) FROM pg_prepared_statements) AS prepared,"
            " (SELECT count(*) FROM pg_cursors) AS cursors,"
            " current_setting('synchronous_commit') AS synchronous_commit"
        ).fetchone()
    assert row is not None
    return row


def transactions(pooler: PrivatePgBouncer, database: str) -> int:
    [stats] = [row for row in pooler.show("STATS") if row["database"] == database]
    return int(stats["total_xact_count"])


def test_the_api_and_a_delivery_run_through_pgbouncer_in_transaction_pooling(
    pgbouncer: PrivatePgBouncer, broker: PrivateRedis, receiver: Receiver
):
    database = connection.settings_dict["NAME"]
    before = session_of(pgbouncer, database)
    pooled = pgbouncer.url(database)
    web = Gunicorn(pooled, broker.url, **POOLED, **FAST_DELIVERY_SETTINGS)
    worker = CeleryWorker(pooled, broker.url, **POOLED)  # shares the web's pool and session
    try:
        _, raw_key = factories.api_key(factories.environment())
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {raw_key}"

        created = api.post(
            f"{web.url}/v1/webhook_endpoints", json={"url": f"{receiver.url}/pooled"}, timeout=30
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()
        endpoint_url = f"{web.url}/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}"
        published = api.post(
            f"{web.url}/v1/events",
            json={"type": "packet.created", "data": {"packet": {"id": "pkt_1"}}},
            timeout=30,
        )
        assert published.status_code == 201, published.text
        event = published.json()

        [request] = wait_for(lambda: receiver.received("/pooled"), timeout=30)
        signature.verify(request.body, request.headers["MD-Signature"], endpoint["signing_secret"])
        assert request.json["id"] == event["event_id"]
        assert request.json["data"] == {"packet": {"id": "pkt_1"}}

        for _ in range(10):  # past psycopg's prepare_threshold, were it to prepare anything
            listed = api.get(f"{web.url}/v1/webhook_endpoints", timeout=10).json()
            assert [e["webhook_endpoint_id"] for e in listed["data"]] == [
                endpoint["webhook_endpoint_id"]
            ]
            retrieved = api.get(endpoint_url, timeout=10).json()
            assert retrieved["url"] == f"{receiver.url}/pooled"

        def recorded() -> dict[str, Any] | None:
            shown = api.get(f"{web.url}/v1/events/{event['event_id']}", timeout=10).json()
            return shown if shown["delivery_counts"]["succeeded"] == 1 else None

        wait_for(recorded, timeout=30)  # the worker recorded the attempt through the pooler
        [delivery] = api.get(f"{endpoint_url}/deliveries", timeout=10).json()["data"]
        assert delivery["status"] == "succeeded"

        after = session_of(pgbouncer, database)
    finally:
        worker.stop()
        web.stop()

    # The web and the worker reached PostgreSQL only through the pooler...
    assert transactions(pgbouncer, database) > 20
    # ... and took turns on one session, which none of them changed for the others.
    assert after["pid"] == before["pid"]
    assert after["prepared"] == 0
    assert after["cursors"] == 0
    assert after["synchronous_commit"] == "on", "a worker's session SET reached the web"


def test_workers_keep_asynchronous_commits_on_a_pooler_database_of_their_own(
    pgbouncer: PrivatePgBouncer, broker: PrivateRedis, receiver: Receiver, settings
):
    """The README's deployment: the workers' pooler database sets synchronous_commit = off on
    its server sessions (connect_query), the web's pool keeps PostgreSQL's default."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1
    database = connection.settings_dict["NAME"]
    worker = CeleryWorker(pgbouncer.url(workers_entry(database)), broker.url, **POOLED)
    try:
        api = factories.api_client(factories.environment())
        created = api.post("/v1/webhook_endpoints", {"url": f"{receiver.url}/workers"})
        assert created.status_code == 201, created.content
        assert api.post("/v1/events", {"type": "packet.created"}).status_code == 201
        [request] = wait_for(lambda: receiver.received("/workers"), timeout=30)
        signing_secret = created.json()["signing_secret"]
        signature.verify(request.body, request.headers["MD-Signature"], signing_secret)
        workers = session_of(pgbouncer, workers_entry(database))
    finally:
        worker.stop()

    assert transactions(pgbouncer, workers_entry(database)) > 0
    assert workers["synchronous_commit"] == "off"
    assert workers["prepared"] == 0
    assert session_of(pgbouncer, database)["synchronous_commit"] == "on"
