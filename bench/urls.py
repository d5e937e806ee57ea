"""The service's URLs plus two baselines.

- `/bench/bare`: a plain Django view, no DRF, no database: the target's baseline.
- `/bench/bare_query`: the same view after running the statement an API list page runs (its key
  check and first page, one round trip, prepared: api.sql), its rows discarded. What a list
  request costs beyond it is the API's own work in Python; what it costs beyond the bare view
  is the price of reading PostgreSQL at all (issue 7).
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

BARE_BODY = b'{"object":"bench","ok":true}'


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BARE_BODY, content_type="application/json")


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    *urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
