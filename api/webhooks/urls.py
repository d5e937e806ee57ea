from rest_framework.routers import SimpleRouter

from api.webhooks.views import EventTypeViewSet, WebhookEndpointViewSet

router = SimpleRouter(trailing_slash=False)
router.register("webhook_endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("event_types", EventTypeViewSet, basename="event-type")

urlpatterns = router.urls
