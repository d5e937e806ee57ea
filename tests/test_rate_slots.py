"""The slot statement run again after a lost answer (`transient.retrying` in dispatch) gives no
slot to a delivery its first run sent back to the database.

Like tests/test_late_recording.py, this calls the step twice rather than losing the answer on
the wire: the second call is what the retry runs, on a new connection, with the same claim.
"""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import claiming, rates
from deliveries.models import Delivery, Lane
from deliveries.services import event_fan_out, event_publish
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True


def test_a_slot_statement_run_again_gives_no_slot_to_what_its_first_run_sent_back(api):
    """The first run finds the lane's next slot just past the horizon and sends both
    deliveries back; by the second, the horizon's end has passed that slot. A slot given now
    would start a delivery the token no longer holds, which any worker may claim when it comes
    due: sent twice."""
    created = api.create_endpoint("http://127.0.0.1:9/limited", rate_limit=1)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    ids = [
        pk
        for i in range(2)
        for pk in event_fan_out(
            event_id=event_publish(
                environment=api.environment, type="packet.created", data={"i": i}
            ).pk
        )
    ]
    # Due again after waiting (returning): they take slots even while the lane has a line.
    now = timezone.now()
    Delivery.objects.filter(pk__in=ids).update(
        created_at=now - timedelta(seconds=10), next_attempt_at=now - timedelta(seconds=1)
    )
    token = uuid.uuid4()
    claimed = claiming.claim(ids, 0, timezone.now(), token, held=False)
    assert sorted(d.pk for d in claimed) == sorted(ids)
    assert all(d.returning for d in claimed)
    beyond = timezone.now() + timedelta(seconds=rates.horizon() + 1.0)
    Lane.objects.update_or_create(endpoint_id=endpoint_id, defaults={"next_slot_at": beyond})

    first = rates.slots_take(claimed, token)
    assert first.starts == {}
    assert sorted(first.later) == sorted(ids)
    back = Delivery.objects.filter(pk__in=ids)
    assert not back.filter(claim_token__isnull=False).exists()

    time.sleep(1.2)  # the horizon's end passes the lane's next slot
    assert rates.slots_take(claimed, token).starts == {}

    # The room was there: held by the token again, they get slots.
    back.update(claim_token=token, claimed_until=timezone.now() + timedelta(minutes=1))
    assert rates.slots_take(claimed, token).starts
