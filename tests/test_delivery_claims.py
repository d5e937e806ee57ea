"""What a send claims, with no worker running: nothing but the test claims or sends.

A worker (tests/test_delivery.py has one for the module) would take these deliveries too: its
sweep queues an unclaimed due delivery once its task is 2 s old, and any send task it runs
tops its batch up with due deliveries.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from core.ids import is_public_id
from deliveries import services
from deliveries.dispatch import deliveries_send
from deliveries.models import DELIVERY_ID_PREFIX, LONG_ID_LENGTH, Delivery
from deliveries.services import FirstClaim, event_fan_out, event_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # receivers live on 127.0.0.1


def test_fan_out_makes_its_first_batch_claimed_for_the_sender_alone(api, receiver):
    for i in range(3):
        api.create_endpoint(f"{receiver.url}/claimed{i}")
    first = FirstClaim(token=uuid.uuid4(), until=timezone.now() + timedelta(minutes=5), count=2)
    # Fanned out before the publish commits: the fan-out task its commit queues then finds the
    # event done.
    with transaction.atomic():
        event = event_publish(environment=api.environment, type="packet.created", data={})
        ids = event_fan_out(event_id=event.pk, first_claim=first)
    tokens = dict(Delivery.objects.filter(id__in=ids).values_list("id", "claim_token"))
    assert [tokens[pk] for pk in ids] == [first.token, first.token, None]  # claimed first

    # Another sender (or the sweep) gets only the unclaimed one...
    deliveries_send(delivery_ids=ids, top_up=False, wait_for_all=True)
    assert len(receiver.received()) == 1
    # ...and the holder sends its two without claiming them again.
    deliveries_send(delivery_ids=ids[:2], top_up=False, wait_for_all=True, held_with=first.token)
    assert len(receiver.received()) == 3
    assert set(Delivery.objects.filter(id__in=ids).values_list("status", "claim_token")) == {
        ("succeeded", None)
    }


def test_a_fan_out_in_chunks_makes_each_delivery_as_its_endpoint_and_the_claim_ask(
    api, receiver, monkeypatch
):
    """Across chunks (three deliveries a statement here), each delivery is born claimed by the
    first batch, queued, or parked behind its ordered endpoint's lane, with an id of its own."""
    monkeypatch.setattr(services, "FAN_OUT_CHUNK", 3)
    orders = ["unordered", "ordered"] + ["unordered"] * 5
    for i, order in enumerate(orders):
        api.create_endpoint(f"{receiver.url}/e{i}", delivery_order=order)
    first = FirstClaim(token=uuid.uuid4(), until=timezone.now() + timedelta(minutes=5), count=7)
    none = FirstClaim(token=uuid.uuid4(), until=timezone.now() + timedelta(minutes=5), count=0)
    with transaction.atomic():  # fanned out here, not by a fan-out task
        before = timezone.now()
        claimed = event_publish(environment=api.environment, type="packet.created", data={})
        event_fan_out(event_id=claimed.pk, first_claim=first)
        # The ordered endpoint's lane holds the first event's delivery: this one is parked.
        queued = event_publish(environment=api.environment, type="packet.created", data={})
        event_fan_out(event_id=queued.pk, first_claim=none)

    def born(event):
        made = list(Delivery.objects.filter(event=event))
        assert len({d.public_id for d in made}) == len(orders)
        states = []
        for d in made:
            assert is_public_id(d.public_id, DELIVERY_ID_PREFIX, LONG_ID_LENGTH)
            assert (d.status, d.attempt_count, d.last_error) == ("pending", 0, "")
            assert d.created_at >= before
            if d.next_attempt_at is None:
                assert d.enqueued_at is d.claimed_until is d.claim_token is None
                states.append("parked")
            elif d.next_attempt_at > d.created_at:  # made due as its lane released it
                assert d.enqueued_at is not None and d.claim_token is not None
                states.append("released")
            elif d.claim_token is None:
                assert d.enqueued_at is not None and d.claimed_until is None
                states.append("queued")
            else:
                assert (d.claim_token, d.claimed_until) == (first.token, first.until)
                states.append("claimed")
        return sorted(states)

    assert born(claimed) == ["claimed"] * 6 + ["released"]
    assert born(queued) == ["parked"] + ["queued"] * 6


