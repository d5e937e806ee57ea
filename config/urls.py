from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

urlpatterns = [
    path("v1/", include("webhooks.api.urls")),
    path("v1/openapi.json", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("v1/docs", SpectacularRedocView.as_view(url_name="openapi-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler400 = "api.errors.handler400"
handler403 = "api.errors.handler403"
handler404 = "api.errors.handler404"
handler500 = "api.errors.handler500"
