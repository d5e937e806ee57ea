"""A URLconf for one test: the real API plus two views that fail, to see what a bug looks like
to a client (an envelope, no traceback) and to an operator (a logged traceback)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response

from api.views import ApiViewSet
from config.urls import handler404, handler500  # noqa: F401
from config.urls import urlpatterns as api_urlpatterns


class FailingViewSet(ApiViewSet):
    required_scopes = {"list": None}

    def list(self, request: Request) -> Response:
        raise RuntimeError("secret-detail from a DRF view")


def failing_django_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret-detail from a Django view")


urlpatterns = [
    path("v1/failing_drf_view", FailingViewSet.as_view({"get": "list"})),
    path("v1/failing_django_view", failing_django_view),
    *api_urlpatterns,
]
