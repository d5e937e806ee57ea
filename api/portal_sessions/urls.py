from django.urls import path

from api.portal_sessions.views import PortalSessionViewSet

urlpatterns = [
    path(
        "portal_sessions",
        PortalSessionViewSet.as_view({"post": "create"}),
        name="portal-session-create",
    ),
]
