"""Documentation-only values for the webhook endpoint operations: the reference's examples.

Kept out of views.py so the views read as code; tests check every example against the schema.
"""

from drf_spectacular.utils import OpenApiExample

from api.openapi import ErrorExamples, object_id_parameter

TAG_WEBHOOK_ENDPOINTS = "Webhook Endpoints"
TAG_EVENT_TYPES = "Event Types"

EXAMPLE_ID = "we_8KdQ2n4Vb1Xc7M"

WEBHOOK_ENDPOINT_ID = object_id_parameter("webhook_endpoint_id", "webhook endpoint", EXAMPLE_ID)

_ENDPOINT = {
    "webhook_endpoint_id": EXAMPLE_ID,
    "url": "https://example.com/md/webhooks",
    "enabled_events": ["judgment.created", "packet.created"],
    "status": "enabled",
    "created_at": "2026-06-12T18:40:00Z",
}

CREATE_EXAMPLES = [
    OpenApiExample(
        "Create",
        request_only=True,
        value={
            "url": "https://example.com/md/webhooks",
            "enabled_events": ["judgment.created", "packet.created"],
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
