"""Reads for webhook endpoints, always within one environment."""

from accounts.models import Environment
from api.ids import is_public_id
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint, WebhookEndpointQuerySet


def endpoints_of(environment: Environment) -> WebhookEndpointQuerySet:
    return WebhookEndpoint.objects.for_environment(environment.pk)


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    if not is_public_id(public_id, ENDPOINT_ID_PREFIX):
        return None
    endpoint = endpoints_of(environment).filter(public_id=public_id).first()
    if endpoint is not None:
        endpoint.environment = environment  # already loaded with the API key: no query
    return endpoint
