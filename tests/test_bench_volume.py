"""The volume bench's fill (bench/volume_fill.py), at a tiny scale, on the test database: the
month it makes is what the product reads, with the shapes `python -m bench.volume` measures
and the indexes the migrations define."""

import json
from datetime import timedelta
from itertools import pairwise

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Environment
from bench import volume_fill
from core.pagination import PageRequest
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.retention import retention_prune
from deliveries.selectors import delivery_counts, endpoint_delivery_page
from webhooks.models import WebhookEndpoint

SCALE = 0.0001  # 200 events over the month, and the 10,000-delivery event


def schema() -> set[str]:
    """The history tables' indexes and constraints, by name."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename IN "
            "('deliveries_event', 'deliveries_delivery', 'deliveries_deliveryattempt') "
            "UNION SELECT conname FROM pg_constraint WHERE conrelid IN "
            "('deliveries_event'::regclass, 'deliveries_delivery'::regclass, "
            "'deliveries_deliveryattempt'::regclass)"
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_fill_makes_a_month_the_product_reads():
    before = schema()
    filled = volume_fill.fill(SCALE, log=lambda line: None)

    assert schema() == before  # every index and constraint made again
    assert volume_fill.stored() == filled
    assert Event.objects.count() == filled.events + 1
    assert Delivery.objects.count() == filled.events * 10 + volume_fill.FAN_OUT
    assert DeliveryAttempt.objects.count() > Delivery.objects.count()

    # Each day's event ids contiguous, in the day, and increasing with created_at.
    start = volume_fill.first_day(filled)
    for day, (first, last) in enumerate(filled.day_ids):
        events = list(Event.objects.filter(id__gte=first, id__lte=last).order_by("id"))
        assert [e.id for e in events] == list(range(first, last + 1))
        assert all(a.created_at <= b.created_at for a, b in pairwise(events))
        assert start + timedelta(days=day) <= events[0].created_at
        assert events[-1].created_at < start + timedelta(days=day + 1)
    body = json.loads(Event.objects.get(pk=filled.fan_event_id).body)
    assert body["id"] == Event.objects.get(pk=filled.fan_event_id).public_id

    # What the API reads: the wide event's counts, a huge endpoint's newest page.
    counts = delivery_counts([filled.fan_event_id])[filled.fan_event_id]
    assert sum(counts.values()) == volume_fill.FAN_OUT
    environment = Environment.objects.get(pk=filled.environment_id)
    huge = WebhookEndpoint.objects.get(pk=filled.huge_endpoint_ids[0])
    page = endpoint_delivery_page(environment=environment, endpoint=huge, page=PageRequest())
    assert page.has_more
    assert page.items[0].event_id == filled.fan_event_id

    # A retention run a day past the window takes the oldest day, and only it (an event still
    # retrying stays).
    first, last = filled.day_ids[0]
    retrying = set(
        Delivery.objects.filter(status=Delivery.Status.PENDING).values_list("event_id", flat=True)
    )
    every = set(Event.objects.values_list("id", flat=True))
    oldest_day = set(range(first, last + 1))
    retention_prune(now=start + timedelta(days=settings.WEBHOOKS_RETENTION_DAYS + 1))
    assert set(Event.objects.values_list("id", flat=True)) == every - oldest_day | (
        oldest_day & retrying
    )
