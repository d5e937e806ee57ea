"""Reads for webhook endpoints, always within one environment.

Both reads the API makes on every call (one endpoint, a list page) are SQL rather than the ORM,
which spent ~0.5 ms of CPU compiling each of them (see api.sql). Their condition is the one of
`WebhookEndpointQuerySet.for_environment`: the environment's endpoints not deleted.
"""

from collections.abc import Sequence
from functools import cache
from typing import Any

from accounts.models import Environment
from api.ids import is_public_id
from api.pagination import KeysetSql, Page, PageRequest, keyset_first_read, keyset_rows
from api.sql import EnvironmentRead, ModelColumns, instance_in
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint

_ENDPOINT = ModelColumns(WebhookEndpoint, "w")
_LIVE = f"{_ENDPOINT.table} WHERE w.environment_id = {{environment}} AND w.deleted_at IS NULL"
_LIVE_ENDPOINT = EnvironmentRead(f"SELECT {_ENDPOINT.select} FROM {_LIVE} AND w.public_id = %s")  # noqa: S608


def endpoint_get_read(public_id: str) -> tuple[EnvironmentRead, list[Any]] | None:
    """`endpoint_get`'s read, for ApiViewSet.first_read (None for an id that cannot exist)."""
    if not is_public_id(public_id, ENDPOINT_ID_PREFIX):
        return None
    return _LIVE_ENDPOINT, [public_id]


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    return instance_in(_ENDPOINT, endpoint_get_read(public_id), environment)


def endpoint_page_read(
    page: PageRequest, fields: Sequence[str]
) -> tuple[EnvironmentRead, list[Any]] | None:
    """`endpoint_page`'s first read, for ApiViewSet.first_read."""
    return keyset_first_read(_listed(tuple(fields))[1], page, endpoint_get_read)


def endpoint_page(
    *, environment: Environment, page: PageRequest, fields: Sequence[str]
) -> Page[Any]:
    """A page of the environment's endpoints, newest first, as records of `fields` (read-only
    rows with those attributes: a list page makes no model instances)."""
    columns, query = _listed(tuple(fields))
    result = keyset_rows(
        query,
        environment.pk,
        page,
        find_cursor=lambda public_id: endpoint_get(environment=environment, public_id=public_id),
        object_name="webhook endpoint",
    )
    return Page(items=columns.records(result.items), has_more=result.has_more)


@cache
def _listed(fields: tuple[str, ...]) -> tuple[ModelColumns[WebhookEndpoint], KeysetSql]:
    columns = ModelColumns(WebhookEndpoint, "w", only=fields)
    return columns, KeysetSql(select=columns.select, source=_LIVE, alias="w")
