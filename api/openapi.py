"""The OpenAPI description of the public API (drf-spectacular): what every operation shares.

A view states what is particular to one operation with `api_operation(...)`: summary, scope,
body, success responses. The rest is built here from the same rules the code enforces, so no
view can document it differently: bearer API keys, `MD-Version` and `MD-Request-Id`, the one
error envelope, and which errors an operation can give (`standard_errors`).
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers

from api.errors import ERROR_CODES
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import MAX_KEY_LENGTH
from api.serializers import InputSerializer
from core.pagination import DEFAULT_LIMIT, MAX_LIMIT

F = TypeVar("F", bound=Callable[..., Any])

SECURITY_SCHEME_NAME = "ApiKeyAuth"
SCOPES_EXTENSION = "x-scopes"
# Read by SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"], so the envelope's enums get stable names.
ERROR_TYPES: list[str] = sorted({error_type for _, error_type in ERROR_CODES.values()})
ERROR_CODE_VALUES: list[str] = list(ERROR_CODES)

REQUEST_ID_PATTERN = "^req_[0-9A-HJKMNP-TV-Z]{26}$"  # a ULID in Crockford base32
LATEST_VERSION: str = settings.API_VERSIONS[-1]


# --- Authentication and strict request bodies ---------------------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents `api.authentication.ApiKeyAuthentication` as HTTP bearer auth."""

    target_class = "api.authentication.ApiKeyAuthentication"
    name = SECURITY_SCHEME_NAME

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "API key",
            "description": (
                "An API key, sent as `Authorization: Bearer <key>`. Sandbox keys look like "
                "`md_test_…`, production keys `md_live_…`. Each key belongs to one organization "
                "and environment and carries scopes; each operation names the scope it needs "
                f"(also in its `{SCOPES_EXTENSION}` extension). A missing, malformed, unknown or "
                "revoked key is a `401 unauthenticated`; a valid key without the scope is a "
                "`403 insufficient_scope`."
            ),
        }


STRICT_BODY_NOTE = "Unknown and read-only fields are refused with a `400` naming them."


class StrictInputSerializerExtension(OpenApiSerializerExtension):
    """Request bodies refuse undeclared fields (`InputSerializer`), so the schema says so."""

    target_class = "api.serializers.InputSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(
            self.target, direction, bypass_extensions=True
        )
        schema["additionalProperties"] = False
        if schema.get("description") == inspect.getdoc(InputSerializer):
            # A body serializer without its own docstring inherits a note for developers.
            schema["description"] = STRICT_BODY_NOTE
        return schema


class ApiAutoSchema(AutoSchema):
    """The project's DEFAULT_SCHEMA_CLASS.

    List operations return an explicit envelope serializer (`{object, data, has_more}`);
    drf-spectacular's list heuristic (`action == "list"`) would wrap it in an array again.
    """

    def _is_list_view(self, serializer: Any = None) -> bool:
        if hasattr(self.view, "required_scopes"):  # an api.views.ApiViewSet
            return False
        return super()._is_list_view(serializer)


# --- The error envelope -------------------------------------------------------------------


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=ERROR_TYPES, help_text="The kind of error; one per family of codes."
    )
    code = serializers.ChoiceField(
        choices=ERROR_CODE_VALUES, help_text="What went wrong, for programs to branch on."
    )
    message = serializers.CharField(help_text="What went wrong, for people to read.")
    param = serializers.CharField(
        allow_null=True,
        help_text="The parameter, body field or header at fault, or null.",
    )
    request_id = serializers.CharField(
        help_text="The request's `MD-Request-Id`; quote it to support.",
    )


@extend_schema_serializer(component_name="Error")
class ErrorEnvelopeSerializer(serializers.Serializer):
    """Every error response, whatever its status."""

    error = ErrorSerializer()


# --- Headers ------------------------------------------------------------------------------

MD_VERSION_HEADER = OpenApiParameter(
    "MD-Version",
    str,
    OpenApiParameter.HEADER,
    required=False,
    enum=list(settings.API_VERSIONS),
    description=(
        "The API version to use. Absent means the latest; an unknown version is a "
        "`400 invalid_version`."
    ),
)

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Makes the request safe to retry: for 24 hours, the same key with the same request "
        "returns the first response again (with `Idempotent-Replayed: true`) and creates "
        f"nothing. 1 to {MAX_KEY_LENGTH} printable ASCII characters. The same key with a "
        "different request is a `409 idempotency_key_reused`; while the first request is "
        "still running, `409 idempotency_key_in_use`."
    ),
)

