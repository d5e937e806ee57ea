"""A sample payload for each type of the event catalog, built by the functions that build real
ones (services.event_body, webhooks.representation), so a sample cannot drift from a delivery."""

import json
from datetime import UTC, datetime

from django.conf import settings

from accounts.models import Environment
from deliveries.models import Event
from deliveries.services import event_body
from webhooks.catalog import (
    DELIVERY_EXHAUSTED,
    ENDPOINT_DISABLED,
    EVENT_TYPES,
    TEST_EVENT_TYPE,
)
from webhooks.models import WebhookEndpoint
from webhooks.representation import endpoint_object

EXAMPLE_TIME = datetime(2026, 6, 12, 18, 40, tzinfo=UTC)
EXAMPLE_EVENT_ID = "evt_2Wq8Lm4Xv9Kp1Zr7Tb3n"
EXAMPLE_DELIVERY_ID = "dlv_7Hc2Pq9Ls4Vx8Kd1Yw6m"
EXAMPLE_ENDPOINT_ID = "we_9Lm2Vx4fQz8Kp1"


def _example_endpoint() -> WebhookEndpoint:
    return WebhookEndpoint(
        public_id=EXAMPLE_ENDPOINT_ID,
        url="https://example.com/webhooks",
        enabled_events=["*"],
        status=WebhookEndpoint.Status.DISABLED,
        disabled_reason="failing",
        created_at=EXAMPLE_TIME,
        updated_at=EXAMPLE_TIME,
    )


def _data(event_type: str) -> dict[str, object]:
    if event_type == TEST_EVENT_TYPE:
        return {"webhook_endpoint_id": EXAMPLE_ENDPOINT_ID}
    if event_type == ENDPOINT_DISABLED:  # as deliveries.operational publishes them
        return {"webhook_endpoint": endpoint_object(_example_endpoint()), "reason": "failing"}
    if event_type == DELIVERY_EXHAUSTED:
        return {
            "delivery_id": EXAMPLE_DELIVERY_ID,
            "event_id": EXAMPLE_EVENT_ID,
            "event_type": "packet.created",
            "webhook_endpoint_id": EXAMPLE_ENDPOINT_ID,
            "attempts": 8,
            "last_status_code": 503,
            "last_error": "",
        }
    # A producer's event carries what the producer published: an illustration only.
    resource = event_type.split(".")[0]
    return {resource: {"id": f"{resource}_8yXq2Lm4"}}


def sample_payload(environment: Environment, event_type: str) -> str:
    """What a delivery of `event_type` in `environment` looks like, indented for reading."""
    event = Event(
        public_id=EXAMPLE_EVENT_ID,
        type=event_type,
        api_version=settings.API_VERSIONS[-1],
        created_at=EXAMPLE_TIME,
    )
    body = event_body(event, environment, _data(event_type))
    return json.dumps(json.loads(body), indent=2)


def catalog_samples(environment: Environment) -> list[tuple[str, str, str]]:
    """(type, description, sample payload) of every type in the catalog, in its order."""
    return [
        (event_type, description, sample_payload(environment, event_type))
        for event_type, description in EVENT_TYPES.items()
    ]