def test_a_send_told_its_deliveries_events_claims_those_of_these_events_only(api, receiver):
    """The events a send is told (a fan-out's, the sweep's) narrow its claim to their days'
    partitions: a delivery of an event it was not told is left for the sweep, and naming more
    events than needed does no harm."""
    api.create_endpoint(f"{receiver.url}/told")
    unclaimed = FirstClaim(token=uuid.uuid4(), until=timezone.now(), count=0)
    with transaction.atomic():  # fanned out here, not by a fan-out task (see above)
        first = event_publish(environment=api.environment, type="packet.created", data={})
        second = event_publish(environment=api.environment, type="packet.created", data={})
        [one] = event_fan_out(event_id=first.pk, first_claim=unclaimed)
        [two] = event_fan_out(event_id=second.pk, first_claim=unclaimed)

    deliveries_send(delivery_ids=[one, two], top_up=False, wait_for_all=True, event_ids=[first.pk])
    assert [json.loads(r.body)["id"] for r in receiver.received()] == [first.public_id]
    assert Delivery.objects.get(pk=two).attempt_count == 0

    deliveries_send(
        delivery_ids=[two], top_up=False, wait_for_all=True, event_ids=[first.pk, second.pk]
    )
    assert [json.loads(r.body)["id"] for r in receiver.received()] == [
        first.public_id,
        second.public_id,
    ]


def test_a_top_up_that_found_nothing_quiets_the_next_ones_for_a_while(api, receiver, settings):
    """A batch's top-up that finds fewer due deliveries than it has room for keeps this
    process's next batches from topping up for WEBHOOKS_TOP_UP_QUIET_SECONDS: at rest each
    fan-out's top-up scanned for nothing. Once the quiet ends, a batch tops up again."""
    settings.WEBHOOKS_TOP_UP_QUIET_SECONDS = 60
    api.create_endpoint(f"{receiver.url}/quiet")
    unclaimed = FirstClaim(token=uuid.uuid4(), until=timezone.now(), count=0)

    def made() -> int:
        with transaction.atomic():  # fanned out here, not by a fan-out task (see above)
            event = event_publish(environment=api.environment, type="packet.created", data={})
            [delivery] = event_fan_out(event_id=event.pk, first_claim=unclaimed)
        return delivery

    def sent() -> list[int]:
        return sorted(Delivery.objects.filter(attempt_count=1).values_list("id", flat=True))

    alone = made()
    deliveries_send(delivery_ids=[alone], wait_for_all=True)  # its top-up finds nothing
    assert sent() == [alone]

    asked, waiting = made(), made()
    deliveries_send(delivery_ids=[asked], wait_for_all=True)  # quiet: not topped up
    assert sent() == sorted([alone, asked])
    assert Delivery.objects.get(pk=waiting).attempt_count == 0

    settings.WEBHOOKS_TOP_UP_QUIET_SECONDS = 0  # the quiet is over
    last = made()
    deliveries_send(delivery_ids=[last], wait_for_all=True)  # topped up with the waiting one
    assert sent() == sorted([alone, asked, waiting, last])


def test_an_array_parameter_holds_integers_and_identifiers_and_refuses_anything_else():
    """`sql.array` writes values out unquoted: what PostgreSQL reads back is what was given,
    and a value that would need quoting (or read as NULL) is refused, not sent."""
    from django.db import connection

    from deliveries import sql

    ids = [services.new_delivery_id() for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[], %s::bigint[]", [sql.array(ids), sql.array([1, -2, 3])])
        assert cursor.fetchone() == (ids, [1, -2, 3])
    for hostile in ["a,b", 'a"b', "a b", "{a}", "a\\b", "NULL", "null", "", "1a"]:
        with pytest.raises(ValueError):
            sql.array(["dlv_ok", hostile])