# Response headers. `response=True` puts a header on every response of the operation.
MD_REQUEST_ID_RESPONSE_HEADER = OpenApiParameter(
    "MD-Request-Id",
    {"type": "string", "pattern": REQUEST_ID_PATTERN},
    OpenApiParameter.HEADER,
    required=True,
    response=True,
    description="This request's id (`req_<ULID>`); errors carry it too.",
)

MD_VERSION_RESPONSE_HEADER = OpenApiParameter(
    "MD-Version",
    str,
    OpenApiParameter.HEADER,
    required=True,
    enum=list(settings.API_VERSIONS),
    response=True,
    description="The API version the request was served with.",
)


def idempotent_replayed_header(statuses: Sequence[int]) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotent-Replayed",
        str,
        OpenApiParameter.HEADER,
        enum=["true"],
        response=list(statuses),
        description="Present when this is the stored response to an earlier request.",
    )


RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    {"type": "integer", "minimum": 1},
    OpenApiParameter.HEADER,
    required=True,
    response=[429],
    description="Seconds to wait before retrying.",
)

WWW_AUTHENTICATE_HEADER = OpenApiParameter(
    "WWW-Authenticate",
    str,
    OpenApiParameter.HEADER,
    required=True,
    response=[401],
    description='`Bearer realm="kinetic"`.',
)


# --- Standard errors ----------------------------------------------------------------------

_STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "The request is invalid.",
    401: "No valid API key.",
    403: "The API key lacks the scope this operation needs.",
    404: "No such object in the key's organization and environment.",
    405: "The path does not support this method.",
    409: "The Idempotency-Key conflicts with another request.",
    413: "The request body is too large.",
    415: "The request body is not JSON.",
    429: "Too many requests.",
    500: "Something went wrong on our side; the body never contains internals.",
    503: "The database cannot be reached right now; retry after `Retry-After` seconds.",
}

# Example (message, param) per code; an operation may pass its own for codes it gives often.
ErrorExamples = Mapping[str, tuple[str, str | None]]

DEFAULT_ERROR_EXAMPLES: dict[str, tuple[str, str | None]] = {
    "parameter_invalid": ("The request body must be a JSON object.", None),
    "parameter_missing": ("Missing required parameter: url.", "url"),
    "parameter_unknown": ("Received unknown query parameter: colour.", "colour"),
    "invalid_version": (
        f"Unknown API version '2020-01-01'. Supported: {', '.join(settings.API_VERSIONS)}.",
        "MD-Version",
    ),
    "unauthenticated": ("Invalid API key provided.", None),
    "insufficient_scope": ("This API key may not perform this request.", None),
    "not_found": ("No such resource.", None),
    "method_not_allowed": ('Method "PUT" not allowed.', None),
    "idempotency_key_reused": (
        "This Idempotency-Key was already used with a different request. "
        "Use a new key for a new request.",
        IDEMPOTENCY_HEADER,
    ),
    "idempotency_key_in_use": (
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        IDEMPOTENCY_HEADER,
    ),
    "payload_too_large": (
        f"Request bodies are limited to {settings.API_MAX_BODY_BYTES} bytes.",
        None,
    ),
    "unsupported_media_type": (
        "Request bodies must be JSON, sent with Content-Type: application/json.",
        None,
    ),
    "rate_limited": ("Too many requests. Retry after 2 seconds.", None),
    "internal_error": (
        "Something went wrong on our side. Retry the request; if this persists, contact "
        "support with the request id.",
        None,
    ),
    "service_unavailable": (
        "The service cannot reach its database right now. Retry the request shortly.",
        None,
    ),
}


def error_example(
    code: str, message: str, param: str | None, name: str | None = None, summary: str = ""
) -> OpenApiExample:
    status, error_type = ERROR_CODES[code]
    return OpenApiExample(
        name or code,
        summary=summary,
        value={
            "error": {
                "type": error_type,
                "code": code,
                "message": message,
                "param": param,
                "request_id": "req_01JZ8Q4M6V3B0C2XK9T7N5R1WD",
            }
        },
        status_codes=[status],
        response_only=True,
    )


@dataclass(frozen=True)
class Refusal:
    """A `400 parameter_invalid` that a request of the documented form can still get: it turns
    on what is stored, on the clock or on the server's settings, which no schema can state (or
    on several fields at once, which JSON Schema cannot weigh against each other).

    `when` completes "Refused when …"; `message` is an example of what the API then says.
    """

    param: str | None
    when: str
    message: str


