"""Disabling or deleting an endpoint while a worker records attempts of its deliveries.

A worker's recording transaction (recording.record) locks the deliveries it records, then
the endpoint's row for its failure streak. An API DELETE or PATCH that disables the endpoint
locks the endpoint's row, then cancels its pending deliveries. When the cancel waited for a
delivery the worker held, the two waited on each other: PostgreSQL aborted the API's
transaction after deadlock_timeout and the client got a 500. The cancel now skips the rows a
worker holds (they are in flight) and the worker cancels them when it next claims them.

The worker's transaction is played here on a connection of its own, statement by statement,
so that the API request comes exactly between its two locks.
"""

import threading
from typing import Any

import psycopg
import pytest
from django.db import connections
from psycopg import sql

from deliveries import dispatch
from deliveries.models import Delivery
from deliveries.services import event_fan_out, event_publish
from tests.servers import database_url
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10.0


def waiting_on_a_lock(monitor: psycopg.Connection) -> int:
    row = monitor.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return row[0] if row else 0


@pytest.mark.parametrize(
    "request_",
    [("DELETE", None, "endpoint deleted"), ("PATCH", {"status": "disabled"}, "endpoint disabled")],
    ids=["delete", "disable"],
)
def test_disabling_an_endpoint_while_a_worker_records_its_deliveries(api, settings, request_):
    method, body, reason = request_
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    public_id = api.create_endpoint("http://127.0.0.1:9/hook")["webhook_endpoint_id"]
    endpoint = WebhookEndpoint.objects.get(public_id=public_id)
    held, queued = (
        event_fan_out(
            event_id=event_publish(environment=api.environment, type="packet.created", data={}).pk
        )[0]
        for _ in range(2)
    )

    url = database_url()
    with psycopg.connect(url) as worker, psycopg.connect(url, autocommit=True) as monitor:
        # The worker's recording transaction, first half: the delivery it records.
        worker.execute(
            sql.SQL("UPDATE {} SET last_error = 'recording' WHERE id = %s").format(
                sql.Identifier(Delivery._meta.db_table)
            ),
            [held],
        )
        answer: dict[str, Any] = {}

        def call_api() -> None:
            try:
                answer["response"] = api.request(method, f"/v1/webhook_endpoints/{public_id}", body)
            finally:
                connections.close_all()

        caller = threading.Thread(target=call_api)
        caller.start()
        # The API request has its lock on the endpoint's row and is waiting for the held
        # delivery (before the fix), or is done.
        for _ in range(int(TIMEOUT / 0.01)):
            if not caller.is_alive() or waiting_on_a_lock(monitor):
                break
            caller.join(0.01)
        # Second half: the endpoint's failure streak, then COMMIT.
        worker.execute(
            sql.SQL(
                "UPDATE {} SET consecutive_failures = consecutive_failures + 1 WHERE id = %s"
            ).format(sql.Identifier(WebhookEndpoint._meta.db_table)),
            [endpoint.pk],
        )
        worker.commit()
        caller.join(TIMEOUT)
        assert not caller.is_alive()

    response = answer["response"]
    assert response.status_code == 200, response.content  # was 500: deadlock detected
    endpoint.refresh_from_db()
    assert endpoint.status == "disabled"
    assert endpoint.consecutive_failures == 1  # the worker's transaction committed too
    # What no worker held is cancelled at once...
    rows = dict(Delivery.objects.filter(pk__in=[held, queued]).values_list("pk", "status"))
    assert rows == {held: "pending", queued: "cancelled"}
    # ...and what one held, when a worker next claims it: never sent.
    dispatch.deliveries_send(delivery_ids=[held], top_up=False, wait_for_all=True)
    delivery = Delivery.objects.get(pk=held)
    assert (delivery.status, delivery.last_error, delivery.attempt_count) == (
        "cancelled",
        reason,
        0,
    )
