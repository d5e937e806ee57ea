"""A webhook endpoint as the API shows it: the one representation, for the API's responses and
for the `webhook_endpoint.disabled` event that carries it (deliveries.operational).

Built as a dict directly: DRF's field-by-field path costs a list page several times more
(docs/architecture.md). Never with a signing secret; sensitive header values masked.
"""

from typing import Any

from core.times import api_datetime
from webhooks import headers


def endpoint_object(endpoint: Any) -> dict[str, Any]:
    """`endpoint` (a WebhookEndpoint, or a list page's record of the same fields): the
    reference's fields, then delivery control's."""
    return {
        "webhook_endpoint_id": endpoint.public_id,
        "url": endpoint.url,
        "enabled_events": endpoint.enabled_events,
        "status": endpoint.status,
        "created_at": api_datetime(endpoint.created_at),
        "description": endpoint.description,
        "metadata": endpoint.metadata,
        "headers": headers.masked(endpoint.headers),
        "rate_limit": endpoint.rate_limit,
        "delivery_order": endpoint.delivery_order,
    }


# The fields `endpoint_object` reads: what a list page's query loads (webhooks.selectors).
SHOWN_FIELDS = (
    "public_id",
    "url",
    "enabled_events",
    "status",
    "created_at",
    "description",
    "metadata",
    "headers",
    "rate_limit",
    "delivery_order",
)
