"""The console stays fast on big tables: a changelist costs the same few queries at 30 rows
as at 300 (no query per row), never counts a whole table, and never reads payloads it does
not show.

Rows are made the way production makes them: endpoints through `endpoint_create`, events
published and fanned out, deliveries sent in this process to a real receiver on 127.0.0.1
(a third of the endpoints answer 500, so failure streaks and pending retries are real).
"""

import re
from collections.abc import Callable
from typing import TypeVar

import pytest
from django.db import connection
from django.db.models import Model, QuerySet
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Environment
from accounts.services import organization_create
from console.base import EstimatedCountPaginator
from deliveries.dispatch import deliveries_send
from deliveries.models import Delivery, Event
from deliveries.services import event_fan_out, event_publish
from tests.servers import Receiver, Reply
from webhooks.models import WebhookEndpoint
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

# The most queries any changelist below may take (session, user, the count, the page, and a
# few the admin itself makes); measured counts are printed with -s.
MAX_QUERIES = 8

M = TypeVar("M", bound=Model)


@pytest.fixture
def environment(db, settings) -> Environment:
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver lives on 127.0.0.1
    return organization_create(slug="bigco").environments.get(name="sandbox")


def add_endpoints(environment: Environment, receiver: Receiver, count: int) -> None:
    start = WebhookEndpoint.objects.count()
    for i in range(start, start + count):
        path = f"/fail/{i}" if i % 3 == 0 else f"/ok/{i}"
        if i % 3 == 0:
            receiver.script(path, *[Reply(status=500)] * 10)
        endpoint_create(environment=environment, url=f"{receiver.url}{path}")


def publish_and_send(environment: Environment, events: int = 2) -> None:
    for n in range(events):
        event = event_publish(environment=environment, type="judgment.created", data={"n": n})
        event_fan_out(event_id=event.pk)
        deliveries_send(
            delivery_ids=list(event.deliveries.values_list("id", flat=True)), wait_for_all=True
        )


def queries_for(client: Client, url: str) -> list[str]:
    client.get(url)  # warms per-process caches (content types), which differ between runs
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return [q["sql"] for q in captured.captured_queries]


def first(rows: QuerySet[M]) -> M:
    row = rows.first()
    assert row is not None, f"no {rows.model.__name__} yet"
    return row


def pages(environment: Environment) -> dict[str, Callable[[], str]]:
    """Each page, as a function: some name rows that exist only once data is seeded."""
    endpoints = reverse("admin:webhooks_webhookendpoint_changelist")
    deliveries = reverse("admin:deliveries_delivery_changelist")
    events = reverse("admin:deliveries_event_changelist")
    attempts = reverse("admin:deliveries_deliveryattempt_changelist")

    def newest_event() -> Event:
        return first(Event.objects.order_by("-pk"))

    def an_endpoint() -> WebhookEndpoint:
        return first(WebhookEndpoint.objects.order_by("pk"))

    return {
        "endpoints": lambda: endpoints,
        "endpoints failing": lambda: f"{endpoints}?failing=yes",
        "endpoints by organization": lambda: (
            f"{endpoints}?organization=bigco&status__exact=enabled"
        ),
        "endpoints search url": lambda: f"{endpoints}?q=/ok/",
        "endpoints search id": lambda: f"{endpoints}?q={an_endpoint().public_id}",
        "deliveries": lambda: deliveries,
        "deliveries pending, sandbox": lambda: (
            f"{deliveries}?status__exact=pending&endpoint__environment__name__exact=sandbox"
        ),
        "deliveries of an event": lambda: f"{deliveries}?q={newest_event().public_id}",
        "deliveries of an endpoint": lambda: f"{deliveries}?endpoint={an_endpoint().pk}",
        "events": lambda: events,
        "event page": lambda: reverse("admin:deliveries_event_change", args=[newest_event().pk]),
        "attempts": lambda: attempts,
        "attempts failed": lambda: f"{attempts}?succeeded__exact=0",
        "endpoint page": lambda: reverse(
            "admin:webhooks_webhookendpoint_change", args=[an_endpoint().pk]
        ),
        "delivery page": lambda: reverse(
            "admin:deliveries_delivery_change", args=[first(Delivery.objects.order_by("pk")).pk]
        ),
    }


def test_changelists_take_the_same_few_queries_at_30_and_300_rows(
    admin_client, environment, receiver
):
    add_endpoints(environment, receiver, 30)
    publish_and_send(environment)
    small = {name: queries_for(admin_client, url()) for name, url in pages(environment).items()}

    add_endpoints(environment, receiver, 270)
    publish_and_send(environment)
    assert WebhookEndpoint.objects.count() == 300
    assert Delivery.objects.count() == 2 * 30 + 2 * 300
    assert WebhookEndpoint.objects.filter(consecutive_failures__gt=0).count() == 100
    big = {name: queries_for(admin_client, url()) for name, url in pages(environment).items()}

    for name in small:
        print(f"{name}: {len(small[name])} queries at 30 endpoints, {len(big[name])} at 300")
        assert len(big[name]) == len(small[name]), (name, big[name])
        assert len(big[name]) <= MAX_QUERIES, (name, big[name])
        for sql in big[name]:
            # No payload is read for a list, and no count runs over a whole table.
            assert '"deliveries_event"."body"' not in sql or name == "event page", sql
            assert '"response_body"' not in sql or "SUBSTRING" in sql, sql
            if "COUNT(" in sql and name != "event page":
                assert re.search(r"LIMIT \d+", sql), sql


