"""The events API without a worker: publishing input, reading, tenancy, scopes."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts import scopes
from accounts.portal import portal_session_create
from api.parsers import MAX_DEPTH
from core.errors import InvalidInput
from deliveries.claiming import claim
from deliveries.models import Delivery, Event
from deliveries.selectors import deliveries_due
from deliveries.services import (
    FirstClaim,
    endpoint_test_event_send,
    event_fan_out,
    event_publish,
)
from tests import factories
from tests.servers import Reply
from tests.test_auth import assert_error
from webhooks.models import WebhookEndpoint


def test_publish_returns_the_event(api):
    response = api.post("/v1/events", {"type": "packet.created", "data": {"packet": {"id": 7}}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["event_id"].startswith("evt_") and len(body["event_id"]) == 24
    assert body["type"] == "packet.created"
    assert body["environment"] == "sandbox"
    assert body["api_version"] == "2026-06-11"
    assert body["data"] == {"packet": {"id": 7}}
    stored = Event.objects.get(public_id=body["event_id"])
    delivered = json.loads(stored.body)
    assert delivered["id"] == body["event_id"]
    assert delivered["created_at"] == body["created_at"]
    assert stored.body.isascii()


def test_data_defaults_to_an_empty_object(api):
    assert api.post("/v1/events", {"type": "judgment.created"}).json()["data"] == {}


def test_odd_but_valid_strings_survive(api):
    data = {"nul": "a\u0000b", "emoji": "\U0001f600", "rtl": "\u202e", "cjk": "判决"}
    raw = json.dumps({"type": "judgment.created", "data": data})
    response = api.post("/v1/events", raw=raw)
    assert response.status_code == 201, response.content
    event = Event.objects.get(public_id=response.json()["event_id"])
    assert json.loads(event.body)["data"] == data


def test_a_lone_surrogate_is_a_400(api):
    raw = '{"type": "judgment.created", "data": {"s": "\\ud800"}}'
    error = assert_error(api.post("/v1/events", raw=raw), 400, "parameter_invalid")
    assert "surrogate" in error["message"]
    raw = '{"url": "https://example.com/\\udfff"}'
    assert_error(api.post("/v1/webhook_endpoints", raw=raw), 400, "parameter_invalid")


def nested(levels: int) -> Any:
    """A JSON value whose objects and arrays nest `levels` deep."""
    value: Any = {"deepest": True}
    for _ in range(levels - 1):
        value = [value]
    return value


def shows_the_event(api, admin_client, event_id: str) -> None:
    """Every page that shows an event's data: the API's, the portal's and the console's."""
    assert api.get("/v1/events").status_code == 200
    assert api.get(f"/v1/events/{event_id}").status_code == 200
    key, _ = factories.api_key(api.environment)
    _, token = portal_session_create(api_key=key, read_only=True)
    portal = Client()
    assert portal.get(f"/portal/open/{token}").status_code == 302
    assert portal.get(f"/portal/events/{event_id}/").status_code == 200
    pk = Event.objects.get(public_id=event_id).pk
    assert admin_client.get(f"/admin/deliveries/event/{pk}/change/").status_code == 200


def test_data_nested_to_the_limit_is_published_and_shown_and_deeper_is_refused(api, admin_client):
    # The body is the first level and data, an object, the second.
    deepest = {"a": nested(MAX_DEPTH - 2)}
    response = api.post("/v1/events", {"type": "packet.created", "data": deepest})
    assert response.status_code == 201, response.content
    assert response.json()["data"] == deepest
    shows_the_event(api, admin_client, response.json()["event_id"])
    assert api.get("/v1/events").json()["data"][0]["data"] == deepest

    too_deep = {"type": "packet.created", "data": {"a": nested(MAX_DEPTH - 1)}}
    for headers in ({}, {"Idempotency-Key": "too-deep"}):
        response = api.post("/v1/events", too_deep, headers=headers)
        error = assert_error(response, 400, "parameter_invalid", param="data")
        assert "nested too deeply" in error["message"]
    assert Event.objects.count() == 1


def test_data_deeper_than_the_api_takes_from_another_producer_is_shown(api, admin_client):
    # The publish_event command and in-process producers do not go through the API's parser;
    # events published through it before its limit may be as deep.
    for levels in range(1000, MAX_DEPTH, -10):
        try:
            event = event_publish(
                environment=api.environment, type="packet.created", data={"a": nested(levels)}
            )
        except InvalidInput:
            continue  # too deep for the service to encode: never stored
        break
    assert levels > 500
    shows_the_event(api, admin_client, event.public_id)
    data = '{"a":' + "[" * (levels - 1) + '{"deepest":true}' + "]" * (levels - 1) + "}"
    assert f'"data":{data}' in api.get(f"/v1/events/{event.public_id}").content.decode()


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "parameter_missing", "type"),
        ({"type": "judgment.exploded"}, "parameter_invalid", "type"),
        ({"type": "*"}, "parameter_invalid", "type"),
        ({"type": 3}, "parameter_invalid", "type"),
        ({"type": "judgment.created", "data": [1, 2]}, "parameter_invalid", "data"),
        ({"type": "judgment.created", "data": "text"}, "parameter_invalid", "data"),
        ({"type": "judgment.created", "data": {"x": "y" * 70_000}}, "parameter_invalid", "data"),
        ({"type": "judgment.created", "id": "evt_mine"}, "parameter_invalid", "id"),
        ({"type": "judgment.created", "extra": 1}, "parameter_unknown", "extra"),
    ],
)
def test_bad_events_are_refused_by_name(api, body, code, param):
    assert_error(api.post("/v1/events", body), 400, code, param=param)
    assert not Event.objects.exists()


def test_publishing_is_idempotent(api):
    headers = {"Idempotency-Key": "evt-1"}
    first = api.post("/v1/events", {"type": "packet.created"}, headers=headers)
    again = api.post("/v1/events", {"type": "packet.created"}, headers=headers)
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert Event.objects.count() == 1


def test_scopes(sandbox):
    reader = factories.api_client(sandbox, scopes=[scopes.EVENTS_READ])
    writer = factories.api_client(sandbox, scopes=[scopes.EVENTS_WRITE])
    assert_error(reader.post("/v1/events", {"type": "packet.created"}), 403, "insufficient_scope")
    event = writer.post("/v1/events", {"type": "packet.created"}).json()
    assert_error(writer.get("/v1/events"), 403, "insufficient_scope")
    assert_error(writer.get(f"/v1/events/{event['event_id']}"), 403, "insufficient_scope")
    assert reader.get(f"/v1/events/{event['event_id']}").status_code == 200


def test_events_list_pages_and_stays_in_its_tenant(api):
    made = [api.post("/v1/events", {"type": "packet.created"}).json()["event_id"] for _ in range(5)]
    other = factories.api_client(factories.environment())
    foreign = other.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    page = api.get("/v1/events?limit=3").json()
    assert [e["event_id"] for e in page["data"]] == made[::-1][:3]
    assert page["has_more"] is True
    rest = api.get(f"/v1/events?starting_after={made[2]}").json()
    assert [e["event_id"] for e in rest["data"]] == made[::-1][3:]
    newer = api.get(f"/v1/events?limit=2&ending_before={made[1]}").json()
    assert [e["event_id"] for e in newer["data"]] == [made[3], made[2]]
    assert newer["has_more"] is True
    assert_error(api.get(f"/v1/events/{foreign}"), 404, "not_found", param="event_id")
    assert_error(
        api.get(f"/v1/events?starting_after={foreign}"), 400, "parameter_invalid", "starting_after"
    )
    assert_error(api.get("/v1/events/evt_\x00"), 404, "not_found", param="event_id")


def test_fan_out_makes_one_delivery_per_matching_endpoint_once(api):
    for events in (None, ["packet.created"], ["judgment.created"]):
        api.create_endpoint(**({} if events is None else {"enabled_events": events}))
    event = Event.objects.get(
        public_id=api.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    )
    made = event_fan_out(event_id=event.pk)
    assert len(made) == 2
    assert event_fan_out(event_id=event.pk) == []  # a second run (a redelivered task) adds none
    assert set(made) == set(Delivery.objects.filter(event=event).values_list("id", flat=True))
    assert Delivery.objects.filter(event=event).count() == 2


def test_endpoint_deliveries_and_retry_are_tenant_scoped(api):
    endpoint = api.create_endpoint()
    other = factories.api_client(factories.environment())
    other_endpoint = other.create_endpoint()
    event = Event.objects.get(
        public_id=other.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    )
    event_fan_out(event_id=event.pk)
    foreign_delivery = Delivery.objects.get(event=event)

    assert api.get(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/deliveries"
    ).json() == {"object": "list", "data": [], "has_more": False}
    assert_error(
        api.get(f"/v1/webhook_endpoints/{other_endpoint['webhook_endpoint_id']}/deliveries"),
        404,
        "not_found",
        param="webhook_endpoint_id",
    )
    assert_error(
        api.post(f"/v1/deliveries/{foreign_delivery.public_id}/retry"),
        404,
        "not_found",
        param="delivery_id",
    )


def test_retry_refuses_a_disabled_endpoint(api):
    endpoint = api.create_endpoint()
    event = Event.objects.get(
        public_id=api.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    )
    event_fan_out(event_id=event.pk)
    delivery = Delivery.objects.get(event=event)
    api.patch(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"status": "disabled"})
    error = assert_error(
        api.post(f"/v1/deliveries/{delivery.public_id}/retry"),
        400,
        "parameter_invalid",
        param="delivery_id",
    )
    assert "disabled" in error["message"]


def test_send_a_test_event_and_get_the_outcome(api, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    only = api.create_endpoint(f"{receiver.url}/ping", enabled_events=["packet.created"])
    bystander = api.create_endpoint(f"{receiver.url}/other")
    response = api.post(f"/v1/webhook_endpoints/{only['webhook_endpoint_id']}/test")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["event_type"] == "ping"
    assert body["status"] == "succeeded"
    assert [(a["number"], a["status_code"], a["error"]) for a in body["attempts"]] == [(1, 200, "")]
    [request] = receiver.received("/ping")
    assert request.json["type"] == "ping"
    assert request.json["data"] == {"webhook_endpoint_id": only["webhook_endpoint_id"]}
    assert request.headers["MD-Event-Id"] == body["event_id"]
    assert not receiver.received("/other")
    del bystander


def test_the_api_test_event_is_made_claimed_for_the_request_alone(api):
    """The request sends its test event itself: made claimed with the request's claim, no
    worker's top-up or sweep takes it between the commit and the send, and the request's own
    claim compares no clock (a wall clock stepped back since it was made due once left it for
    the sweep). If the request dies, the claim lapses and the delivery is due as any other."""
    endpoint = WebhookEndpoint.objects.get(public_id=api.create_endpoint()["webhook_endpoint_id"])
    first = FirstClaim.starting_now(1)
    delivery = endpoint_test_event_send(endpoint=endpoint, first_claim=first)
    assert first.claimed == {delivery.pk: delivery.event_id}
    a_worker_later = timezone.now() + timedelta(seconds=1)
    assert not deliveries_due(a_worker_later).filter(pk=delivery.pk).exists()
    assert delivery.next_attempt_at is not None
    clock_stepped_back = delivery.next_attempt_at - timedelta(seconds=5)
    [claimed] = claim([delivery.pk], 0, clock_stepped_back, first.token, held=True)
    assert claimed.pk == delivery.pk
    assert deliveries_due(first.until + timedelta(seconds=1)).filter(pk=delivery.pk).exists()


def test_an_admin_test_event_is_queued_unclaimed(api):
    endpoint = WebhookEndpoint.objects.get(public_id=api.create_endpoint()["webhook_endpoint_id"])
    delivery = endpoint_test_event_send(endpoint=endpoint)
    assert deliveries_due(timezone.now()).filter(pk=delivery.pk).exists()


def test_a_failing_test_event_reports_the_failure(api, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint = api.create_endpoint(f"{receiver.url}/down")
    receiver.script("/down", Reply(503, body=b"maintenance"))
    body = api.post(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/test").json()
    assert body["status"] == "pending"  # retried on the schedule
    [attempt] = body["attempts"]
    assert (attempt["status_code"], attempt["error"], attempt["response_body"]) == (
        503,
        "http_503",
        "maintenance",
    )


def test_test_events_need_an_enabled_endpoint_of_ones_own(api):
    endpoint = api.create_endpoint()
    path = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}"
    api.patch(path, {"status": "disabled"})
    assert_error(api.post(f"{path}/test"), 400, "parameter_invalid", "webhook_endpoint_id")
    foreign = factories.api_client(factories.environment()).create_endpoint()
    assert_error(
        api.post(f"/v1/webhook_endpoints/{foreign['webhook_endpoint_id']}/test"),
        404,
        "not_found",
        param="webhook_endpoint_id",
    )
    reader = factories.api_client(api.environment, scopes=["webhook_endpoints:read"])
    assert_error(reader.post(f"{path}/test"), 403, "insufficient_scope")


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_deleting_or_disabling_cancels_queued_deliveries(api, how):
    endpoint = api.create_endpoint()
    other = api.create_endpoint()
    event = Event.objects.get(
        public_id=api.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    )
    event_fan_out(event_id=event.pk)  # queued, not sent yet
    path = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}"
    if how == "delete":
        api.delete(path)
    else:
        api.patch(path, {"status": "disabled"})
    mine = Delivery.objects.get(event=event, endpoint__public_id=endpoint["webhook_endpoint_id"])
    theirs = Delivery.objects.get(event=event, endpoint__public_id=other["webhook_endpoint_id"])
    assert (mine.status, mine.next_attempt_at) == ("cancelled", None)
    assert mine.last_error == f"endpoint {how}d"
    assert theirs.status == "pending"


def test_event_and_delivery_times_are_utc_to_the_second_with_four_digit_years(api):
    """The contract's `YYYY-MM-DDTHH:MM:SSZ` on events and deliveries too (api.serializers'
    ApiDateTimeField): in UTC whatever zone the time was written in, microseconds dropped,
    and a year before 1000 with its leading zero."""
    from datetime import datetime, timedelta, timezone

    endpoint = api.create_endpoint()
    event_id = api.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
    event = Event.objects.get(public_id=event_id)
    event_fan_out(event_id=event.pk)
    written = datetime(987, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    Event.objects.filter(pk=event.pk).update(created_at=written)
    Delivery.objects.filter(event=event).update(created_at=written)
    shown = "0987-01-02T03:04:05Z"

    assert api.get(f"/v1/events/{event_id}").json()["created_at"] == shown
    listed = {e["event_id"]: e for e in api.get("/v1/events").json()["data"]}
    assert listed[event_id]["created_at"] == shown
    path = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/deliveries"
    [delivery] = api.get(path).json()["data"]
    assert delivery["created_at"] == shown
