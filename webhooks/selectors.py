"""Reads for webhook endpoints, always within one environment."""

from accounts.models import Environment
from webhooks.models import WebhookEndpoint, WebhookEndpointQuerySet


def endpoints_of(environment: Environment) -> WebhookEndpointQuerySet:
    return WebhookEndpoint.objects.for_environment(environment.pk)


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    endpoint = endpoints_of(environment).filter(public_id=public_id).first()
    if endpoint is not None:
        endpoint.environment = environment  # already loaded with the API key: no query
    return endpoint
