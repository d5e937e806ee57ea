"""Data retention: events (with their deliveries and attempts) and finished recoveries older
than WEBHOOKS_RETENTION_DAYS go. (Idempotency records are the API's:
api.idempotency.records_prune.)

On PostgreSQL the history is partitioned by day (deliveries.partitions) and a day goes whole,
its partitions dropped in an instant, once its newest event is past retention and none of its
deliveries is still pending. Elsewhere (SQLite, `bin/dev`) events are deleted in bounded
batches, so a backlog never turns into one long transaction or lock. Either way an event still
being retried stays until its deliveries finish.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries import partitions
from deliveries.models import Delivery, DeliveryAttempt, Event, Recovery

BATCH_SIZE = 500
MAX_BATCHES = 200  # per run; the next run (hourly) carries on


def retention_prune(
    *, now: datetime | None = None, batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES
) -> dict[str, int]:
    """Removes what is past retention; returns how many days of partitions and how many
    events deleted one by one went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    if partitions.is_partitioned():
        days, events = partitions.partitions_prune(cutoff=cutoff), 0
    else:
        days, events = 0, _events_delete(cutoff, batch_size, max_batches)
    # A finished recovery is kept as long as the events it could have covered.
    Recovery.objects.filter(status=Recovery.Status.COMPLETED, created_at__lt=cutoff).delete()
    return {"partitions": days, "events": events}


def _events_delete(cutoff: datetime, batch_size: int, max_batches: int) -> int:
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
            DeliveryAttempt.objects.filter(event_id__in=batch).delete()
            Delivery.objects.filter(event_id__in=batch).delete()
            events += Event.objects.filter(id__in=batch).delete()[1].get("deliveries.Event", 0)
    return events
