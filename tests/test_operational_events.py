"""Operational events: `webhook_endpoint.disabled` and `delivery.exhausted`, published by the
service into the environment concerned, in the transaction of the change, delivered like any
event to the endpoints that subscribe to them, never about a delivery of an operational event,
and never published by producers.

End to end with a real Celery worker and receivers on 127.0.0.1 (the worker's retry schedule is
1 s x 4: five attempts); the rollback and "failing" cases run the same services in this process,
where the test holds the transaction or the settings.
"""

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery, Event
from deliveries.services import event_fan_out
from tests import factories
from tests.factories import ApiClient
from tests.servers import Receiver, Reply, wait_for
from tests.test_auth import assert_error
from webhooks.models import WebhookEndpoint

DISABLED = "webhook_endpoint.disabled"
EXHAUSTED = "delivery.exhausted"
OPERATIONAL = [DISABLED, EXHAUSTED]


def published(client: ApiClient, type_: str = "packet.created") -> dict[str, Any]:
    response = client.post("/v1/events", {"type": type_, "data": {"n": 1}})
    assert response.status_code == 201, response.content
    return response.json()


def bodies(receiver: Receiver, path: str, type_: str | None = None) -> list[dict[str, Any]]:
    got = [request.json for request in receiver.received(path)]
    return [body for body in got if type_ is None or body["type"] == type_]


def events_of(client: ApiClient, type_: str) -> list[Event]:
    return list(Event.objects.filter(environment=client.environment, type=type_))


def settled(client: ApiClient, *event_types: str) -> Any:
    """The client's environment has events of these types, fanned out, and every delivery of
    them has ended (none pending)."""

    def check() -> bool:
        events = Event.objects.filter(environment=client.environment, type__in=event_types)
        if any(not events.filter(type=t).exists() for t in event_types):
            return False
        if events.filter(fanned_out_at__isnull=True).exists():
            return False
        deliveries = Delivery.objects.filter(event__in=events)
        return not deliveries.filter(status="pending").exists()

    return check


# --- End to end, with a worker ------------------------------------------------------------------


@pytest.fixture
def tenant(worker, settings) -> ApiClient:
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    return factories.api_client(factories.environment())