def uncounted_page(client: Client, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The changelist at `url`, with more than 100 rows taken for a big table; it ran no
    COUNT."""
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_above", 100)
    with CaptureQueriesContext(connection) as captured:
        html = client.get(url).content.decode()
    assert not [q for q in captured.captured_queries if "COUNT(" in q["sql"]]
    return html


def test_an_unfiltered_big_table_is_estimated_not_counted(
    admin_client, environment, receiver, monkeypatch
):
    add_endpoints(environment, receiver, 120)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webhooks_webhookendpoint")  # what autovacuum does
    url = reverse("admin:webhooks_webhookendpoint_changelist")
    html = uncounted_page(admin_client, url, monkeypatch)
    assert "about 120 webhook endpoints" in html
    assert 'href="?p=3"' in html  # 50 a page: pages from the estimate

    # Filtered lists are counted, exactly, up to the cap...
    assert "40 webhook endpoints" in admin_client.get(f"{url}?q=/fail/").content.decode()
    # ...and say so when they reach it.
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 30)
    assert "30+ webhook endpoints" in admin_client.get(f"{url}?q=/fail/").content.decode()


def test_a_partitioned_big_table_is_estimated_from_its_partitions(
    admin_client, environment, receiver, monkeypatch
):
    add_endpoints(environment, receiver, 40)
    publish_and_send(environment, events=3)
    with connection.cursor() as cursor:
        # What autovacuum analyses: the partitions of a partitioned table, never the parent
        # (on plain tables, the table itself).
        cursor.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('deliveries_delivery') "
            "WHERE isleaf UNION SELECT 'deliveries_delivery' WHERE NOT EXISTS "
            "(SELECT 1 FROM pg_partition_tree('deliveries_delivery') WHERE isleaf)"
        )
        for (table,) in cursor.fetchall():
            cursor.execute(f"ANALYZE {table}")
    url = reverse("admin:deliveries_delivery_changelist")
    assert "about 120 deliveries" in uncounted_page(admin_client, url, monkeypatch)


def test_filtered_delivery_lists_read_in_the_order_their_index_holds(
    admin_client, environment, receiver
):
    """Failed and cancelled newest created first, as delivery_outcome_idx holds them, pending
    soonest due first, as delivery_due_idx does: in id order PostgreSQL read back through a
    day's partition until a row of that status."""
    add_endpoints(environment, receiver, 6)
    publish_and_send(environment)
    url = reverse("admin:deliveries_delivery_changelist")
    orders = {
        "failed": '"deliveries_delivery"."created_at" DESC, "deliveries_delivery"."id" DESC',
        "cancelled": '"deliveries_delivery"."created_at" DESC, "deliveries_delivery"."id" DESC',
        # Soonest due first, as delivery_due_idx holds the pending ones.
        "pending": '"deliveries_delivery"."next_attempt_at" ASC',
    }
    for status, expected in orders.items():
        [page] = [
            sql
            for sql in queries_for(admin_client, f"{url}?status__exact={status}")
            if "ORDER BY" in sql and '"deliveries_delivery"."status" =' in sql
        ]
        assert page.split("ORDER BY", 1)[1].strip().startswith(expected), page
        # The page's events are read by id, not joined (see DeliveryAdmin.get_queryset).
        assert '"deliveries_event"' not in page, page
    everything = [sql for sql in queries_for(admin_client, url) if "ORDER BY" in sql]
    assert any('ORDER BY "deliveries_delivery"."id" DESC' in sql for sql in everything)


@pytest.mark.parametrize(
    ("changelist", "query", "expected"),
    [
        ("deliveries_event", "o=3", '"deliveries_event"."id" DESC'),  # type
        ("deliveries_event", "o=-5", '"deliveries_event"."id" DESC'),  # fanned_out_at
        ("deliveries_deliveryattempt", "o=4", '"deliveries_deliveryattempt"."id" DESC'),
        ("deliveries_delivery", "o=4", '"deliveries_delivery"."id" DESC'),  # 0: the checkbox
        # A filtered list keeps the order of its index (DeliveryAdmin.get_ordering).
        ("deliveries_delivery", "status__exact=pending&o=4", '"deliveries_delivery"."next_attempt'),
        ("webhooks_webhookendpoint", "o=1", '"webhooks_webhookendpoint"."id" DESC'),  # public_id
    ],
)  # fmt: skip
def test_a_big_table_is_sorted_by_no_column_it_does_not_offer(
    admin_client, environment, receiver, changelist, query, expected
):
    """`sortable_by` only hides the other columns' links: `?o=` typed into the URL sorted the
    whole table by any column."""
    add_endpoints(environment, receiver, 3)
    publish_and_send(environment, events=1)
    url = f"{reverse(f'admin:{changelist}_changelist')}?{query}"
    orders = [
        sql.rsplit("ORDER BY", 1)[1].strip()
        for sql in queries_for(admin_client, url)
        if f'FROM "{changelist}"' in sql and "ORDER BY" in sql
    ]
    assert orders, "no page query"
    for order in orders:
        assert order.startswith(expected), order
