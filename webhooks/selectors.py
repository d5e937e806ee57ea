"""Reads for webhook endpoints, always within one environment.

`WebhookEndpoint.objects.for_environment` is the tenant's scope; `endpoints_of` gives it to every
ORM read. The API's retrieve and list, which every integration calls, and the fan-out's
candidates, which every event reads, read through the same condition written out (`_LIVE_IN`;
core.sql says why); tests/test_tenancy.py holds them to the same rows.
"""

from typing import Any

from accounts.models import Environment
from core.ids import is_public_id
from core.pagination import KeysetSql, Page, PageRequest, keyset_page
from core.sql import ModelRows, fetch_all
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint, WebhookEndpointQuerySet
from webhooks.representation import SHOWN_FIELDS

_ENDPOINT = ModelRows(WebhookEndpoint, "w")
# What a list page shows of each endpoint (webhooks.representation), and its keyset.
_LISTED = ModelRows(WebhookEndpoint, "w", only=("id", *SHOWN_FIELDS))
# for_environment(): the environment's endpoints, not deleted.
_LIVE_IN = f"{_ENDPOINT.column['environment']} = %s AND {_ENDPOINT.column['deleted_at']} IS NULL"
_BY_ID = (
    f"SELECT {_ENDPOINT.select} FROM {_ENDPOINT.table} "  # noqa: S608  no values
    f"WHERE {_LIVE_IN} AND {_ENDPOINT.column['public_id']} = %s"
)


# The fan-out's candidates: the enabled endpoints, what each subscribes to, and whether it is
# ordered.
_FILTERS = ModelRows(WebhookEndpoint, "w", only=("id", "enabled_events", "delivery_order"))
_ENABLED_IN = (
    f"SELECT {_FILTERS.select} FROM {_FILTERS.table} "  # noqa: S608  no values
    f"WHERE {_LIVE_IN} AND {_ENDPOINT.column['status']} = %s"
)


def enabled_endpoint_filters(*, environment_id: int) -> list[tuple[int, list[str], bool]]:
    """(id, enabled_events, ordered) of the environment's enabled endpoints. Every event's
    fan-out reads them, so written out: the ORM's queryset cost each event more of a worker's
    CPU than the statement (docs/scaling.md, "Issue 15")."""
    rows = fetch_all(_ENABLED_IN, [environment_id, WebhookEndpoint.Status.ENABLED.value])
    ordered = WebhookEndpoint.DeliveryOrder.ORDERED
    return [
        (r.id, r.enabled_events, r.delivery_order == ordered) for r in map(_FILTERS.record, rows)
    ]


def endpoints_of(environment: Environment) -> WebhookEndpointQuerySet:
    """The environment's live endpoints."""
    return WebhookEndpoint.objects.for_environment(environment.pk)


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    """The environment's endpoint with this id; None for another tenant's, a deleted one, or an
    id that cannot exist (checked before any query)."""
    if not is_public_id(public_id, ENDPOINT_ID_PREFIX):
        return None
    rows = fetch_all(_BY_ID, [environment.pk, public_id])
    if not rows:
        return None
    endpoint = _ENDPOINT.instance(rows[0])
    endpoint.environment = environment  # the caller's, already loaded: no query
    return endpoint


_PAGES = KeysetSql(_LISTED, _LIVE_IN, id_prefix=ENDPOINT_ID_PREFIX)


def endpoint_page(*, environment: Environment, page: PageRequest) -> Page[Any]:
    """A page of the environment's endpoints, newest first, as records of the listed fields
    (read-only rows with those attributes: a list page makes no model instances)."""
    return keyset_page(_PAGES.within([environment.pk]), page, object_name="webhook endpoint")
