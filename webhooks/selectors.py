"""Reads for webhook endpoints, always within one environment: every one starts from
`WebhookEndpoint.objects.for_environment`, the one place the tenant's scope is written."""

from accounts.models import Environment
from core.ids import is_public_id
from core.pagination import Page, PageRequest, keyset_page
from webhooks.models import ENDPOINT_ID_PREFIX, WebhookEndpoint, WebhookEndpointQuerySet


def endpoints_of(environment: Environment) -> WebhookEndpointQuerySet:
    """The environment's live endpoints."""
    return WebhookEndpoint.objects.for_environment(environment.pk)


def endpoint_get(*, environment: Environment, public_id: str) -> WebhookEndpoint | None:
    """The environment's endpoint with this id; None for another tenant's, a deleted one, or an
    id that cannot exist (checked before any query)."""
    if not is_public_id(public_id, ENDPOINT_ID_PREFIX):
        return None
    endpoint = endpoints_of(environment).filter(public_id=public_id).first()
    if endpoint is not None:
        endpoint.environment = environment  # the caller's, already loaded: no query
    return endpoint


def endpoint_page(*, environment: Environment, page: PageRequest) -> Page[WebhookEndpoint]:
    """A page of the environment's endpoints, newest first."""
    return keyset_page(
        endpoints_of(environment),
        page,
        find_cursor=lambda public_id: endpoint_get(environment=environment, public_id=public_id),
        object_name="webhook endpoint",
    )