@pytest.fixture
def stranger(tenant, receiver) -> ApiClient:
    """Another organization, and the same organization's production, each with an endpoint
    subscribed to everything: neither may hear of the tenant's endpoints or deliveries."""
    other = factories.api_client(factories.environment())
    other.create_endpoint(f"{receiver.url}/stranger")
    assert tenant.environment is not None
    production = tenant.environment.organization.environments.get(name="production")
    WebhookEndpoint.objects.create(
        environment=production, url=f"{receiver.url}/production", enabled_events=["*"]
    )
    return other


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_410_disables_the_endpoint_and_subscribers_are_told(tenant, stranger, receiver):
    gone = tenant.create_endpoint(
        f"{receiver.url}/gone",
        enabled_events=["packet.created"],
        description="Billing",
        metadata={"team": "billing"},
        headers={"X-Tenant": "acme", "Authorization": "Bearer hidden-in-the-event"},
        rate_limit=10,
    )
    tenant.create_endpoint(f"{receiver.url}/watcher", enabled_events=[DISABLED])
    tenant.create_endpoint(f"{receiver.url}/everything")
    receiver.script("/gone", Reply(410))
    event = published(tenant)

    [told] = wait_for(lambda: bodies(receiver, "/watcher"))
    shown = tenant.get(f"/v1/webhook_endpoints/{gone['webhook_endpoint_id']}").json()
    assert shown["status"] == "disabled"
    assert told["type"] == DISABLED
    assert told["environment"] == "sandbox"
    assert told["data"] == {"webhook_endpoint": shown, "reason": "gone"}
    assert told["data"]["webhook_endpoint"]["headers"]["Authorization"] == "********"
    raw = receiver.received("/watcher")[0].body.decode()
    assert "hidden-in-the-event" not in raw
    assert gone["signing_secret"] not in raw and "signing_secret" not in raw
    # "*" hears of it too, with the exhausted delivery; the packet itself, of course.
    wait_for(settled(tenant, DISABLED, EXHAUSTED))
    types = sorted(body["type"] for body in bodies(receiver, "/everything"))
    assert types == sorted(["packet.created", DISABLED, EXHAUSTED])
    [exhausted] = bodies(receiver, "/everything", EXHAUSTED)
    assert exhausted["data"]["event_id"] == event["event_id"]
    assert exhausted["data"]["last_status_code"] == 410
    assert len(bodies(receiver, "/watcher")) == 1
    # Nobody else heard a word.
    assert receiver.received("/stranger") == [] and receiver.received("/production") == []
    assert stranger.get("/v1/events").json()["data"] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_exhausted_retries_publish_delivery_exhausted(tenant, stranger, receiver):
    down = tenant.create_endpoint(f"{receiver.url}/down", enabled_events=["packet.created"])
    tenant.create_endpoint(f"{receiver.url}/watcher", enabled_events=[EXHAUSTED])
    receiver.script("/down", *[Reply(503, body=b"down for good")] * 5)
    event = published(tenant)

    [told] = wait_for(lambda: bodies(receiver, "/watcher"), timeout=40)
    assert len(receiver.received("/down")) == 5  # every attempt of the schedule, then this
    delivery = Delivery.objects.get(event__public_id=event["event_id"])
    assert delivery.status == "failed"
    assert told["type"] == EXHAUSTED
    assert told["data"] == {
        "delivery_id": delivery.public_id,
        "event_id": event["event_id"],
        "event_type": "packet.created",
        "webhook_endpoint_id": down["webhook_endpoint_id"],
        "attempts": 5,
        "last_status_code": 503,
        "last_error": "http_503",
    }
    listed = tenant.get(f"/v1/webhook_endpoints/{down['webhook_endpoint_id']}/deliveries")
    [shown] = listed.json()["data"]
    assert (shown["attempt_count"], shown["last_error"]) == (5, told["data"]["last_error"])
    # A failing endpoint is not disabled for that: it has not failed for days.
    assert (
        tenant.get(f"/v1/webhook_endpoints/{down['webhook_endpoint_id']}").json()["status"]
        == "enabled"
    )
    assert receiver.received("/stranger") == [] and receiver.received("/production") == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_endpoint_failing_its_own_operational_events_is_not_told_about_them(tenant, receiver):
    # Subscribed to everything and answering 500 to everything: its packet's delivery is
    # exhausted, told to it (delivery.exhausted), which is exhausted in turn, and told no more.
    tenant.create_endpoint(f"{receiver.url}/dead")
    receiver.respond("/dead", lambda _: Reply(500))
    published(tenant)
    wait_for(settled(tenant, "packet.created", EXHAUSTED), timeout=60)
    got = [body["type"] for body in bodies(receiver, "/dead")]
    assert got == ["packet.created"] * 5 + [EXHAUSTED] * 5
    [told] = events_of(tenant, EXHAUSTED)
    assert json.loads(told.body)["data"]["event_type"] == "packet.created"
    assert Delivery.objects.filter(event=told, status="failed").count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gone_on_an_operational_event_disables_without_telling(tenant, receiver):
    # The first endpoint's 410 is told to the second, which answers 410 to it: the second is
    # disabled, and nothing is published about that (nor about its exhausted delivery), so a
    # third that answers every webhook_endpoint.disabled hears of the first only.
    first = tenant.create_endpoint(f"{receiver.url}/first", enabled_events=["packet.created"])
    second = tenant.create_endpoint(f"{receiver.url}/second", enabled_events=OPERATIONAL)
    tenant.create_endpoint(f"{receiver.url}/third", enabled_events=[DISABLED])
    receiver.script("/first", Reply(410))
    receiver.respond("/second", lambda _: Reply(410))
    published(tenant)

    def second_disabled() -> bool:
        return WebhookEndpoint.objects.filter(
            public_id=second["webhook_endpoint_id"], status="disabled"
        ).exists()

    wait_for(second_disabled)
    wait_for(settled(tenant, DISABLED, EXHAUSTED))
    [told] = bodies(receiver, "/third")
    assert told["data"]["webhook_endpoint"]["webhook_endpoint_id"] == first["webhook_endpoint_id"]
    assert [
        json.loads(e.body)["data"]["webhook_endpoint"]["webhook_endpoint_id"]
        for e in events_of(tenant, DISABLED)
    ] == [first["webhook_endpoint_id"]]
    [exhausted] = events_of(tenant, EXHAUSTED)
    assert json.loads(exhausted.body)["data"]["webhook_endpoint_id"] == first["webhook_endpoint_id"]


