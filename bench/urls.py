"""The service's URLs plus two baselines.

- `/bench/bare`: a plain Django view, no DRF, no database: the target's baseline.
- `/bench/bare_query`: the same view after running the statement an API list page runs (its key
  check and first page, one round trip, prepared: api.sql), its rows discarded. What a list
  request costs beyond it is the API's own work in Python; what it costs beyond the bare view
  is the price of reading PostgreSQL at all (issue 7).
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from accounts.keys import key_hash
from accounts.selectors import _key_check_with
from api.pagination import PageRequest
from api.sql import fetch_all
from config.urls import handler400, handler403, handler404, handler500, urlpatterns
from webhooks.api.serializers import WebhookEndpointOutput
from webhooks.selectors import endpoint_page_read

BARE_BODY = b'{"object":"bench","ok":true}'


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BARE_BODY, content_type="application/json")


# The statement GET /v1/webhook_endpoints?limit=20 runs: the key check with the first page.
_FIRST_PAGE = endpoint_page_read(
    PageRequest(limit=20, starting_after=None, ending_before=None),
    WebhookEndpointOutput.model_fields,
)
assert _FIRST_PAGE is not None
_LIST_SQL, _LIST_PARAMS = _key_check_with(_FIRST_PAGE[0]), _FIRST_PAGE[1]


def bare_query(request: HttpRequest) -> HttpResponse:
    raw_key = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    rows = fetch_all(_LIST_SQL, [key_hash(raw_key), *_LIST_PARAMS, *_LIST_PARAMS])
    if len(rows) != 22:  # the key's row, 21 endpoints
        return HttpResponse(status=500)
    return HttpResponse(BARE_BODY, content_type="application/json")


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    path("bench/bare_query", bare_query, name="bench-bare-query"),
    *urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
