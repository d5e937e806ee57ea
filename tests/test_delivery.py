"""Signed delivery end to end: a real Celery worker, Redis, PostgreSQL and HTTP receiver."""

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from deliveries import signature
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.services import event_publish
from tests import factories
from tests.servers import Reply, free_port, wait_for
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # receivers live on 127.0.0.1


# The module's worker (conftest.worker) has a delivery deadline far past its endpoints' slow
# replies: one that answers is never a timeout, however loaded the machine.
WORKER_SETTINGS = {"WEBHOOKS_DELIVERY_TIMEOUT": "10"}


@pytest.fixture
def tenant(worker):
    env = factories.environment()
    return factories.api_client(env)


def publish(client, type_="judgment.created", data=None):
    response = client.post("/v1/events", {"type": type_, "data": data or {"n": 1}})
    assert response.status_code == 201, response.content
    return response.json()


def delivery_of(event_id, endpoint_id):
    return Delivery.objects.get(event__public_id=event_id, endpoint__public_id=endpoint_id)


def finished(event_id, endpoint_id, status="succeeded"):
    return lambda: Delivery.objects.filter(
        event__public_id=event_id, endpoint__public_id=endpoint_id, status=status
    ).exists()


def test_matching_endpoints_receive_signed_events(tenant, receiver):
    everything = tenant.create_endpoint(f"{receiver.url}/all")
    judgments = tenant.create_endpoint(
        f"{receiver.url}/judgments", enabled_events=["judgment.created"]
    )
    packets = tenant.create_endpoint(f"{receiver.url}/packets", enabled_events=["packet.created"])

    event = publish(tenant, "judgment.created", {"judgment": {"id": "jdg_1", "score": 0.93}})
    got = wait_for(lambda: receiver.received("/all") and receiver.received("/judgments"))
    wait_for(finished(event["event_id"], judgments["webhook_endpoint_id"]))

    for path, endpoint in (("/all", everything), ("/judgments", judgments)):
        [request] = receiver.received(path)
        body = request.json
        assert body == {
            "id": event["event_id"],
            "object": "event",
            "type": "judgment.created",
            "api_version": "2026-06-11",
            "environment": "sandbox",
            "created_at": event["created_at"],
            "data": {"judgment": {"id": "jdg_1", "score": 0.93}},
        }
        headers = request.headers
        assert headers["Content-Type"] == "application/json"
        assert headers["MD-Event-Id"] == event["event_id"]
        assert headers["MD-Event-Type"] == "judgment.created"
        delivery = delivery_of(event["event_id"], endpoint["webhook_endpoint_id"])
        assert headers["MD-Delivery-Id"] == delivery.public_id
        assert "Kinetic-Webhooks" in headers["User-Agent"]
        signature.verify(request.body, headers["MD-Signature"], endpoint["signing_secret"])
    assert got
    # The packet endpoint has no delivery at all: the filter is applied at fan-out.
    assert not Delivery.objects.filter(endpoint__public_id=packets["webhook_endpoint_id"])
    assert not receiver.received("/packets")


