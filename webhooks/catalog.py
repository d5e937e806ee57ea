"""The event catalog: every event type a receiver can get, with a one-line description.

Endpoint filters, the publishing API and `GET /v1/event_types` all read this one mapping.
"""

ALL_EVENTS = "*"
# Sent only on request, to one endpoint, whatever its enabled_events: POST
# /v1/webhook_endpoints/{id}/test, the portal's and the console's "send test event"
# (deliveries.services.endpoint_test_event_send). Receivers can get it, so the catalog lists
# it; but nobody publishes it and no endpoint subscribes to it, not even with "*".
TEST_EVENT_TYPE = "ping"

# Published by the service itself, about an environment's endpoints and deliveries
# (deliveries.operational); endpoints subscribe to them like any type, producers cannot publish
# them.
ENDPOINT_DISABLED = "webhook_endpoint.disabled"
DELIVERY_EXHAUSTED = "delivery.exhausted"
OPERATIONAL_EVENT_TYPES = frozenset({ENDPOINT_DISABLED, DELIVERY_EXHAUSTED})

EVENT_TYPES: dict[str, str] = {
    "judgment.created": "A judgment was created.",
    "judgment.updated": "A judgment's fields or outcome changed.",
    "judgment.deleted": "A judgment was deleted.",
    "packet.created": "A packet was created.",
    "packet.updated": "A packet's contents or state changed.",
    "packet.deleted": "A packet was deleted.",
    ENDPOINT_DISABLED: (
        "An endpoint was disabled automatically: it answered 410 Gone, or kept failing."
    ),
    DELIVERY_EXHAUSTED: "A delivery failed its last attempt; it will not be retried.",
    TEST_EVENT_TYPE: (
        "A test event sent on request to one endpoint; it cannot be published or subscribed to."
    ),
}

EVENT_TYPE_NAMES: list[str] = list(EVENT_TYPES)


def is_known(event_type: str) -> bool:
    """A type endpoints may subscribe to, and producers publish (but the operational ones):
    any but the test event."""
    return event_type in EVENT_TYPES and event_type != TEST_EVENT_TYPE


def is_operational(event_type: str) -> bool:
    """A type the service publishes itself, never a producer."""
    return event_type in OPERATIONAL_EVENT_TYPES


def normalize_filter(enabled_events: list[str] | None) -> list[str]:
    """`None` or `["*"]` -> `["*"]`; otherwise the known types, de-duplicated in order.

    Raises ValueError naming the first offending entry.
    """
    if enabled_events is None:
        return [ALL_EVENTS]
    if not enabled_events:
        raise ValueError('must not be empty; omit it or send ["*"] to receive every event')
    if ALL_EVENTS in enabled_events:
        if len(set(enabled_events)) > 1:
            raise ValueError('"*" cannot be combined with other event types')
        return [ALL_EVENTS]
    for index, event_type in enumerate(enabled_events):
        if event_type == TEST_EVENT_TYPE:
            raise ValueError(
                f"{TEST_EVENT_TYPE!r} at index {index} is the test event sent on request; "
                "it cannot be subscribed to"
            )
        if not is_known(event_type):
            raise ValueError(
                f"unknown event type {event_type[:100]!r} at index {index}; see GET /v1/event_types"
            )
    return list(dict.fromkeys(enabled_events))


def filter_matches(enabled_events: list[str], event_type: str) -> bool:
    if event_type == TEST_EVENT_TYPE:  # never fanned out: it goes to the one endpoint asked
        return False
    return ALL_EVENTS in enabled_events or event_type in enabled_events
