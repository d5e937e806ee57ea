"""Old events, deliveries, attempts and idempotency records are pruned; nothing else is."""

from datetime import timedelta

from django.utils import timezone

from api.idempotency import records_prune
from api.models import IdempotencyRecord
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.retention import retention_prune
from tests import factories
from tests.servers import Reply


def test_prune_deletes_what_is_past_retention_and_only_that(sandbox, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(sandbox)
    client.create_endpoint(f"{receiver.url}/ok")
    flaky = client.create_endpoint(f"{receiver.url}/flaky")
    receiver.script("/flaky", *[Reply(500)] * 4)  # every delivery to it fails once
    old = [factories.deliver_here(sandbox) for _ in range(3)]  # delivered (and one retrying)
    recent = factories.deliver_here(sandbox)
    long_ago = timezone.now() - timedelta(days=31)
    Event.objects.filter(pk__in=[e.pk for e in old]).update(created_at=long_ago)
    # Old events still retrying stay; finished old ones go.
    to_flaky = Delivery.objects.filter(endpoint__public_id=flaky["webhook_endpoint_id"])
    to_flaky.filter(event__in=old[:2]).update(status="failed")
    for key, url in (("old", "https://x.example"), ("new", "https://y.example")):
        client.post("/v1/webhook_endpoints", {"url": url}, headers={"Idempotency-Key": key})
    day_ago = timezone.now() - timedelta(hours=25)
    IdempotencyRecord.objects.filter(key="old").update(created_at=day_ago)

    assert retention_prune(batch_size=1) == {"events": 2}
    assert records_prune(batch_size=1) == 1
    remaining = set(Event.objects.values_list("pk", flat=True))
    assert remaining == {old[2].pk, recent.pk}
    assert not Delivery.objects.filter(event__in=old[:2]).exists()
    assert not DeliveryAttempt.objects.filter(delivery__event__in=old[:2]).exists()
    assert DeliveryAttempt.objects.filter(delivery__event=recent).count() == 2
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert retention_prune() == {"events": 0}
    assert records_prune() == 0


def test_prune_deletes_finished_recoveries_past_retention(sandbox):
    from deliveries.models import Recovery
    from deliveries.recovery import recovery_create
    from webhooks.services import endpoint_create

    endpoint = endpoint_create(environment=sandbox, url="https://example.com/hook").endpoint
    hour_ago = timezone.now() - timedelta(hours=1)
    done_long_ago, running_long_ago, done_recently = (
        recovery_create(endpoint=endpoint, since=hour_ago) for _ in range(3)
    )
    long_ago = timezone.now() - timedelta(days=31)
    Recovery.objects.filter(pk__in=[done_long_ago.pk, running_long_ago.pk]).update(
        created_at=long_ago
    )
    Recovery.objects.filter(pk__in=[done_long_ago.pk, done_recently.pk]).update(
        status=Recovery.Status.COMPLETED
    )
    retention_prune()
    assert set(Recovery.objects.values_list("pk", flat=True)) == {
        running_long_ago.pk,
        done_recently.pk,
    }
