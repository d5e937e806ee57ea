"""Reads for events and deliveries, always within one environment."""

from collections import Counter
from datetime import datetime
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from accounts.models import Environment
from api.ids import is_public_id
from api.pagination import KeysetSql, Page, PageRequest, keyset_first_read, keyset_rows
from api.sql import EnvironmentRead, ModelColumns, in_environment, instance_in
from deliveries.models import (
    DELIVERY_ID_PREFIX,
    EVENT_ID_PREFIX,
    LONG_ID_LENGTH,
    Delivery,
    DeliveryAttempt,
    Event,
)
from webhooks.models import WebhookEndpoint

EVENT_DELIVERIES_SHOWN = 100


def unclaimed(now: datetime) -> Q:
    """No live worker holds the delivery: never claimed, released, or its lease run out."""
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def deliveries_due(now: datetime) -> QuerySet[Delivery]:
    """Pending deliveries whose attempt is due and that no live worker holds."""
    return Delivery.objects.filter(
        unclaimed(now), status=Delivery.Status.PENDING, next_attempt_at__lte=now
    )


_EVENT = ModelColumns(Event, "ev")
_EVENTS = f"{_EVENT.table} WHERE ev.environment_id = {{environment}}"
_EVENT_BY_ID = EnvironmentRead(f"SELECT {_EVENT.select} FROM {_EVENTS} AND ev.public_id = %s")  # noqa: S608
_EVENTS_PAGE = KeysetSql(select=_EVENT.select, source=_EVENTS, alias="ev")


def event_get_read(public_id: str) -> tuple[EnvironmentRead, list[Any]] | None:
    """`event_get`'s read, for ApiViewSet.first_read (None for an id that cannot exist)."""
    if not is_public_id(public_id, EVENT_ID_PREFIX, LONG_ID_LENGTH):
        return None
    return _EVENT_BY_ID, [public_id]


def event_get(*, environment: Environment, public_id: str) -> Event | None:
    return instance_in(_EVENT, event_get_read(public_id), environment)


def event_page_read(page: PageRequest) -> tuple[EnvironmentRead, list[Any]] | None:
    """`event_page`'s first read, for ApiViewSet.first_read."""
    return keyset_first_read(_EVENTS_PAGE, page, event_get_read)


def event_page(*, environment: Environment, page: PageRequest) -> Page[Event]:
    """A page of the environment's events, newest first (SQL, as the endpoints' pages)."""
    result = keyset_rows(
        _EVENTS_PAGE,
        environment.pk,
        page,
        find_cursor=lambda public_id: event_get(environment=environment, public_id=public_id),
        object_name="event",
    )
    events = [in_environment(_EVENT, row, environment) for row in result.items]
    return Page(items=events, has_more=result.has_more)


def delivery_counts(event_ids: list[int]) -> dict[int, Counter[str]]:
    """Deliveries per status for each event, in one query."""
    counts: dict[int, Counter[str]] = {pk: Counter() for pk in event_ids}
    rows = (
        Delivery.objects.filter(event_id__in=event_ids)
        .values("event_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        counts[row["event_id"]][row["status"]] = row["n"]
    return counts


def event_deliveries(event: Event) -> list[Delivery]:
    return list(
        Delivery.objects.filter(event=event)
        .select_related("endpoint")
        .order_by("-created_at", "-id")[:EVENT_DELIVERIES_SHOWN]
    )


def deliveries_of(environment: Environment) -> QuerySet[Delivery]:
    """Deliveries of this environment's endpoints (deleted endpoints' included)."""
    return Delivery.objects.filter(endpoint__environment_id=environment.pk)


def endpoint_deliveries(endpoint: WebhookEndpoint) -> QuerySet[Delivery]:
    return (
        Delivery.objects.filter(endpoint=endpoint)
        .select_related("event", "endpoint")
        .prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))
    )


def delivery_get(*, environment: Environment, public_id: str) -> Delivery | None:
    if not is_public_id(public_id, DELIVERY_ID_PREFIX, LONG_ID_LENGTH):
        return None
    return (
        deliveries_of(environment)
        .filter(public_id=public_id)
        .select_related("event", "endpoint__environment")
        .first()
    )
