"""A request to a rate-limited endpoint starts at its slot, and only within LATE_SECONDS of it
(deliveries.rates.slot_kept). One that comes to its slot later would go out beside the next
slot, which another process may hold: it takes another slot instead, under the same claim, or,
an ordered endpoint's, is let go without an attempt (tests/test_endpoint_rate_limit.py stops a
worker mid-run to make its starts late).

These hand claimed deliveries to a process's engine directly, with their slots set, as its
slot thread does (dispatch.Engine._slots_came), and a real receiver on the other side.
"""

import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import transaction
from django.utils import timezone

from deliveries import claiming, dispatch, rates, sending
from deliveries.admission import NotAttempted
from deliveries.models import Lane
from deliveries.ordering import lanes_make
from deliveries.services import event_fan_out, event_publish
from tests.servers import database_url, wait_for
from tests.test_cancel_while_recording import waiting_on_a_lock
from webhooks.models import WebhookEndpoint

# The slot thread has a connection of its own, which sees only what is committed.
pytestmark = pytest.mark.django_db(transaction=True)

RATE = 4


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True


@pytest.fixture
def engine():
    process = dispatch.Engine()
    yield process
    process.slots.close(wait=5.0)  # its thread closes its connection: the database is dropped
    process.paced.shutdown(wait=True)
    process.executor.shutdown(wait=True)


def claimed_one(api, receiver) -> tuple[claiming.Claimed, list[str], uuid.UUID]:
    """A delivery to a RATE/s endpoint on the receiver, claimed; its signing secrets; the
    claim's token."""
    created = api.create_endpoint(f"{receiver.url}/limited", rate_limit=RATE)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    event = event_publish(environment=api.environment, type="packet.created", data={})
    ids = event_fan_out(event_id=event.pk)
    token = uuid.uuid4()
    (delivery,) = claiming.claim(ids, 0, timezone.now(), token, held=False)
    assert delivery.rate_limit == RATE
    secrets = sending.SigningKeys().load({endpoint_id}, timezone.now())[endpoint_id]
    return delivery, secrets, token


def test_a_request_handed_over_before_its_slot_starts_at_the_slot(api, receiver, engine):
    delivery, secrets, token = claimed_one(api, receiver)
    slot = timezone.now() + timedelta(seconds=0.5)

    admitted = engine.admit(delivery, secrets, slot, claim=token)

    assert admitted is not None and admitted.waits
    assert admitted.future.result(timeout=10).outcome.succeeded
    (got,) = receiver.received("/limited")
    assert got.at >= slot.timestamp()


def test_a_request_that_comes_to_its_slot_late_takes_another_under_its_claim(api, receiver, engine):
    """Its slot went by a second ago (its process was stopped, say): it is not sent then, but
    at a slot taken from its endpoint's lane after that, and once."""
    delivery, secrets, token = claimed_one(api, receiver)
    late = timezone.now() - timedelta(seconds=1)
    found_late = time.time()

    admitted = engine.admit(delivery, secrets, late, claim=token)

    assert admitted is not None
    assert admitted.future.result(timeout=10).outcome.succeeded
    (got,) = receiver.received("/limited")
    assert got.at >= found_late
    lane = Lane.objects.get(endpoint_id=delivery.endpoint_id)
    assert lane.next_slot_at is not None
    assert lane.next_slot_at.timestamp() >= found_late + rates.step(RATE) - 0.001


def test_a_late_request_cancelled_while_it_takes_another_slot_is_not_sent(api, receiver, engine):
    """The cancel check (Engine._drop_cancelled_waiting: its endpoint was disabled) drops it
    while the slot thread takes its new slot, held up here behind the lane's row lock."""
    delivery, secrets, token = claimed_one(api, receiver)
    lanes_make([delivery.endpoint_id])

    with psycopg.connect(database_url(), autocommit=True) as monitor, transaction.atomic():
        Lane.objects.select_for_update().get(endpoint_id=delivery.endpoint_id)
        admitted = engine.admit(
            delivery, secrets, timezone.now() - timedelta(seconds=1), claim=token
        )
        assert admitted is not None
        wait_for(lambda: waiting_on_a_lock(monitor) == 1, timeout=10)
        assert delivery.pk in engine.handed.waiting()
        engine.handed.drop([delivery.pk])

    with pytest.raises(NotAttempted):
        admitted.future.result(timeout=10)
    time.sleep(0.2)
    assert receiver.received("/limited") == []
    assert engine.handed.waiting() == {}
    assert engine.timetable.waiting() == {}


def test_a_late_request_without_a_claim_of_its_own_is_not_attempted(api, receiver, engine):
    """An ordered endpoint's (admitted by its task, with no claim given): let go, due at once,
    for its lane's next claim."""
    delivery, secrets, _ = claimed_one(api, receiver)

    admitted = engine.admit(delivery, secrets, timezone.now() - timedelta(seconds=1))

    assert admitted is not None
    with pytest.raises(NotAttempted):
        admitted.future.result(timeout=10)
    time.sleep(0.2)
    assert receiver.received("/limited") == []


def test_a_slot_is_kept_within_the_late_allowance_and_not_after():
    assert rates.slot_kept(time.time())
    assert not rates.slot_kept(time.time() - 2 * rates.LATE_SECONDS)
    before = time.time()
    assert rates.slot_kept(before + 0.1)
    assert time.time() >= before + 0.1
