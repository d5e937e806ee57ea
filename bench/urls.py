"""The service's URLs plus a reference view and the API's peer.

- `/bench/bare`: a plain Django view, no DRF, no database: a reference figure for what the
  middleware stack and gunicorn alone allow.
- `/bench/drf/webhook_endpoints` and `/bench/drf/webhook_endpoints/<public_id>`: the same list
  and retrieve written as idiomatic DRF (generic views, a ModelSerializer, CursorPagination, an
  ORM queryset, an ORM key check, DRF's JSON renderer): what a well-written DRF service does
  for the same request, and the peer the API's targets are measured against.
"""

from typing import cast

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework import exceptions, generics, pagination, renderers, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from accounts.keys import key_hash
from accounts.models import ApiKey
from api.serializers import ApiDateTimeField
from config.urls import handler400, handler403, handler404, handler500, urlpatterns
from webhooks.headers import masked as masked_headers
from webhooks.models import WebhookEndpoint, WebhookEndpointQuerySet
from webhooks.representation import SHOWN_FIELDS

BARE_BODY = b'{"object":"bench","ok":true}'


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BARE_BODY, content_type="application/json")


class DrfEndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    webhook_endpoint_id = serializers.CharField(source="public_id", read_only=True)
    # The API's time format, so both answer the same bytes for an endpoint.
    created_at = ApiDateTimeField(read_only=True)
    headers = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        # The API's fields (its public id under its API name), so a field added to the API is
        # shown by the peer too: tests/test_bench_peer.py holds both to the same answers.
        fields = ["webhook_endpoint_id", *(f for f in SHOWN_FIELDS if f != "public_id")]

    def get_headers(self, endpoint: WebhookEndpoint) -> dict[str, str]:
        return masked_headers(endpoint.headers)


class DrfEndpointPagination(pagination.CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20


class DrfApiKeyAuthentication(BaseAuthentication):
    """The key check as a DRF service writes it: the active key and its environment, by the
    ORM."""

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        scheme, _, raw_key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not raw_key.strip():
            return None
        try:
            api_key = ApiKey.objects.select_related("environment").get(
                key_hash=key_hash(raw_key.strip()), revoked_at__isnull=True
            )
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key provided.") from None
        return api_key, api_key


class DrfEndpointView(generics.GenericAPIView[WebhookEndpoint]):
    serializer_class = DrfEndpointSerializer
    authentication_classes = [DrfApiKeyAuthentication]
    renderer_classes = [renderers.JSONRenderer]
    # The API's own permission reads each action's scope from ApiViewSet, which this is not.
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> WebhookEndpointQuerySet:
        # Set by DrfApiKeyAuthentication; the stubs know only DRF's own Token.
        api_key = cast(ApiKey, self.request.auth)
        return WebhookEndpoint.objects.for_environment(api_key.environment_id)


class DrfEndpointList(DrfEndpointView, generics.ListAPIView[WebhookEndpoint]):
    pagination_class = DrfEndpointPagination


class DrfEndpointRetrieve(DrfEndpointView, generics.RetrieveAPIView[WebhookEndpoint]):
    lookup_field = "public_id"


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    path("bench/drf/webhook_endpoints", DrfEndpointList.as_view(), name="bench-drf-list"),
    path(
        "bench/drf/webhook_endpoints/<str:public_id>",
        DrfEndpointRetrieve.as_view(),
        name="bench-drf-retrieve",
    ),
    *urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
