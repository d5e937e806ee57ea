from django.urls import path

from api.recoveries.views import RecoveryViewSet

urlpatterns = [
    path(
        "webhook_endpoints/<str:webhook_endpoint_id>/recover",
        RecoveryViewSet.as_view({"post": "create"}),
        name="webhook-endpoint-recover",
    ),
    path(
        "recoveries/<str:recovery_id>",
        RecoveryViewSet.as_view({"get": "retrieve"}),
        name="recovery-detail",
    ),
]