def test_signature_fails_on_a_changed_byte_an_old_timestamp_or_another_secret(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/sig")
    other = tenant.create_endpoint(f"{receiver.url}/other-secret")
    publish(tenant)
    [request] = wait_for(lambda: receiver.received("/sig"))
    header = request.headers["MD-Signature"]
    secret = endpoint["signing_secret"]
    t = signature.verify(request.body, header, secret)

    tampered = request.body.replace(b'"n":1', b'"n":2')
    assert tampered != request.body
    for payload, secrets, now in (
        (tampered, secret, None),
        (request.body[:-1], secret, None),
        (request.body, other["signing_secret"], None),
        (request.body, secret, t + 301),
        (request.body, secret, t - 301),
    ):
        with pytest.raises(signature.SignatureVerificationError):
            signature.verify(payload, header, secrets, now=now)
    assert signature.verify(request.body, header, secret, now=t + 299) == t


def test_disabled_and_deleted_endpoints_and_other_tenants_get_nothing(tenant, receiver):
    live = tenant.create_endpoint(f"{receiver.url}/live")
    disabled = tenant.create_endpoint(f"{receiver.url}/disabled")
    tenant.patch(f"/v1/webhook_endpoints/{disabled['webhook_endpoint_id']}", {"status": "disabled"})
    deleted = tenant.create_endpoint(f"{receiver.url}/deleted")
    tenant.delete(f"/v1/webhook_endpoints/{deleted['webhook_endpoint_id']}")
    org = tenant.environment.organization
    same_org_production = factories.api_client(org.environments.get(name="production"))
    assert same_org_production.environment is not None
    production_endpoint = WebhookEndpoint.objects.create(
        environment=same_org_production.environment, url=f"{receiver.url}/production"
    )
    other_org = factories.api_client(factories.environment())
    other_org.create_endpoint(f"{receiver.url}/other-org")

    event = publish(tenant)
    wait_for(finished(event["event_id"], live["webhook_endpoint_id"]))
    assert [r.path for r in receiver.received()] == ["/live"]
    assert Delivery.objects.filter(event__public_id=event["event_id"]).count() == 1
    assert production_endpoint.deliveries.count() == 0


def test_disabling_cancels_what_is_queued_and_reenabling_resumes_new_events_only(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/flaky")
    path = f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}"
    receiver.script("/flaky", Reply(500), Reply(500), Reply(500))
    first = publish(tenant)
    wait_for(lambda: len(receiver.received("/flaky")) >= 1)
    tenant.patch(path, {"status": "disabled"})
    delivery = delivery_of(first["event_id"], endpoint["webhook_endpoint_id"])
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "cancelled")
    sent_before = len(receiver.received("/flaky"))

    tenant.patch(path, {"status": "enabled"})
    second = publish(tenant)
    wait_for(finished(second["event_id"], endpoint["webhook_endpoint_id"]), timeout=30)
    ids = [r.headers["MD-Event-Id"] for r in receiver.received("/flaky")[sent_before:]]
    assert set(ids) == {second["event_id"]}
    assert Delivery.objects.get(pk=delivery.pk).status == "cancelled"


def test_a_failure_recorded_after_the_endpoint_was_disabled_does_not_revive_the_delivery(
    tenant, receiver
):
    endpoint = tenant.create_endpoint(f"{receiver.url}/slow-fail")
    # In flight while the endpoint is disabled: it answers after 3 s, well within the worker's
    # 10 s deadline, so the 500 (not a timeout) is what gets recorded.
    receiver.script("/slow-fail", Reply(500, delay=3), Reply(500), Reply(500))
    event = publish(tenant)
    wait_for(lambda: len(receiver.received("/slow-fail")) == 1)
    tenant.patch(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"status": "disabled"})
    delivery = delivery_of(event["event_id"], endpoint["webhook_endpoint_id"])
    wait_for(lambda: DeliveryAttempt.objects.filter(delivery=delivery).count() == 1)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == ("cancelled", None)
    assert (delivery.attempt_count, delivery.last_status_code) == (1, 500)
    # Retries come 1 s apart here and the sweep runs every 0.3 s: a revived delivery would be
    # sent again within this wait, once the endpoint is enabled.
    tenant.patch(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"status": "enabled"})
    time.sleep(2.5)
    assert Delivery.objects.get(pk=delivery.pk).status == "cancelled"
    assert len(receiver.received("/slow-fail")) == 1


