"""Data retention: events (with their deliveries and attempts) and finished recoveries older
than WEBHOOKS_RETENTION_DAYS are deleted, events in bounded batches, so a large backlog never
turns into one long transaction or lock. (Idempotency records are the API's:
api.idempotency.records_prune.)"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, Event, Recovery

BATCH_SIZE = 500
MAX_BATCHES = 200  # per run; the next run (hourly) carries on


def retention_prune(
    *, now: datetime | None = None, batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES
) -> dict[str, int]:
    """Deletes what is past retention; returns how many events went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    events = 0
    for _ in range(max_batches):
        batch = list(
            Event.objects.filter(created_at__lt=cutoff)
            # An event still being retried stays until its deliveries finish.
            .exclude(deliveries__status=Delivery.Status.PENDING)
            .order_by("created_at")
            .values_list("id", flat=True)[:batch_size]
        )
        if not batch:
            break
        with transaction.atomic():
            DeliveryAttempt.objects.filter(delivery__event_id__in=batch).delete()
            Delivery.objects.filter(event_id__in=batch).delete()
            events += Event.objects.filter(id__in=batch).delete()[1].get("deliveries.Event", 0)
    # A finished recovery is kept as long as the events it could have covered.
    Recovery.objects.filter(status=Recovery.Status.COMPLETED, created_at__lt=cutoff).delete()
    return {"events": events}
