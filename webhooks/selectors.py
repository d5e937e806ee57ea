"""Reads for webhook endpoints, always within one environment."""

from accounts.models import Environment
from api.ids import is_public_id
from api.sql import ModelColumns, fetch_one
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint, WebhookEndpointQuerySet


def endpoints_of(environment: Environment) -> WebhookEndpointQuerySet:
    return WebhookEndpoint.objects.for_environment(environment.pk)


_ENDPOINT = ModelColumns(WebhookEndpoint, "w")

# Every operation on one endpoint starts here. SQL rather than the ORM, which spent ~0.5 ms of
# CPU compiling this query on each call (see api.sql); the condition is `endpoints_of`'s.
_LIVE_ENDPOINT_SQL = f"""
    SELECT {_ENDPOINT.select}
    FROM webhooks_webhookendpoint w
    WHERE w.public_id = %s AND w.environment_id = %s AND w.deleted_at IS NULL
"""  # noqa: S608  the column list comes from the model; values are parameters


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    if not is_public_id(public_id, ENDPOINT_ID_PREFIX):
        return None
    row = fetch_one(_LIVE_ENDPOINT_SQL, [public_id, environment.pk])
    if row is None:
        return None
    endpoint, _ = _ENDPOINT.instance(row)
    endpoint.environment = environment  # already loaded with the API key: no query
    return endpoint
