"""The recorder writes what has ended in one transaction, whatever the claims it belongs to, and
each delivery's outcome only under the claim it was sent with.

A worker process records the attempts that outlive their task's first wave on one thread (one
database connection), a round at a time; a round mixes the results of many tasks' claims.
"""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import claiming, recording, transport
from deliveries.models import Delivery, DeliveryAttempt
from deliveries.sending import Sent
from deliveries.services import event_fan_out, event_publish
from webhooks.models import WebhookEndpoint


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True


def test_a_round_records_each_delivery_under_its_own_claim(api):
    for i in range(3):
        api.create_endpoint(f"http://127.0.0.1:9/round{i}")
    event = event_publish(environment=api.environment, type="packet.created", data={})
    ids = event_fan_out(event_id=event.pk)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    until = timezone.now() + timedelta(minutes=5)
    for pk, token in zip(ids, (a, b, c), strict=True):
        Delivery.objects.filter(pk=pk).update(claim_token=token, claimed_until=until)
    [first], [second], [third] = (
        claiming.load([pk], token) for pk, token in zip(ids, (a, b, c), strict=True)
    )
    ok = transport.Outcome(200, "", "ok", 5)
    failed = transport.Outcome(500, "http_500", "oops", 5)

    def sent(delivery: claiming.Claimed, outcome: transport.Outcome) -> Sent:
        return Sent(delivery=delivery, started_at=timezone.now(), outcome=outcome)

    # One round: a success under claim a, a failure under claim b, and a success sent under a
    # claim (a) that lapsed: the delivery is now another sender's (c).
    recording.record({a: [sent(first, ok), sent(third, ok)], b: [sent(second, failed)]})

    rows = {
        d.pk: d
        for d in Delivery.objects.filter(id__in=ids).only("status", "claim_token", "attempt_count")
    }
    assert (rows[ids[0]].status, rows[ids[0]].claim_token) == ("succeeded", None)
    assert (rows[ids[1]].status, rows[ids[1]].claim_token) == ("pending", None)  # a retry
    assert rows[ids[1]].attempt_count == 1
    # The other sender's claim is left alone...
    assert (rows[ids[2]].status, rows[ids[2]].claim_token) == ("pending", c)
    assert rows[ids[2]].attempt_count == 0
    # ...and every attempt made is on record, the lapsed claim's too.
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids).count() == 3


def test_recording_again_after_a_lost_commit_answer_counts_nothing_twice(api):
    """`recording.record` runs again when the connection fails during its COMMIT
    (transient.retrying), though the COMMIT may have reached the server: the second run must
    find it all done."""
    api.create_endpoint("http://127.0.0.1:9/answers")
    failing = api.create_endpoint("http://127.0.0.1:9/fails")["webhook_endpoint_id"]
    event = event_publish(environment=api.environment, type="packet.created", data={})
    ids = event_fan_out(event_id=event.pk)
    token = uuid.uuid4()
    Delivery.objects.filter(pk__in=ids).update(
        claim_token=token, claimed_until=timezone.now() + timedelta(minutes=5)
    )
    failing_pk = WebhookEndpoint.objects.get(public_id=failing).pk
    deliveries = sorted(claiming.load(ids, token), key=lambda d: d.endpoint_id == failing_pk)
    outcomes = [transport.Outcome(200, "", "ok", 5), transport.Outcome(500, "http_500", "no", 5)]
    claims = {
        token: [
            Sent(d, timezone.now(), outcome)
            for d, outcome in zip(deliveries, outcomes, strict=True)
        ]
    }

    recording.record(claims)
    recording.record(claims)  # the retry, after a COMMIT that did reach the server

    assert_recorded_once(ids, failing)


def assert_recorded_once(ids: list[int], failing: str) -> None:
    """Two deliveries, one attempt each (one succeeded, one failed, to the endpoint `failing`)
    on record once: their attempts, their outcomes and the failing endpoint's streak."""
    attempts = DeliveryAttempt.objects.filter(delivery_id__in=ids)
    assert sorted(attempts.values_list("number", "succeeded")) == [(1, False), (1, True)]
    assert sorted(Delivery.objects.filter(pk__in=ids).values_list("status", "attempt_count")) == [
        ("pending", 1),
        ("succeeded", 1),
    ]
    assert WebhookEndpoint.objects.get(public_id=failing).consecutive_failures == 1
