"""The service's URLs plus `/bench/bare`, the baseline: a plain Django view, no DRF, no DB."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

BARE_BODY = b'{"object":"bench","ok":true}'


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BARE_BODY, content_type="application/json")


urlpatterns = [path("bench/bare", bare, name="bench-bare"), *urlpatterns]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
