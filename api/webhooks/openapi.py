"""Documentation-only values for the webhook endpoint operations: the reference's examples.

Kept out of views.py so the views read as code; tests check every example against the schema.
"""

from typing import Any

from drf_spectacular.utils import OpenApiExample

from api.openapi import ErrorExamples, object_id_parameter
from webhooks import headers
from webhooks.services import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_RATE_LIMIT,
)

TAG_WEBHOOK_ENDPOINTS = "Webhook Endpoints"
TAG_EVENT_TYPES = "Event Types"

EXAMPLE_ID = "we_8KdQ2n4Vb1Xc7M"

WEBHOOK_ENDPOINT_ID = object_id_parameter("webhook_endpoint_id", "webhook endpoint", EXAMPLE_ID)

# --- Delivery control's fields (their entries are checked by webhooks' services) ----------

_REFUSED = ", ".join(
    [*(f"`{name}`" for name in headers.REFUSED), *(f"`{p}*`" for p in headers.REFUSED_PREFIXES)]
)
_HEADER_RULES = (
    f"At most {headers.MAX_HEADERS} headers; a name is an HTTP token (RFC 9110) of 1 to "
    f"{headers.MAX_NAME_LENGTH} characters, a value printable ASCII (no CR, LF or other control "
    f"character) of at most {headers.MAX_VALUE_LENGTH} characters, at most "
    f"{headers.MAX_TOTAL_SIZE} characters of names and values in all. Refused names, in any "
    f"case: {_REFUSED}. The value of `Authorization`, `Cookie`, or a name containing `token`, "
    "`secret`, `key`, `password` or `signature` is sensitive: stored encrypted, and shown as "
    f"`{headers.MASK}`."
)
_METADATA_RULES = (
    f"At most {MAX_METADATA_KEYS} keys; a key is 1 to {MAX_METADATA_KEY_LENGTH} characters, a "
    f"value at most {MAX_METADATA_VALUE_LENGTH}."
)
_HEADER_VALUE: dict[str, Any] = {
    "type": "string",
    "maxLength": headers.MAX_VALUE_LENGTH,
    "pattern": headers.VALUE_PATTERN,
}
METADATA_INPUT: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH},
    "description": (
        f"Key-value pairs for your own use. {_METADATA_RULES} On update, the keys given are "
        'merged into the stored ones; a key set to `""` is removed; `null` removes them all.'
    ),
}
METADATA_OUTPUT: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_METADATA_KEYS,
    "additionalProperties": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_METADATA_VALUE_LENGTH,
    },
    "description": f"Key-value pairs for your own use. {_METADATA_RULES}",
}
HEADERS_INPUT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {**_HEADER_VALUE, "nullable": True},
    "description": (
        "Headers sent on every delivery, beside the service's own (which they cannot "
        f"replace). {_HEADER_RULES} On update, the names given are merged into the stored ones "
        "(a name in another case replaces the stored one); `null` removes one. Sending "
        f"`{headers.MASK}` for a sensitive header that is set keeps its value."
    ),
}
HEADERS_OUTPUT: dict[str, Any] = {
    "type": "object",
    "maxProperties": headers.MAX_HEADERS,
    "additionalProperties": _HEADER_VALUE,
    "description": f"Headers sent on every delivery. {_HEADER_RULES}",
}
RATE_LIMIT_HELP = (
    f"Deliveries per second to this endpoint, 1 to {MAX_RATE_LIMIT}, across every worker; "
    "deliveries over it wait (no attempt is counted). `null`: no limit."
)
DELIVERY_ORDER_HELP = (
    "`ordered`: deliveries are attempted one at a time, in the order their events were "
    "published; a failing one holds back those behind it. `unordered` (the default): "
    "concurrently."
)

# --- Examples ----------------------------------------------------------------------------

_ENDPOINT = {
    "webhook_endpoint_id": EXAMPLE_ID,
    "url": "https://example.com/md/webhooks",
    "enabled_events": ["judgment.created", "packet.created"],
    "status": "enabled",
    "created_at": "2026-06-12T18:40:00Z",
    "description": "Judgments for the billing service",
    "metadata": {"team": "billing"},
    "headers": {"X-Tenant": "acme", "Authorization": headers.MASK},
    "rate_limit": 50,
    "delivery_order": "unordered",
}

CREATE_EXAMPLES = [
    OpenApiExample(
        "Create",
        request_only=True,
        value={
            "url": "https://example.com/md/webhooks",
            "enabled_events": ["judgment.created", "packet.created"],
            "description": "Judgments for the billing service",
            "metadata": {"team": "billing"},
            "headers": {"X-Tenant": "acme", "Authorization": "Bearer rcv_4f8a2c"},
            "rate_limit": 50,
        },
    ),
    OpenApiExample(
        "Created",
        response_only=True,
        status_codes=[201],
        value={**_ENDPOINT, "signing_secret": "whsec_kkVbNz31qPe8RmT4cYxAhD2w"},
    ),
]

LIST_EXAMPLES = [
    OpenApiExample(
        "A page",
        response_only=True,
        status_codes=[200],
        value={"object": "list", "data": [_ENDPOINT], "has_more": False},
    ),
]

RETRIEVE_EXAMPLES = [
    OpenApiExample("Endpoint", response_only=True, status_codes=[200], value=_ENDPOINT),
]

UPDATE_EXAMPLES = [
    OpenApiExample("Disable", request_only=True, value={"status": "disabled"}),
    OpenApiExample(
        "Merge headers and metadata",
        request_only=True,
        value={"headers": {"X-Tenant": None, "X-Region": "eu"}, "metadata": {"team": ""}},
    ),
    OpenApiExample(
        "Disabled",
        response_only=True,
        status_codes=[200],
        value={**_ENDPOINT, "status": "disabled"},
    ),
]

DELETE_EXAMPLES = [
    OpenApiExample(
        "Deleted",
        response_only=True,
        status_codes=[200],
        value={"webhook_endpoint_id": EXAMPLE_ID, "deleted": True},
    ),
]

EVENT_TYPES_EXAMPLES = [
    OpenApiExample(
        "Catalog",
        response_only=True,
        status_codes=[200],
        value={
            "object": "list",
            "data": [
                {"type": "judgment.created", "description": "A judgment was created."},
                {"type": "packet.created", "description": "A packet was created."},
            ],
            "has_more": False,
        },
    ),
]

_NOT_FOUND: ErrorExamples = {
    "not_found": (f"No such webhook endpoint: '{EXAMPLE_ID}'.", "webhook_endpoint_id"),
}

CREATE_ERRORS: ErrorExamples = {
    "parameter_invalid": ("Invalid url: the URL must be an absolute https:// URL.", "url"),
    "parameter_unknown": ("Received unknown parameter: colour.", "colour"),
}

LIST_ERRORS: ErrorExamples = {
    "parameter_invalid": ("limit must be an integer from 1 to 100.", "limit"),
}

UPDATE_ERRORS: ErrorExamples = {
    **_NOT_FOUND,
    "parameter_invalid": ("status must be one of: enabled, disabled.", "status"),
    "parameter_unknown": ("Received unknown parameter: colour.", "colour"),
}

OBJECT_ERRORS: ErrorExamples = _NOT_FOUND
