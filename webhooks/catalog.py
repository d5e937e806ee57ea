"""The event catalog: every event type Kinetic publishes, with a one-line description.

Endpoint filters, the publishing API and `GET /v1/event_types` all read this one mapping.
"""

ALL_EVENTS = "*"

EVENT_TYPES: dict[str, str] = {
    "judgment.created": "A judgment was created.",
    "judgment.updated": "A judgment's fields or outcome changed.",
    "judgment.deleted": "A judgment was deleted.",
    "packet.created": "A packet was created.",
    "packet.updated": "A packet's contents or state changed.",
    "packet.deleted": "A packet was deleted.",
}

EVENT_TYPE_NAMES: list[str] = list(EVENT_TYPES)


def is_known(event_type: str) -> bool:
    return event_type in EVENT_TYPES


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
        if not is_known(event_type):
            raise ValueError(
                f"unknown event type {event_type[:100]!r} at index {index}; see GET /v1/event_types"
            )
    return list(dict.fromkeys(enabled_events))


def filter_matches(enabled_events: list[str], event_type: str) -> bool:
    return ALL_EVENTS in enabled_events or event_type in enabled_events
