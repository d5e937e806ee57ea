"""Documentation-only values for the event and delivery operations: what a request of the
documented form can still be refused for (api.openapi.Refusal)."""

from django.conf import settings

from api.openapi import Refusal, cursor_refusals
from webhooks.catalog import EVENT_TYPE_NAMES, is_known, is_operational

EVENT_EXAMPLE_ID = "evt_3kTq9Zb2Lm8RvX1cWd4N"
DELIVERY_EXAMPLE_ID = "dlv_7PqR2sT4uV6wX8yZ0aB1"

# What producers may publish: the catalog but the test event and the service's own.
PUBLISHABLE_EVENT_TYPES = [t for t in EVENT_TYPE_NAMES if is_known(t) and not is_operational(t)]

PUBLISH_REFUSALS = [
    Refusal(
        "data",
        f"`data` is over {settings.WEBHOOKS_EVENT_DATA_MAX_BYTES} bytes as compact JSON with "
        "non-ASCII characters escaped",
        f"data is {settings.WEBHOOKS_EVENT_DATA_MAX_BYTES + 1} bytes encoded; the limit is "
        f"{settings.WEBHOOKS_EVENT_DATA_MAX_BYTES}.",
    ),
]
EVENTS_LIST_REFUSALS = cursor_refusals("event", EVENT_EXAMPLE_ID)
DELIVERIES_LIST_REFUSALS = cursor_refusals("delivery", DELIVERY_EXAMPLE_ID)
TEST_EVENT_REFUSALS = [
    Refusal(
        "webhook_endpoint_id",
        "the endpoint is disabled",
        "Only an enabled endpoint can get a test event.",
    ),
]
RETRY_REFUSALS = [
    Refusal(
        "delivery_id",
        "the delivery's endpoint is disabled or deleted",
        "The delivery's webhook endpoint is disabled or deleted; enable it first.",
    ),
    Refusal(
        "delivery_id",
        "an attempt of the delivery is in progress (retry once it has ended)",
        "An attempt of this delivery is in progress; retry it once that attempt has ended.",
    ),
]
