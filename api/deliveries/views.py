from typing import Any

from django.http import QueryDict
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import scopes
from api.deliveries import openapi as docs
from api.deliveries.serializers import (
    DeliveryListOutput,
    DeliveryWithAttemptsOutput,
    EventCreateInput,
    EventDetailOutput,
    EventListOutput,
    EventOutput,
)
from api.errors import ApiError, not_found
from api.openapi import LIST_PARAMETERS, api_operation, object_id_parameter
from api.pagination import LIST_PARAMS, parse_page_request
from api.serializers import NoInput
from api.views import ApiViewSet
from api.webhooks.openapi import WEBHOOK_ENDPOINT_ID
from api.webhooks.views import endpoint_or_404
from deliveries import dispatch, selectors, services
from deliveries.models import Delivery

TAG_EVENTS = "Events"
TAG_DELIVERIES = "Deliveries"
EVENT_ID = object_id_parameter("event_id", "event", docs.EVENT_EXAMPLE_ID)
DELIVERY_ID = object_id_parameter("delivery_id", "delivery", docs.DELIVERY_EXAMPLE_ID)


class EventViewSet(ApiViewSet):
    """`/v1/events`: publish events, and see what became of them."""

    lookup_field = "event_id"
    lookup_value_regex = "[^/]+"
    required_scopes = {
        "create": scopes.EVENTS_WRITE,
        "list": scopes.EVENTS_READ,
        "retrieve": scopes.EVENTS_READ,
    }
    query_params = {"list": LIST_PARAMS}

    @api_operation(
        operation_id="events_create",
        summary="Publish an event",
        description=(
            "Publishes an event into the key's environment. It is delivered, signed, to every "
            "enabled webhook endpoint there whose `enabled_events` match, at least once."
        ),
        scope=scopes.EVENTS_WRITE,
        tags=[TAG_EVENTS],
        request=EventCreateInput,
        idempotent=True,
        responses={201: EventOutput},
        refusals=docs.PUBLISH_REFUSALS,
    )
    def create(self, request: Request) -> Response:
        data = self.validated(EventCreateInput, request.data)
        event = services.event_publish(
            environment=self.environment,
            type=data["type"],
            data=data.get("data"),
            api_version=request._request.api_version,  # type: ignore[attr-defined]
        )
        context: dict[str, Any] = {"delivery_counts": {}}
        return Response(EventOutput(event, context=context).data, status=201)

    @api_operation(
        operation_id="events_list",
        summary="List events",
        description="Events of the key's environment, newest first, with delivery counts.",
        scope=scopes.EVENTS_READ,
        tags=[TAG_EVENTS],
        parameters=LIST_PARAMETERS,
        responses={200: EventListOutput},
        refusals=docs.EVENTS_LIST_REFUSALS,
    )
    def list(self, request: Request) -> Response:
        page = selectors.event_page(
            environment=self.environment, page=parse_page_request(request.query_params)
        )
        counts = selectors.delivery_counts([e.pk for e in page.items])
        data = EventOutput(page.items, many=True, context={"delivery_counts": counts}).data
        return Response({"object": "list", "data": data, "has_more": page.has_more})

    @api_operation(
        operation_id="events_retrieve",
        summary="Retrieve an event",
        description="One event, with the state of its deliveries (the newest 100).",
        scope=scopes.EVENTS_READ,
        tags=[TAG_EVENTS],
        lookup=EVENT_ID,
        responses={200: EventDetailOutput},
    )
    def retrieve(self, request: Request, event_id: str) -> Response:
        event = selectors.event_get(environment=self.environment, public_id=event_id)
        if event is None:
            raise not_found("event", "event_id", event_id)
        context = {
            "delivery_counts": selectors.delivery_counts([event.pk]),
            "deliveries": selectors.event_deliveries(event),
        }
        return Response(EventDetailOutput(event, context=context).data)


STATUS_PARAMETER = OpenApiParameter(
    "status",
    {"type": "string", "enum": list(Delivery.Status.values)},
    OpenApiParameter.QUERY,
    description="Only the deliveries in this status.",
)


def status_filter(params: QueryDict) -> str | None:
    status = params.get("status")
    if status is not None and status not in Delivery.Status.values:
        raise ApiError(
            "parameter_invalid",
            f"status must be one of: {', '.join(Delivery.Status.values)}.",
            param="status",
        )
    return status