def error_response(
    status: int,
    codes: Sequence[str],
    examples: ErrorExamples = DEFAULT_ERROR_EXAMPLES,
    refusals: Sequence[Refusal] = (),
) -> OpenApiResponse:
    """One status of the error envelope, listing the codes this operation can give with it."""
    listed = ", ".join(f"`{code}`" for code in codes)
    description = f"{_STATUS_DESCRIPTIONS[status]} Codes: {listed}."
    if refusals:
        cases = "; ".join(
            f"{r.when} (`param`: {f'`{r.param}`' if r.param else 'null'})" for r in refusals
        )
        description += f" Also refused, whatever the request's form, when: {cases}."
    return OpenApiResponse(
        response=ErrorEnvelopeSerializer,
        description=description,
        examples=[
            *(error_example(code, *examples[code]) for code in codes),
            *(
                error_example(
                    "parameter_invalid",
                    r.message,
                    r.param,
                    f"refused {n}",
                    f"Refused when {r.when}.",
                )
                for n, r in enumerate(refusals, start=1)
            ),
        ],
    )


def standard_errors(
    *,
    scoped: bool,
    lookup: bool,
    body: bool,
    body_has_required_fields: bool,
    idempotent: bool,
    examples: ErrorExamples = DEFAULT_ERROR_EXAMPLES,
    refusals: Sequence[Refusal] = (),
) -> dict[int, OpenApiResponse]:
    """The error responses an operation can give, from how the API handles every request.

    405 is not here: an operation's own method is always allowed; other methods on its path are
    answered with `405 method_not_allowed`, which the API description documents once.
    """
    bad_request = ["parameter_invalid", "parameter_unknown", "invalid_version"]
    if body_has_required_fields:
        bad_request.insert(1, "parameter_missing")
    errors: dict[int, list[str]] = {400: bad_request, 401: ["unauthenticated"]}
    if scoped:
        errors[403] = ["insufficient_scope"]
    if lookup:
        errors[404] = ["not_found"]
    if idempotent:
        errors[409] = ["idempotency_key_reused", "idempotency_key_in_use"]
    if body:
        errors[413] = ["payload_too_large"]
        errors[415] = ["unsupported_media_type"]
    errors[429] = ["rate_limited"]
    errors[500] = ["internal_error"]
    errors[503] = ["service_unavailable"]
    return {
        status: error_response(status, codes, examples, refusals if status == 400 else ())
        for status, codes in errors.items()
    }


def _has_required_fields(request: Any) -> bool:
    if request is None:
        return False
    instance = request() if isinstance(request, type) else request
    return any(field.required for field in getattr(instance, "fields", {}).values())


def _described(status: int, response: Any) -> OpenApiResponse:
    """OpenAPI requires a description on every response; the status phrase will do."""
    if isinstance(response, OpenApiResponse):
        return response
    return OpenApiResponse(response=response, description=HTTPStatus(status).phrase)


def api_operation(
    *,
    operation_id: str,
    summary: str,
    description: str,
    scope: str | None,
    responses: Mapping[int, Any],
    tags: Sequence[str],
    request: Any = None,
    lookup: OpenApiParameter | None = None,
    idempotent: bool = False,
    parameters: Sequence[OpenApiParameter] = (),
    examples: Sequence[OpenApiExample] = (),
    error_examples: ErrorExamples | None = None,
    refusals: Sequence[Refusal] = (),
) -> Callable[[F], F]:
    """`@extend_schema` for one public API operation, with everything operations share.

    `scope` must be the view's `required_scopes[action]` (tests compare them); `lookup` is the
    path parameter of an operation on one object (it can 404); `request` is the body serializer
    (it can 413/415); `idempotent` marks a POST that honours `Idempotency-Key` (it can 409).
    `error_examples` replaces the generic example of a code with one typical of this operation;
    `refusals` are the operation's 400s that its schema cannot rule out.
    """
    success = [status for status in responses if 200 <= status < 300]
    headers = [MD_VERSION_HEADER, MD_REQUEST_ID_RESPONSE_HEADER, MD_VERSION_RESPONSE_HEADER]
    headers += [RETRY_AFTER_HEADER, WWW_AUTHENTICATE_HEADER]
    if idempotent:
        headers += [IDEMPOTENCY_KEY_HEADER, idempotent_replayed_header(success)]
    if lookup is not None:
        headers.append(lookup)
    scope_text = (
        f"**Scope:** `{scope}`." if scope else "**Scope:** none; any valid API key may call this."
    )
    if idempotent:
        scope_text += f" **Idempotent:** send an `{IDEMPOTENCY_HEADER}` to retry safely."
    messages = dict(DEFAULT_ERROR_EXAMPLES)
    if scope:
        messages["insufficient_scope"] = (
            f"This API key does not have the '{scope}' scope this request needs.",
            None,
        )
    messages.update(error_examples or {})
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=f"{description}\n\n{scope_text}",
        tags=list(tags),
        request=request,
        parameters=[*headers, *parameters],
        responses={
            **{status: _described(status, response) for status, response in responses.items()},
            **standard_errors(
                scoped=scope is not None,
                lookup=lookup is not None,
                body=request is not None,
                body_has_required_fields=_has_required_fields(request),
                idempotent=idempotent,
                examples=messages,
                refusals=refusals,
            ),
        },
        examples=list(examples),
        extensions={SCOPES_EXTENSION: [scope] if scope else []},
    )


