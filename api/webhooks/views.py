from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import scopes
from accounts.models import Environment
from api.errors import not_found
from api.openapi import LIST_PARAMETERS, api_operation
from api.pagination import LIST_PARAMS, parse_page_request
from api.serializers import NoInput
from api.views import ApiViewSet
from api.webhooks import openapi as docs
from api.webhooks.serializers import (
    EventTypeListOutput,
    RotateSecretInput,
    WebhookEndpointCreatedOutput,
    WebhookEndpointCreateInput,
    WebhookEndpointDeletedOutput,
    WebhookEndpointListOutput,
    WebhookEndpointOutput,
    WebhookEndpointUpdateInput,
)
from webhooks import services
from webhooks.catalog import EVENT_TYPES
from webhooks.models import WebhookEndpoint
from webhooks.selectors import endpoint_get, endpoint_page


def endpoint_or_404(environment: Environment, webhook_endpoint_id: str) -> WebhookEndpoint:
    """The caller's endpoint with this id, or `404 not_found` (for every view that takes one)."""
    endpoint = endpoint_get(environment=environment, public_id=webhook_endpoint_id)
    if endpoint is None:
        raise not_found("webhook endpoint", "webhook_endpoint_id", webhook_endpoint_id)
    return endpoint


class WebhookEndpointViewSet(ApiViewSet):
    """`/v1/webhook_endpoints`: the five operations of the reference."""

    lookup_field = "webhook_endpoint_id"
    lookup_value_regex = "[^/]+"
    required_scopes = {
        "list": scopes.WEBHOOK_ENDPOINTS_READ,
        "retrieve": scopes.WEBHOOK_ENDPOINTS_READ,
        "create": scopes.WEBHOOK_ENDPOINTS_WRITE,
        "partial_update": scopes.WEBHOOK_ENDPOINTS_WRITE,
        "destroy": scopes.WEBHOOK_ENDPOINTS_WRITE,
        "rotate_secret": scopes.WEBHOOK_ENDPOINTS_WRITE,
    }
    query_params = {"list": LIST_PARAMS}

    def get_endpoint(self, webhook_endpoint_id: str) -> WebhookEndpoint:
        return endpoint_or_404(self.environment, webhook_endpoint_id)

    @api_operation(
        operation_id="webhook_endpoints_list",
        summary="List webhook endpoints",
        description=(
            "Lists registered endpoints for the current environment, newest first. Signing "
            "secrets are never returned after creation."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_READ,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        parameters=LIST_PARAMETERS,
        responses={200: WebhookEndpointListOutput},
        examples=docs.LIST_EXAMPLES,
        error_examples=docs.LIST_ERRORS,
        refusals=docs.LIST_REFUSALS,
    )
    def list(self, request: Request) -> Response:
        page = endpoint_page(
            environment=self.environment, page=parse_page_request(request.query_params)
        )
        represent = WebhookEndpointOutput().to_representation  # per record, no ListSerializer
        return Response(
            {
                "object": "list",
                "data": [represent(endpoint) for endpoint in page.items],
                "has_more": page.has_more,
            }
        )

    @api_operation(
        operation_id="webhook_endpoints_create",
        summary="Create a webhook endpoint",
        description=(
            "Registers an HTTPS endpoint for signed event deliveries. The `signing_secret` is "
            "returned once, on this response only: store it, you need it to verify "
            "`MD-Signature` headers. Sandbox also accepts `http` URLs for local development. "
            '`enabled_events` takes types from `GET /v1/event_types`; omit it or send `["*"]` '
            "for every event. `headers` are sent on every delivery; sensitive ones are stored "
            "encrypted and shown as `********` on every read."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        request=WebhookEndpointCreateInput,
        idempotent=True,
        responses={201: WebhookEndpointCreatedOutput},
        examples=docs.CREATE_EXAMPLES,
        error_examples=docs.CREATE_ERRORS,
        refusals=docs.WRITE_REFUSALS,
    )
    def create(self, request: Request) -> Response:
        data = self.validated(WebhookEndpointCreateInput, request.data)
        created = services.endpoint_create(environment=self.environment, **data)
        return Response(WebhookEndpointCreatedOutput(created).data, status=201)

    @api_operation(
        operation_id="webhook_endpoints_retrieve",
        summary="Retrieve a webhook endpoint",
        description=(
            "Gets one endpoint by id. Returns `not_found` (404) if no endpoint with this id "
            "exists in your organization and environment."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_READ,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        lookup=docs.WEBHOOK_ENDPOINT_ID,
        responses={200: WebhookEndpointOutput},
        examples=docs.RETRIEVE_EXAMPLES,
        error_examples=docs.OBJECT_ERRORS,
    )
    def retrieve(self, request: Request, webhook_endpoint_id: str) -> Response:
        return Response(WebhookEndpointOutput(self.get_endpoint(webhook_endpoint_id)).data)

    @api_operation(
        operation_id="webhook_endpoints_update",
        summary="Update a webhook endpoint",
        description=(
            "Updates the URL, event filter, status, or delivery control fields. Disabled "
            "endpoints stop receiving deliveries immediately; re-enabling resumes new events "
            "only. `metadata` and `headers` are merged into the stored ones: a metadata key set "
            'to `""` and a header set to `null` are removed, `"metadata": null` removes every '
            "key."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        lookup=docs.WEBHOOK_ENDPOINT_ID,
        request=WebhookEndpointUpdateInput,
        responses={200: WebhookEndpointOutput},
        examples=docs.UPDATE_EXAMPLES,
        error_examples=docs.UPDATE_ERRORS,
        refusals=docs.WRITE_REFUSALS,
    )
    def partial_update(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(webhook_endpoint_id)
        data = self.validated(WebhookEndpointUpdateInput, request.data)
        endpoint = services.endpoint_update(endpoint=endpoint, **data)
        return Response(WebhookEndpointOutput(endpoint).data)

    @api_operation(
        operation_id="webhook_endpoints_delete",
        summary="Delete a webhook endpoint",
        description=(
            "Removes the endpoint. Deliveries stop immediately; the signing secret is "
            "invalidated. Afterwards the id is `not_found` everywhere."
        ),
        request=NoInput,
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        lookup=docs.WEBHOOK_ENDPOINT_ID,
        responses={200: WebhookEndpointDeletedOutput},
        examples=docs.DELETE_EXAMPLES,
        error_examples=docs.OBJECT_ERRORS,
    )
    def destroy(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(webhook_endpoint_id)
        self.validated(NoInput, request.data)
        services.endpoint_delete(endpoint=endpoint)
        return Response({"webhook_endpoint_id": endpoint.public_id, "deleted": True})

    @api_operation(
        operation_id="webhook_endpoints_rotate_secret",
        summary="Rotate a webhook endpoint's signing secret",
        description=(
            "Makes a new signing secret and returns it, once, on this response. The current "
            "secret keeps signing for `overlap_seconds` (default 86400, at most 604800; `0` "
            "revokes it at once): meanwhile every delivery's `MD-Signature` carries one `v1` "
            "per valid secret, newest first, so receivers can switch without a failed check."
        ),
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[docs.TAG_WEBHOOK_ENDPOINTS],
        lookup=docs.WEBHOOK_ENDPOINT_ID,
        request=RotateSecretInput,
        idempotent=True,
        responses={200: WebhookEndpointCreatedOutput},
    )
    @action(detail=True, methods=["post"], url_path="rotate_secret")
    def rotate_secret(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(webhook_endpoint_id)
        data = self.validated(RotateSecretInput, request.data)
        rotated = services.endpoint_secret_rotate(endpoint=endpoint, **data)
        return Response(WebhookEndpointCreatedOutput(rotated).data)


class EventTypeViewSet(ApiViewSet):
    """`GET /v1/event_types`: the catalog, for any valid key."""

    required_scopes = {"list": None}

    @api_operation(
        operation_id="event_types_list",
        summary="List event types",
        description=(
            "The event catalog: every event type an endpoint can subscribe to in "
            "`enabled_events`, with a one-line description. All of it fits on one page."
        ),
        scope=None,
        tags=[docs.TAG_EVENT_TYPES],
        responses={200: EventTypeListOutput},
        examples=docs.EVENT_TYPES_EXAMPLES,
    )
    def list(self, request: Request) -> Response:
        return Response(
            {
                "object": "list",
                "data": [{"type": t, "description": d} for t, d in EVENT_TYPES.items()],
                "has_more": False,
            }
        )