# --- In this process: the transaction, and the "failing" disable ---------------------------------


def send_everything_due() -> None:
    """Fans out and sends what was published, in this process, until nothing is left."""
    for _ in range(10):
        events = list(Event.objects.filter(fanned_out_at__isnull=True).values_list("id", flat=True))
        for event_id in events:
            event_fan_out(event_id=event_id)
        due = list(
            Delivery.objects.filter(status="pending", attempt_count=0).values_list("id", flat=True)
        )
        if not events and not due:
            return
        if due:
            deliveries_send(delivery_ids=due, wait_for_all=True)
    raise AssertionError("still publishing after 10 rounds: a loop?")


@pytest.fixture
def here(db, settings) -> ApiClient:
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_RETRY_SCHEDULE = []  # the first failure is the last
    return factories.api_client(factories.environment())


def test_published_in_the_changes_transaction_and_a_rollback_publishes_nothing(here, receiver):
    gone = here.create_endpoint(f"{receiver.url}/gone", enabled_events=["packet.created"])
    here.create_endpoint(f"{receiver.url}/watcher", enabled_events=OPERATIONAL)
    receiver.script("/gone", Reply(410), Reply(410))
    assert here.environment is not None
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.deliver_here(here.environment)
        # Written by the recording, in the transaction that disabled the endpoint.
        assert {e.type for e in Event.objects.all()} == {"packet.created", *OPERATIONAL}
        raise RuntimeError("the recording's transaction rolls back")
    assert not Event.objects.exists()
    assert WebhookEndpoint.objects.get(public_id=gone["webhook_endpoint_id"]).status == "enabled"
    factories.deliver_here(here.environment)
    send_everything_due()
    assert sorted(b["type"] for b in bodies(receiver, "/watcher")) == sorted(OPERATIONAL)


def test_failing_for_the_configured_period_is_told_as_failing(here, receiver, settings):
    settings.WEBHOOKS_RETRY_SCHEDULE = [3600]  # not exhausted: disabled for failing alone
    settings.WEBHOOKS_AUTO_DISABLE_AFTER = 0
    failing = here.create_endpoint(f"{receiver.url}/failing", enabled_events=["judgment.created"])
    here.create_endpoint(f"{receiver.url}/watcher", enabled_events=[DISABLED])
    receiver.respond("/failing", lambda _: Reply(500))
    assert here.environment is not None
    factories.deliver_here(here.environment, "judgment.created")
    send_everything_due()
    [told] = bodies(receiver, "/watcher")
    assert told["data"]["reason"] == "failing"
    shown = here.get(f"/v1/webhook_endpoints/{failing['webhook_endpoint_id']}").json()
    assert told["data"]["webhook_endpoint"] == shown and shown["status"] == "disabled"
    assert not events_of(here, EXHAUSTED)  # its delivery was cancelled, not exhausted


# --- Producers cannot publish them; endpoints subscribe to them ----------------------------------


@pytest.mark.parametrize("type_", OPERATIONAL)
def test_producers_cannot_publish_operational_events(here, type_):
    response = here.post("/v1/events", {"type": type_, "data": {}})
    error = assert_error(response, 400, "parameter_invalid", "type")
    assert type_ in error["message"]
    assert here.environment is not None
    with pytest.raises(CommandError, match="--type"):
        call_command(
            "publish_event",
            f"--organization={here.environment.organization.slug}",
            "--environment=sandbox",
            f"--type={type_}",
            stdout=StringIO(),
        )
    assert not Event.objects.exists()


def test_the_catalog_lists_them_and_endpoints_subscribe_by_name(here):
    catalog = {e["type"]: e["description"] for e in here.get("/v1/event_types").json()["data"]}
    for type_ in OPERATIONAL:
        assert catalog[type_]
        assert here.create_endpoint(enabled_events=[type_])["enabled_events"] == [type_]
    both = here.create_endpoint(enabled_events=[*OPERATIONAL, "packet.created"])
    assert both["enabled_events"] == [*OPERATIONAL, "packet.created"]