# --- The document as a whole --------------------------------------------------------------

# Appended to SPECTACULAR_SETTINGS["DESCRIPTION"]: the rules every operation follows.
API_CONVENTIONS = f"""\
## Requests
Authenticate with an API key: `Authorization: Bearer md_test_…` (sandbox) or `md_live_…` \
(production). Send `MD-Version: {LATEST_VERSION}` to pin the version (absent means the latest). \
Request bodies are JSON, sent with `Content-Type: application/json`; unknown and read-only \
fields are refused by name. An integer is written without a fraction or exponent: `5`, not \
`5.0` (JSON Schema counts `5.0` as an integer; the API refuses it with \
`400 parameter_invalid`). Every response carries `MD-Request-Id` and `MD-Version`.

## Errors
Every error has one shape, \
`{{"error": {{"type", "code", "message", "param", "request_id"}}}}`:

| Status | Codes |
|---|---|
| 400 | `parameter_invalid`, `parameter_missing`, `parameter_unknown`, `invalid_version` |
| 401 | `unauthenticated` |
| 403 | `insufficient_scope` |
| 404 | `not_found` (also for objects of another organization or environment) |
| 405 | `method_not_allowed` (a method the path does not support) |
| 409 | `idempotency_key_reused`, `idempotency_key_in_use` |
| 413 | `payload_too_large` |
| 415 | `unsupported_media_type` |
| 429 | `rate_limited` (with `Retry-After`) |
| 500 | `internal_error` |
| 503 | `service_unavailable` (with `Retry-After`: the database cannot be reached) |
"""


def postprocess_schema(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """A POSTPROCESSING_HOOKS entry. The conventions live here, beside the code that documents
    them per operation, rather than in settings (which cannot import this module)."""
    lead = result["info"].get("description", "")
    result["info"]["description"] = f"{lead}\n\n{API_CONVENTIONS}" if lead else API_CONVENTIONS
    return result


# --- Reusable parameters ------------------------------------------------------------------

_CURSOR_ID: dict[str, Any] = {"type": "string", "minLength": 1}

LIST_PARAMETERS: list[OpenApiParameter] = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        OpenApiParameter.QUERY,
        description=f"How many objects to return, 1 to {MAX_LIMIT}.",
    ),
    # The two cursors are one object, sent as query parameters of their own (form style,
    # exploded), because "at most one of them" is a rule on the object: parameters cannot
    # say it about each other.
    OpenApiParameter(
        "cursor",
        {
            "type": "object",
            "properties": {
                "starting_after": {
                    **_CURSOR_ID,
                    "description": "An object's id: returns the page of older objects after it.",
                },
                "ending_before": {
                    **_CURSOR_ID,
                    "description": "An object's id: returns the page of newer objects before it.",
                },
            },
            "additionalProperties": False,
            "maxProperties": 1,
        },
        OpenApiParameter.QUERY,
        style="form",
        explode=True,
        description=(
            "Where the page starts: `starting_after=<id>` or `ending_before=<id>`, each a query "
            "parameter of its own (`cursor` is not sent), and at most one of them. The id must "
            "be of an object this API key can see, or the request is a `400 parameter_invalid` "
            "naming the cursor."
        ),
    ),
]


def cursor_refusals(object_name: str, example_id: str) -> list[Refusal]:
    """A list operation's cursor naming an object the API key cannot see (or none at all)."""
    return [
        Refusal(
            cursor,
            f"`{cursor}` is not the id of a {object_name} this API key can see",
            f"No such {object_name}: '{example_id}'.",
        )
        for cursor in ("starting_after", "ending_before")
    ]


def object_id_parameter(name: str, object_name: str, example: str) -> OpenApiParameter:
    """The path parameter naming one object. Typed here because the views have no queryset
    for drf-spectacular to infer it from."""
    return OpenApiParameter(
        name,
        str,
        OpenApiParameter.PATH,
        required=True,
        description=(
            f"The {object_name}'s id. An id unknown in the API key's organization and "
            "environment is a `404 not_found`."
        ),
        examples=[OpenApiExample(object_name, value=example)],
    )
