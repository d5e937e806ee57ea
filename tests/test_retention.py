"""Old events, deliveries, attempts and idempotency records are pruned; nothing else is.

On PostgreSQL history is partitioned by day (deliveries.partitions): the tests move the
events' day forward with the maintenance job, as midnight does, and publish into each day."""

import os
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from api.idempotency import records_prune
from api.models import IdempotencyRecord
from deliveries import partitions
from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.retention import retention_prune
from deliveries.tasks import prune_task
from tests import factories
from tests.servers import PrivatePostgres, Reply, manage

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _next_day() -> datetime:
    """Midnight (UTC) after the day events land in now: the job run then starts a new day."""
    day = max(
        partitions.day_number(timezone.now()), partitions.next_event_id() // partitions.SPAN + 1
    )
    return EPOCH + timedelta(days=day)


def _history(events: list[Event]) -> tuple[int, int, int]:
    ids = [e.pk for e in events]
    return (
        Event.objects.filter(pk__in=ids).count(),
        Delivery.objects.filter(event_id__in=ids).count(),
        DeliveryAttempt.objects.filter(event_id__in=ids).count(),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("history_as_migrated")
def test_retention_drops_past_days_and_keeps_only_what_is_still_retrying(
    sandbox, receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(sandbox)
    client.create_endpoint(f"{receiver.url}/ok")
    client.create_endpoint(f"{receiver.url}/flaky")
    receiver.script("/flaky", *[Reply(500)] * 5)  # the old days' deliveries to it fail once
    partitions.partitions_maintain(now=_next_day())
    retrying_day = [factories.deliver_here(sandbox) for _ in range(3)]
    partitions.partitions_maintain(now=_next_day())
    finished_day = [factories.deliver_here(sandbox) for _ in range(2)]
    partitions.partitions_maintain(now=_next_day())
    recent = factories.deliver_here(sandbox)
    # One day's failed deliveries gave up; the other day's are being retried but for one.
    done, retrying = finished_day + retrying_day[:1], retrying_day[1:]
    Delivery.objects.filter(event__in=done, status="pending").update(status="failed")
    long_ago = timezone.now() - timedelta(days=31)
    Event.objects.filter(pk__in=[e.pk for e in done + retrying]).update(created_at=long_ago)

    prune_task.apply().get()
    assert _history(done) == (0, 0, 0)
    assert _history(retrying) == (2, 4, 4)
    assert _history([recent]) == (1, 2, 2)
    # Their day was rebuilt with them alone, rather than kept whole.
    assert any(p.suffix.endswith(partitions.KEPT) for p in partitions.partitions())
    event = client.get(f"/v1/events/{retrying[0].public_id}")
    assert event.status_code == 200, event.content
    # The survivors are retried where they now are, and recorded there.
    pending = list(Delivery.objects.filter(event__in=retrying, status="pending"))
    Delivery.objects.filter(pk__in=[d.pk for d in pending]).update(next_attempt_at=timezone.now())
    deliveries_send(delivery_ids=[d.pk for d in pending], wait_for_all=True)
    assert _history(retrying) == (2, 4, 6)
    assert not Delivery.objects.filter(event__in=retrying, status="pending").exists()

    prune_task.apply().get()  # their retries are over: they go in turn
    assert _history(retrying) == (0, 0, 0)
    assert _history([recent]) == (1, 2, 2)
    assert client.get(f"/v1/events/{retrying[0].public_id}").status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("history_as_migrated")
def test_the_job_makes_days_ahead_and_moves_event_ids_forward_at_midnight(sandbox):
    client = factories.api_client(sandbox)
    midnight = _next_day()
    day = partitions.day_number(midnight)
    partitions.partitions_maintain(now=midnight - timedelta(seconds=1))
    partitions.partitions_maintain(now=midnight)
    suffixes = {p.suffix for p in partitions.partitions()}
    assert {f"p{day + n}" for n in range(partitions.AHEAD_DAYS + 1)} <= suffixes
    assert partitions.partitions_maintain(now=midnight) == 0  # nothing left to make

    def publish() -> Event:
        response = client.post("/v1/events", {"type": "packet.created", "data": {}})
        assert response.status_code == 201, response.content
        return Event.objects.get(public_id=response.json()["event_id"])

    first = publish()
    assert first.pk == day * partitions.SPAN  # the day's first id
    # The job is late past the next midnight: events go on landing in the day before.
    late = publish()
    assert late.pk // partitions.SPAN == day
    partitions.partitions_maintain(now=midnight + timedelta(days=1, seconds=1))
    after = publish()
    assert after.pk == (day + 1) * partitions.SPAN
    partitions.partitions_maintain(now=midnight)  # a clock behind: ids never go back
    assert publish().pk == after.pk + 1
    for event in (first, late, after):
        assert client.get(f"/v1/events/{event.public_id}").status_code == 200


def test_idempotency_records_past_a_day_are_pruned(sandbox):
    client = factories.api_client(sandbox)
    for key, url in (("old", "https://x.example"), ("new", "https://y.example")):
        client.post("/v1/webhook_endpoints", {"url": url}, headers={"Idempotency-Key": key})
    day_ago = timezone.now() - timedelta(hours=25)
    IdempotencyRecord.objects.filter(key="old").update(created_at=day_ago)
    assert records_prune(batch_size=1) == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
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


# Run by `manage.py shell` on a fresh SQLite file: the embedded default's retention.
_SQLITE_RETENTION = """
from datetime import timedelta
from django.utils import timezone
from deliveries import partitions
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.services import event_fan_out, event_publish
from deliveries.tasks import prune_task
from tests import factories
from webhooks.services import endpoint_create

env = factories.environment()
endpoint_create(environment=env, url="https://example.com/hook")
old, retrying, recent = (event_publish(environment=env, type="packet.created") for _ in range(3))
for event in (old, retrying, recent):
    event_fan_out(event_id=event.pk)
for d in Delivery.objects.all():
    DeliveryAttempt.objects.create(
        delivery=d, event_id=d.event_id, number=1, started_at=timezone.now(), duration_ms=1
    )
Delivery.objects.filter(event__in=[old, recent]).update(status="succeeded")
long_ago = timezone.now() - timedelta(days=31)
Event.objects.filter(pk__in=[old.pk, retrying.pk]).update(created_at=long_ago)
assert partitions.partitions_maintain() == 0
prune_task.apply().get()
kept = set(Event.objects.values_list("pk", flat=True))
assert kept == {retrying.pk, recent.pk}, kept
assert set(DeliveryAttempt.objects.values_list("event_id", flat=True)) == kept
print("sqlite retention ok")
"""


@pytest.mark.slow
def test_sqlite_keeps_plain_tables_and_deletes_old_events_in_batches(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'kinetic.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
    }

    manage(env, "migrate")
    assert manage(env, "shell", "-c", _SQLITE_RETENTION) == "sqlite retention ok"


# History as migration 0006 stores it (attempts without their event's id).
_HISTORY_BEFORE = """
from django.db import connection
from deliveries.services import event_fan_out, event_publish
from tests import factories
from webhooks.services import endpoint_create

env = factories.environment()
for name in ("a", "b"):
    endpoint_create(environment=env, url=f"https://example.com/{name}")
for _ in range(3):
    event_fan_out(event_id=event_publish(environment=env, type="packet.created").pk)
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO deliveries_deliveryattempt (delivery_id, number, started_at, duration_ms,"
        " error, succeeded, response_body) SELECT id, 1, now(), 5, '', true, '' FROM"
        " deliveries_delivery"
    )
print("seeded")
"""
_HISTORY_AFTER = """
from django.conf import settings
from django.db.models import F
from django.utils import timezone
from accounts.models import Environment
from deliveries import partitions
from deliveries.models import Delivery, DeliveryAttempt, Event
from tests import factories
from webhooks.models import WebhookEndpoint
from webhooks.services import endpoint_create

assert partitions.is_partitioned()
counts = (Event.objects.count(), Delivery.objects.count(), DeliveryAttempt.objects.count())
assert counts == (3, 6, 6), counts
assert not DeliveryAttempt.objects.exclude(event_id=F("delivery__event_id")).exists()
partitions.partitions_maintain()
settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
WebhookEndpoint.objects.update(status=WebhookEndpoint.Status.DISABLED)
env = Environment.objects.get(name="sandbox")
endpoint_create(environment=env, url="RECEIVER/hook")
event = factories.deliver_here(env)
assert event.pk // partitions.SPAN == partitions.day_number(timezone.now()), event.pk
assert Delivery.objects.get(event=event).status == Delivery.Status.SUCCEEDED
assert DeliveryAttempt.objects.filter(event=event).count() == 1
print("ok")
"""


@pytest.mark.slow
def test_the_migration_carries_existing_history_into_partitions(receiver):
    server = PrivatePostgres()
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": server.create_database("kinetic"),
            "TEST_CELERY_BROKER_URL": "memory://",
        }
        manage(env, "migrate", "deliveries", "0006_recovery_paced_until")
        assert manage(env, "shell", "-c", _HISTORY_BEFORE) == "seeded"
        manage(env, "migrate")
        assert manage(env, "shell", "-c", _HISTORY_AFTER.replace("RECEIVER", receiver.url)) == "ok"
    finally:
        server.destroy()
