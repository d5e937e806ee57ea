"""The volume bench's fill (bench/volume_fill.py), at a tiny scale, on the test database: the
month it makes is what the product reads, with the shapes `python -m bench.volume` measures
and the indexes the migrations define; a week of writes plus retention on it (`--week`) leaves
the tables as large as it found them; and the two kinds of run keep each other's docs."""

import json
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Environment
from bench import volume, volume_fill, volume_week
from core.pagination import PageRequest
from deliveries import partitions
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
@pytest.mark.usefixtures("history_as_migrated")
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


@pytest.mark.slow
@pytest.mark.usefixtures("history_as_migrated")
def test_a_week_of_writes_and_retention_keeps_history_flat():
    filled = volume_fill.fill(SCALE, log=lambda line: None, live_set=False)
    week = volume_week.week(log=lambda line: None)

    days = week["days"]
    assert [d["day"] for d in days] == list(range(volume_week.DAYS + 1))
    assert week["flat"], week["growth"]
    # Each day writes a day and retention takes the oldest, keeping its survivors until their
    # retries end: the same partitions every day, one of them a kept day (the first pass drops
    # the migration's empty catch-all instead of a kept day).
    assert {d["partitions"] for d in days[1:]} == {days[0]["partitions"] - 1}
    assert [d["kept"] for d in days] == [0] + [1] * volume_week.DAYS
    assert all(d["dropped"] == 1 for d in days[1:])
    # The fill's oldest week is gone, but the events of the last day's survivors.
    week_ago = filled.day_ids[volume_week.DAYS - 1]
    old = Event.objects.filter(id__lte=week_ago[1])
    assert old.count() == volume_week.SURVIVORS
    assert set(old.values_list("id", flat=True)) <= set(range(week_ago[0], week_ago[1] + 1))
    assert Delivery.objects.filter(status=Delivery.Status.PENDING, event__in=old).count() == (
        volume_week.SURVIVORS
    )
    # The week's events, each day's in that day's partition, as the product would number them.
    new = Event.objects.filter(id__gt=filled.fan_event_id)
    assert new.count() == week["events_per_day"] * volume_week.DAYS
    for event in new:
        assert event.id // partitions.SPAN == partitions.day_number(event.created_at)
    assert Delivery.objects.filter(event__in=new).count() == new.count() * 10


def _week_day(day: int, **timing: float) -> dict:
    tables = ("deliveries_event", "deliveries_delivery", "deliveries_deliveryattempt")
    sizes = {"rows": dict.fromkeys(tables, 10), "bytes": dict.fromkeys(tables, 2**20)}
    return {"day": day, "date": f"2026-12-0{day + 2}", **sizes, "partitions": 35, "kept": 1,
            **timing}  # fmt: skip


# What a --week run writes, for when docs/volume.json has no week yet.
WEEK_EXAMPLE: dict[str, Any] = {
    "command": "python -m bench.volume --week", "started": "2026-12-03T13:00:00+00:00",
    "uptime_before": "load average: 1.00", "uptime_after": "load average: 1.00",
    "fill_seconds": 60.0, "machine": {"cpu": "AMD EPYC"}, "scale": 0.05,
    "events_per_day": 3333, "survivors_per_day": 3, "flat_within": 0.02, "flat": True,
    "growth": {"deliveries_event": 0.0},
    "days": [_week_day(0), _week_day(1, write_s=1.0, prune_s=0.1,
                                     prune_share_of_day_at_full_rate=0.003)],
}  # fmt: skip


def test_a_full_run_keeps_the_week_in_the_docs(tmp_path, monkeypatch):
    monkeypatch.setattr(volume, "DOCS", tmp_path / "volume.md")
    monkeypatch.setattr(volume, "DOCS_JSON", tmp_path / "volume.json")
    full = json.loads((volume.REPO_ROOT / "docs" / "volume.json").read_text())
    week = full.pop("week", None) or WEEK_EXAMPLE

    volume.write_docs(full)
    volume.write_docs({"week": week})
    assert json.loads(volume.DOCS_JSON.read_text()) == full | {"week": week}
    volume.write_docs(full)  # the next full run
    assert json.loads(volume.DOCS_JSON.read_text()) == full | {"week": week}
    text = volume.DOCS.read_text()
    assert "## Sizes (filled database)" in text
    assert "## A simulated week of writes plus retention" in text
    assert f"| {week['days'][-1]['day']} | {week['days'][-1]['date']} |" in text
