from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from accounts import scopes
from api.errors import ApiError
from api.pagination import LIST_PARAMS, keyset_page, parse_page_request
from api.views import ApiViewSet
from webhooks import services
from webhooks.api.serializers import (
    WebhookEndpointCreatedOutput,
    WebhookEndpointCreateInput,
    WebhookEndpointOutput,
    WebhookEndpointUpdateInput,
)
from webhooks.catalog import EVENT_TYPES
from webhooks.models import WebhookEndpoint
from webhooks.selectors import endpoint_get, endpoints_of


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
    }
    query_params = {"list": LIST_PARAMS}

    def get_endpoint(self, webhook_endpoint_id: str) -> WebhookEndpoint:
        endpoint = endpoint_get(environment=self.environment, public_id=webhook_endpoint_id)
        if endpoint is None:
            raise ApiError(
                "not_found",
                f"No such webhook endpoint: '{webhook_endpoint_id[:100]}'.",
                param="webhook_endpoint_id",
            )
        return endpoint

    def list(self, request: Request) -> Response:
        endpoints = endpoints_of(self.environment)
        page = keyset_page(
            endpoints,
            parse_page_request(request.query_params),
            find_cursor=lambda public_id: (
                endpoints.filter(public_id=public_id).only("id", "created_at").first()
            ),
            object_name="webhook endpoint",
        )
        return Response(
            {
                "object": "list",
                "data": WebhookEndpointOutput(page.items, many=True).data,
                "has_more": page.has_more,
            }
        )

    def create(self, request: Request) -> Response:
        data = self.validated(WebhookEndpointCreateInput, request.data)
        created = services.endpoint_create(environment=self.environment, **data)
        return Response(WebhookEndpointCreatedOutput(created).data, status=201)

    def retrieve(self, request: Request, webhook_endpoint_id: str) -> Response:
        return Response(WebhookEndpointOutput(self.get_endpoint(webhook_endpoint_id)).data)

    def partial_update(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(webhook_endpoint_id)
        data = self.validated(WebhookEndpointUpdateInput, request.data)
        endpoint = services.endpoint_update(endpoint=endpoint, **data)
        return Response(WebhookEndpointOutput(endpoint).data)

    def destroy(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = self.get_endpoint(webhook_endpoint_id)
        services.endpoint_delete(endpoint=endpoint)
        return Response({"webhook_endpoint_id": endpoint.public_id, "deleted": True})


class EventTypeViewSet(ApiViewSet):
    """`GET /v1/event_types`: the catalog, for any valid key."""

    required_scopes: dict[str, Any] = {"list": None}

    def list(self, request: Request) -> Response:
        return Response(
            {
                "object": "list",
                "data": [{"type": t, "description": d} for t, d in EVENT_TYPES.items()],
                "has_more": False,
            }
        )