def test_failures_are_retried_until_a_2xx_with_the_same_event(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/retry")
    receiver.script(
        "/retry",
        Reply(500, body=b"upstream exploded"),
        Reply(302, headers={"Location": f"{receiver.url}/elsewhere"}),
        Reply(200, body=b'{"ok": true}'),
    )
    event = publish(tenant)
    wait_for(finished(event["event_id"], endpoint["webhook_endpoint_id"]), timeout=30)

    requests_ = receiver.received("/retry")
    assert len(requests_) == 3
    assert len({r.body for r in requests_}) == 1  # the same bytes every time
    assert {r.headers["MD-Event-Id"] for r in requests_} == {event["event_id"]}
    for request in requests_:
        signature.verify(request.body, request.headers["MD-Signature"], endpoint["signing_secret"])
    assert not receiver.received("/elsewhere")  # redirects are not followed

    log = tenant.get(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/deliveries")
    assert log.status_code == 200
    [delivery] = log.json()["data"]
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 3
    assert delivery["event_id"] == event["event_id"]
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 302, 200]
    assert [a["error"] for a in attempts] == ["http_500", "redirect_not_followed", ""]
    assert attempts[0]["response_body"] == "upstream exploded"
    assert attempts[2]["response_body"] == '{"ok": true}'
    assert all(a["duration_ms"] >= 0 for a in attempts)
    # The success ended the endpoint's failure streak.
    stored = WebhookEndpoint.objects.get(public_id=endpoint["webhook_endpoint_id"])
    assert (stored.consecutive_failures, stored.failing_since) == (0, None)


def test_timeouts_and_refused_connections_are_failed_attempts(tenant, receiver):
    slow = tenant.create_endpoint(f"{receiver.url}/slow")
    receiver.script("/slow", Reply(200, delay=30))  # the worker's timeout is 10 s
    closed = tenant.create_endpoint(f"http://127.0.0.1:{_closed_port()}/nobody")
    event = publish(tenant)
    wait_for(finished(event["event_id"], slow["webhook_endpoint_id"]), timeout=60)
    # This event's deliveries' attempts: the endpoints also get the operational event that the
    # refused delivery's exhaustion publishes, a few seconds in.
    first = DeliveryAttempt.objects.filter(
        delivery=delivery_of(event["event_id"], slow["webhook_endpoint_id"])
    ).order_by("number")
    assert first[0].error == "timeout"
    assert first[0].status_code is None
    refused = wait_for(
        lambda: DeliveryAttempt.objects.filter(
            delivery=delivery_of(event["event_id"], closed["webhook_endpoint_id"])
        ).first()
    )
    assert refused.error == "connection_error"
    assert not refused.succeeded


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_410_gone_disables_the_endpoint_at_once(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/gone")
    receiver.script("/gone", Reply(410))
    event = publish(tenant)
    wait_for(finished(event["event_id"], endpoint["webhook_endpoint_id"], "failed"))
    stored = WebhookEndpoint.objects.get(public_id=endpoint["webhook_endpoint_id"])
    assert stored.status == "disabled"
    assert "410" in stored.disabled_reason
    assert len(receiver.received("/gone")) == 1
    retrieved = tenant.get(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}")
    assert retrieved.json()["status"] == "disabled"


def test_retry_after_is_honoured(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/busy")
    receiver.script("/busy", Reply(429, headers={"Retry-After": "4"}), Reply(200))
    event = publish(tenant)
    wait_for(finished(event["event_id"], endpoint["webhook_endpoint_id"]), timeout=30)
    first, second = receiver.received("/busy")
    # The schedule says 1 s; the receiver asked for 4.
    assert second.at - first.at >= 3.5


def test_a_rolled_back_transaction_sends_nothing(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/tx")
    environment = tenant.environment
    with pytest.raises(RuntimeError), transaction.atomic():
        ghost = event_publish(environment=environment, type="packet.created", data={"n": 0})
        raise RuntimeError("the producer's transaction fails")
    with transaction.atomic():
        real = event_publish(environment=environment, type="packet.created", data={"n": 1})
    wait_for(finished(real.public_id, endpoint["webhook_endpoint_id"]))
    assert [r.headers["MD-Event-Id"] for r in receiver.received("/tx")] == [real.public_id]
    assert not Event.objects.filter(public_id=ghost.public_id).exists()


def test_manual_retry_sends_again_now(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/manual")
    event = publish(tenant)
    wait_for(finished(event["event_id"], endpoint["webhook_endpoint_id"]))
    delivery = delivery_of(event["event_id"], endpoint["webhook_endpoint_id"])
    response = tenant.post(f"/v1/deliveries/{delivery.public_id}/retry")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    wait_for(lambda: len(receiver.received("/manual")) == 2)
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).attempt_count == 2)
    assert Delivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_a_retry_is_refused_while_an_attempt_is_in_flight(tenant, receiver):
    """The attempt in flight would overwrite the retry asked for (its success marks the
    delivery succeeded): refused with a message saying why, and nothing changes. Once the
    attempt has ended, the retry goes out."""
    endpoint = tenant.create_endpoint(f"{receiver.url}/busy")
    # In flight while the retry is asked for: it answers after 3 s, well within the worker's
    # 10 s deadline, so the attempt succeeds and is not retried.
    receiver.script("/busy", Reply(delay=3))
    event = publish(tenant)
    wait_for(lambda: receiver.received("/busy"))
    delivery = delivery_of(event["event_id"], endpoint["webhook_endpoint_id"])
    response = tenant.post(f"/v1/deliveries/{delivery.public_id}/retry")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("parameter_invalid", "delivery_id")
    assert "in progress" in error["message"]

    wait_for(finished(event["event_id"], endpoint["webhook_endpoint_id"]))
    assert len(receiver.received("/busy")) == 1
    response = tenant.post(f"/v1/deliveries/{delivery.public_id}/retry")
    assert response.status_code == 202, response.content
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).attempt_count == 2)
    assert len(receiver.received("/busy")) == 2


def test_events_api_shows_each_deliverys_state(tenant, receiver):
    ok = tenant.create_endpoint(f"{receiver.url}/ok")
    gone = tenant.create_endpoint(f"{receiver.url}/gone-again")
    receiver.script("/gone-again", Reply(410))
    event = publish(tenant, "packet.created", {"packet": "pkt_1"})
    assert event["delivery_counts"] == {"pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    wait_for(finished(event["event_id"], ok["webhook_endpoint_id"]))
    wait_for(finished(event["event_id"], gone["webhook_endpoint_id"], "failed"))

    detail = tenant.get(f"/v1/events/{event['event_id']}").json()
    assert detail["data"] == {"packet": "pkt_1"}
    assert detail["delivery_counts"] == {"pending": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    states = {d["webhook_endpoint_id"]: d for d in detail["deliveries"]}
    assert states[ok["webhook_endpoint_id"]]["status"] == "succeeded"
    assert states[ok["webhook_endpoint_id"]]["last_status_code"] == 200
    assert states[gone["webhook_endpoint_id"]]["status"] == "failed"
    # The 410 was told too, as operational events (tests/test_operational_events.py).
    listed = tenant.get("/v1/events").json()["data"]
    packets = [e for e in listed if e["type"] == "packet.created"]
    assert [e["event_id"] for e in packets] == [event["event_id"]]
    assert packets[0]["delivery_counts"]["succeeded"] == 1
    assert {e["type"] for e in listed} == {
        "packet.created",
        "webhook_endpoint.disabled",
        "delivery.exhausted",
    }


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        # Python reads NaN, Infinity and 1e400 (as inf); no receiver's JSON parser does.
        ('{"x": NaN}', "--data: data must be JSON"),
        ('{"x": Infinity}', "--data: data must be JSON"),
        ('{"x": [1e400]}', "--data: data must be JSON"),
        # 10 KB: a shell passes it as one argument.
        ('{"a":' + "[" * 5000 + "]" * 5000 + "}", "--data is not valid JSON: nested too deeply"),
    ],
    ids=["nan", "infinity", "overflow", "deep"],
)
@pytest.mark.django_db
def test_publish_event_command_refuses_data_no_receiver_could_read(data, refusal):
    environment = factories.environment()
    with pytest.raises(CommandError, match=refusal):
        call_command(
            "publish_event",
            f"--organization={environment.organization.slug}",
            "--environment=sandbox",
            "--type=packet.created",
            f"--data={data}",
            stdout=StringIO(),
        )
    assert not Event.objects.exists()


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.django_db
def test_a_producer_in_process_cannot_publish_numbers_json_has_not(number):
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        event_publish(
            environment=factories.environment(), type="packet.created", data={"n": [number]}
        )
    assert refused.value.param == "data"
    assert not Event.objects.exists()


def test_publish_event_command(tenant, receiver):
    endpoint = tenant.create_endpoint(f"{receiver.url}/cli")
    org = tenant.environment.organization
    out = StringIO()
    call_command(
        "publish_event",
        f"--organization={org.slug}",
        "--environment=sandbox",
        "--type=packet.created",
        '--data={"packet": {"id": "pkt_9"}}',
        stdout=out,
    )
    event_id = out.getvalue().splitlines()[-1]
    assert event_id.startswith("evt_")
    wait_for(finished(event_id, endpoint["webhook_endpoint_id"]))
    [request] = receiver.received("/cli")
    assert json.loads(request.body)["data"] == {"packet": {"id": "pkt_9"}}
