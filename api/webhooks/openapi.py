"""Documentation-only values for the webhook endpoint operations: the reference's examples.

Kept out of views.py so the views read as code; tests check every example against the schema.
"""

from typing import Any

from drf_spectacular.utils import OpenApiExample

from api.openapi import ErrorExamples, Refusal, cursor_refusals, object_id_parameter
from webhooks import headers
from webhooks.catalog import ALL_EVENTS, EVENT_TYPE_NAMES, is_known
from webhooks.services import (
    MAX_DESCRIPTION_LENGTH,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_RATE_LIMIT,
)
from webhooks.url_policy import MAX_HOST_LENGTH, MAX_URL_LENGTH

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


def _any_case(name: str) -> str:
    """A header name (letters and `-`) as a pattern matching it in any case: JSON Schema's
    patterns have no case-insensitive flag."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in name)


_REFUSED_NAME = "^(?:{names})$|^(?:{prefixes})".format(
    names="|".join(_any_case(name) for name in headers.REFUSED),
    prefixes="|".join(_any_case(prefix) for prefix in headers.REFUSED_PREFIXES),
)
_HEADER_NAME: dict[str, Any] = {
    "minLength": 1,
    "maxLength": headers.MAX_NAME_LENGTH,
    "pattern": headers.NAME_PATTERN,
    "not": {"pattern": _REFUSED_NAME},
}
# Text the API stores: PostgreSQL holds no U+0000 in text or jsonb. (A `not` rather than a
# pattern: drf-spectacular wraps a blank-allowing field with a pattern in a oneOf that "" fails.)
WITHOUT_NUL: dict[str, Any] = {"not": {"type": "string", "pattern": "\\u0000"}}
_METADATA_KEY: dict[str, Any] = {
    "minLength": 1,
    "maxLength": MAX_METADATA_KEY_LENGTH,
    **WITHOUT_NUL,
}
DESCRIPTION_INPUT: dict[str, Any] = {
    "type": "string",  # or null: the field allows it
    "maxLength": MAX_DESCRIPTION_LENGTH,
    **WITHOUT_NUL,
    "description": "Free text for your own use.",
}
METADATA_INPUT: dict[str, Any] = {
    "type": "object",  # or null: the field allows it
    "propertyNames": _METADATA_KEY,
    "additionalProperties": {
        "type": "string",
        "maxLength": MAX_METADATA_VALUE_LENGTH,
        **WITHOUT_NUL,
    },
    "description": (
        f"Key-value pairs for your own use. {_METADATA_RULES} On update, the keys given are "
        'merged into the stored ones; a key set to `""` is removed; `null` removes them all.'
    ),
}
METADATA_OUTPUT: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": _METADATA_KEY,
    "additionalProperties": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_METADATA_VALUE_LENGTH,
        **WITHOUT_NUL,
    },
    "description": f"Key-value pairs for your own use. {_METADATA_RULES}",
}
HEADERS_INPUT: dict[str, Any] = {
    "type": "object",
    "propertyNames": _HEADER_NAME,
    "additionalProperties": {**_HEADER_VALUE, "type": ["string", "null"]},
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
    "propertyNames": _HEADER_NAME,
    "additionalProperties": _HEADER_VALUE,
    "description": f"Headers sent on every delivery. {_HEADER_RULES}",
}

# --- url and enabled_events ---------------------------------------------------------------

# The form webhooks.url_policy accepts, for a host named in ASCII: a scheme in any case, labels
# of letters, digits, `_` and inner `-` (253 characters in all, the last label not numeric, so
# never an IPv4 address), a port from 1 to 65535, then a path and query of URI characters, no
# fragment. The server also takes internationalized names and IP literals; which addresses it
# refuses depends on DNS and on its settings (documented as refusals).
_LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_LAST_LABEL = "[A-Za-z](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_URI_CHARACTER = "(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})"
URL_PATTERN = (
    f"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_LABEL}\\.)*{_LAST_LABEL}\\.?"
    f"(?::{_PORT})?(?:[/?]{_URI_CHARACTER}*)?$"
)
# The host's length, apart: as a lookahead in URL_PATTERN it makes generating examples slow.
URL_HOST_LENGTH_PATTERN = f"^[^:]*://[^/?:]{{1,{MAX_HOST_LENGTH}}}\\.?(?:[/?:]|$)"
URL_INPUT: dict[str, Any] = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "pattern": URL_PATTERN,
    "allOf": [{"pattern": URL_HOST_LENGTH_PATTERN}],
    "description": (
        "Where deliveries are sent: an absolute `https://` URL (sandbox also takes `http://`), "
        f"at most {MAX_URL_LENGTH} characters, without user name, password or fragment. A host "
        "that is, or resolves to, a private, loopback, link-local, multicast or reserved "
        "address is refused in production, and in sandbox unless the operator allows it."
    ),
}

SUBSCRIBABLE_EVENT_TYPES = [name for name in EVENT_TYPE_NAMES if is_known(name)]


def enabled_events_schema(max_items: int) -> dict[str, Any]:
    """`["*"]`, or event types from the catalog (repeats are dropped), never both."""
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": max_items,
        "anyOf": [
            {"items": {"const": ALL_EVENTS}},
            {"items": {"enum": SUBSCRIBABLE_EVENT_TYPES}},
        ],
        "description": (
            f'Event types to receive, from `GET /v1/event_types`; `["{ALL_EVENTS}"]` (the '
            'default) for every event. Not empty; `"*"` stands alone.'
        ),
    }


ENABLED_EVENTS_OUTPUT: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "anyOf": [
        {"items": {"const": ALL_EVENTS}, "maxItems": 1},
        {"items": {"enum": SUBSCRIBABLE_EVENT_TYPES}, "uniqueItems": True},
    ],
    "description": f'The event types this endpoint receives; `["{ALL_EVENTS}"]`: every one.',
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

# --- What a request of the documented form can still be refused for ---------------------

WRITE_REFUSALS = [
    Refusal(
        "url",
        "the URL's host is, or resolves to, an address webhooks may not reach (production: "
        "never; sandbox: unless the operator allows private addresses)",
        "Invalid url: the URL points at localhost, which webhooks may not reach.",
    ),
    Refusal(
        "url",
        "an `http://` URL comes with a production key",
        "Invalid url: the URL must use https:// (http:// is accepted in sandbox only).",
    ),
    Refusal(
        "metadata",
        f"the metadata would have more than {MAX_METADATA_KEYS} keys (on update: once merged "
        "into the stored ones)",
        f"metadata has at most {MAX_METADATA_KEYS} keys; this would make {MAX_METADATA_KEYS + 1}.",
    ),
    Refusal(
        "headers",
        f"there would be more than {headers.MAX_HEADERS} headers, or more than "
        f"{headers.MAX_TOTAL_SIZE} characters of names and values (on update: once merged into "
        "the stored ones); two names differ only in case; or "
        f"`{headers.MASK}` stands for a sensitive header that is not set",
        "Invalid headers: 'X-Tenant' is given more than once, in different cases.",
    ),
]
LIST_REFUSALS = cursor_refusals("webhook endpoint", EXAMPLE_ID)

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
