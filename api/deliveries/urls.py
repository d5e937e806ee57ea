from django.urls import path
from rest_framework.routers import SimpleRouter

from api.deliveries.views import (
    DeliveryViewSet,
    EndpointDeliveryViewSet,
    EndpointTestEventViewSet,
    EventViewSet,
)

router = SimpleRouter(trailing_slash=False)
router.register("events", EventViewSet, basename="event")

urlpatterns = [
    *router.urls,
    path(
        "webhook_endpoints/<str:webhook_endpoint_id>/deliveries",
        EndpointDeliveryViewSet.as_view({"get": "list"}),
        name="webhook-endpoint-deliveries",
    ),
    path(
        "webhook_endpoints/<str:webhook_endpoint_id>/test",
        EndpointTestEventViewSet.as_view({"post": "send"}),
        name="webhook-endpoint-test",
    ),
    path(
        "deliveries/<str:delivery_id>/retry",
        DeliveryViewSet.as_view({"post": "retry"}),
        name="delivery-retry",
    ),
]