class EndpointDeliveryViewSet(ApiViewSet):
    """`/v1/webhook_endpoints/{id}/deliveries`: the attempt log of one endpoint."""

    required_scopes = {"list": scopes.EVENTS_READ}
    query_params = {"list": LIST_PARAMS | {"status"}}

    @api_operation(
        operation_id="webhook_endpoint_deliveries_list",
        summary="List an endpoint's deliveries",
        description=(
            "Deliveries to one endpoint, newest first, each with every attempt made: when, how "
            "long, the status code or error, and the first 16 KiB of the response. `status` "
            "keeps only the deliveries in that status; the cursors page through those."
        ),
        scope=scopes.EVENTS_READ,
        tags=[TAG_DELIVERIES],
        lookup=WEBHOOK_ENDPOINT_ID,
        parameters=[*LIST_PARAMETERS, STATUS_PARAMETER],
        responses={200: DeliveryListOutput},
        refusals=docs.DELIVERIES_LIST_REFUSALS,
    )
    def list(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = endpoint_or_404(self.environment, webhook_endpoint_id)
        page = selectors.endpoint_delivery_page(
            environment=self.environment,
            endpoint=endpoint,
            page=parse_page_request(request.query_params),
            status=status_filter(request.query_params),
        )
        data = DeliveryWithAttemptsOutput(page.items, many=True).data
        return Response({"object": "list", "data": data, "has_more": page.has_more})


class EndpointTestEventViewSet(ApiViewSet):
    """`POST /v1/webhook_endpoints/{id}/test`: a `ping` to one endpoint, and how it went."""

    required_scopes = {"send": scopes.WEBHOOK_ENDPOINTS_WRITE}

    @api_operation(
        operation_id="webhook_endpoints_test",
        summary="Send a test event to an endpoint",
        description=(
            "Sends a `ping` event to this endpoint only, whatever its `enabled_events`, signed "
            "like every delivery, and answers once the attempt is over (at most the delivery "
            "timeout) with the delivery and the attempt's outcome. A failed attempt is retried "
            "on the usual schedule. The endpoint must be enabled. To an ordered endpoint it "
            "goes at once, outside the order: it neither waits for the line nor lets anything "
            "past it. To a rate-limited endpoint it takes its turn within the limit: when its "
            "slot is more than 5 seconds away, the answer comes at once, with the delivery "
            "`pending` and no attempt yet, and a worker sends it at its slot."
        ),
        request=NoInput,
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[TAG_DELIVERIES],
        lookup=WEBHOOK_ENDPOINT_ID,
        idempotent=True,
        responses={200: DeliveryWithAttemptsOutput},
        refusals=docs.TEST_EVENT_REFUSALS,
    )
    def send(self, request: Request, webhook_endpoint_id: str) -> Response:
        endpoint = endpoint_or_404(self.environment, webhook_endpoint_id)
        self.validated(NoInput, request.data)
        # Sent here, in this request: the caller wants the outcome, not a promise.
        first = services.FirstClaim.starting_now(1)
        delivery = services.endpoint_test_event_send(endpoint=endpoint, first_claim=first)
        dispatch.deliveries_send(
            delivery_ids=list(first.claimed),
            top_up=False,
            wait_for_all=True,
            held_with=first.token,
            event_ids=list(first.claimed.values()),
        )
        delivery = selectors.endpoint_delivery_with_attempts(endpoint, delivery)
        return Response(DeliveryWithAttemptsOutput(delivery).data)


class DeliveryViewSet(ApiViewSet):
    """`POST /v1/deliveries/{id}/retry`."""

    lookup_field = "delivery_id"
    lookup_value_regex = "[^/]+"
    required_scopes = {"retry": scopes.WEBHOOK_ENDPOINTS_WRITE}

    @api_operation(
        operation_id="deliveries_retry",
        summary="Retry a delivery now",
        description=(
            "Sends the delivery again now, as one more attempt, whatever its state. The "
            "endpoint must exist and be enabled, and no attempt of the delivery may be in "
            "progress (`400 parameter_invalid` on `delivery_id` says so: retry once it ends)."
        ),
        request=NoInput,
        scope=scopes.WEBHOOK_ENDPOINTS_WRITE,
        tags=[TAG_DELIVERIES],
        lookup=DELIVERY_ID,
        idempotent=True,
        responses={202: DeliveryWithAttemptsOutput},
        refusals=docs.RETRY_REFUSALS,
    )
    def retry(self, request: Request, delivery_id: str) -> Response:
        delivery = selectors.delivery_get(environment=self.environment, public_id=delivery_id)
        if delivery is None:
            raise not_found("delivery", "delivery_id", delivery_id)
        self.validated(NoInput, request.data)
        delivery = services.delivery_retry_now(delivery=delivery)
        delivery = selectors.endpoint_delivery_with_attempts(delivery.endpoint, delivery)
        return Response(DeliveryWithAttemptsOutput(delivery).data, status=202)
