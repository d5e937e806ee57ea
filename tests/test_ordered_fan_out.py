"""A fan-out task and an ordered endpoint's lane, when two events' fan-outs cross.

A fan-out commits its deliveries, then releases the lanes with no head in hand. Between the
two, another event's fan-out (in another worker) can find the lane idle and release the first
delivery in line: the earlier event's, made claimed by the later event's task. That task has
to send it, though it is not its event's. No worker runs in this module, so the fan-outs run
exactly as the test drives them.
"""

import pytest

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
