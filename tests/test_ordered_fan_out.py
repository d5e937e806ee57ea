"""A fan-out task and an ordered endpoint's lane, when two events' fan-outs cross.

A fan-out commits its deliveries, then releases the lanes with no head in hand. Between the
two, another event's fan-out (in another worker) can find the lane idle and release the first
delivery in line: the earlier event's, made claimed by the later event's task. That task has
to send it, though it is not its event's. No worker runs in this module, so the fan-outs run
exactly as the test drives them.

The lane's lock does not keep an earlier event's fan-out from committing (it commits first,
then looks for idle lanes), so whoever releases a lane must read its line and the events still
on their way as of one moment.
"""

import threading

import pytest
from django.db import connection

from deliveries.models import Delivery, Event, Lane
from deliveries.services import event_fan_out
from deliveries.tasks import fan_out_task
from tests import factories
from tests.servers import wait_for
from tests.test_ordered_delivery import first_receipts, publish


@pytest.mark.django_db(transaction=True)
def test_a_fan_out_sends_the_earlier_delivery_its_lane_releases_to_it(receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/o", delivery_order="ordered")
    first, second = publish(client, 2)
    events = {e.public_id: e.pk for e in Event.objects.all()}

    # The first event's fan-out, up to its COMMIT: its delivery parked, its lane not released
    # yet (its worker slower than the next one, or killed at that point).
    [head] = event_fan_out(event_id=events[first])
    Delivery.objects.filter(pk=head).update(next_attempt_at=None, enqueued_at=None)
    Lane.objects.update(head_delivery_id=None)

    # The second event's fan-out, as a worker runs it: it releases the first event's delivery,
    # claims it with its first batch, and sends it; the head's end releases its own.
    fan_out_task(events[second])
    wait_for(lambda: first_receipts(receiver.received("/o")) == [first, second], timeout=10)
    wait_for(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=10)
    assert Delivery.objects.filter(claim_token__isnull=False).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_release_reading_the_line_as_an_earlier_fan_out_commits_releases_the_earlier_one(
    receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/o", delivery_order="ordered")
    first, second = publish(client, 2)
    events = {e.public_id: e.pk for e in Event.objects.all()}
    reading, read = threading.Event(), threading.Event()
    returned: dict[str, list[int]] = {}

    def paused_before_reading_the_events_on_their_way(execute, sql, params, many, context):
        # The release's read of the events not fanned out yet (the fan-out's mark is an UPDATE).
        if sql.lstrip().startswith("SELECT") and "fanned_out_at" in sql and not reading.is_set():
            reading.set()
            assert read.wait(10), "the test never let the read go"
        return execute(sql, params, many, context)

    def fan_out(public_id: str, paused: bool = False) -> None:
        try:
            if paused:
                with connection.execute_wrapper(paused_before_reading_the_events_on_their_way):
                    returned[public_id] = event_fan_out(event_id=events[public_id])
            else:
                returned[public_id] = event_fan_out(event_id=events[public_id])
        finally:
            connection.close()

    # The second event's fan-out commits its delivery, finds the lane idle and, holding the
    # lane's lock, reads its line: only its own delivery is parked there.
    later = threading.Thread(target=fan_out, args=(second, True))
    later.start()
    assert reading.wait(10), "the release never read the events on their way"
    # Now the first event's fan-out commits its delivery (then waits for the lane's lock).
    earlier = threading.Thread(target=fan_out, args=(first,))
    earlier.start()
    wait_for(lambda: Delivery.objects.filter(event_id=events[first]).exists(), timeout=10)
    read.set()
    for thread in (later, earlier):
        thread.join(10)
        assert not thread.is_alive()

    head = Delivery.objects.get(event_id=events[first])
    assert Lane.objects.get().head_delivery_id == head.pk
    assert returned == {second: [head.pk], first: []}
    assert Delivery.objects.get(event_id=events[second]).next_attempt_at is None  # parked
