from typing import Any

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView

from api import health, metrics

# The reference is public: no API key is asked for, and a bad one is not a 401 here. The API's
# exception handler and middleware still apply (error envelope, MD-Request-Id, MD-Version).
# GET only, like the API: no OPTIONS metadata.
PUBLIC_DOCS: dict[str, Any] = {
    "authentication_classes": [],
    "permission_classes": [],
    "http_method_names": ["get", "head"],
}

urlpatterns = [
    path("v1/", include("api.webhooks.urls")),
    path("v1/", include("api.deliveries.urls")),
    path("v1/", include("api.recoveries.urls")),
    path("v1/", include("api.portal_sessions.urls")),
    # JSON only: the API's content negotiation picks a view's first renderer, and
    # SpectacularAPIView's first renderer is YAML.
    path("v1/openapi.json", SpectacularJSONAPIView.as_view(**PUBLIC_DOCS), name="openapi-schema"),
    path(
        "v1/docs",
        SpectacularRedocView.as_view(
            url_name="openapi-schema", template_name="api/redoc.html", **PUBLIC_DOCS
        ),
        name="api-docs",
    ),
    path("admin/", admin.site.urls),
    path("portal/", include("portal.urls", namespace="portal")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

handler400 = "api.errors.handler400"
handler403 = "api.errors.handler403"
handler404 = "api.errors.handler404"
handler500 = "api.errors.handler500"
