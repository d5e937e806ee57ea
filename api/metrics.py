"""Prometheus metrics at /metrics: the HTTP ones defined here, the delivery engine's in
deliveries.metrics.

Web and worker processes on one host share a scrape through prometheus-client's multiprocess
mode: set PROMETHEUS_MULTIPROC_DIR to a folder they all can write (the compose file does),
emptied when the service starts. Without it each process counts for itself and /metrics shows
the web process's own figures. Queue depth and the oldest due delivery are read from
PostgreSQL at scrape time, so they are right whichever process is scraped.
"""

import hmac
import os
import re
import time
from collections.abc import Callable, Iterator
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from deliveries.metrics import DeliveryQueueCollector

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
# A client may send any token as its method: counted by name, each would be a new series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "kinetic_http_requests_total",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "kinetic_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shared = CollectorRegistry()
        MultiProcessCollector(shared)
    else:
        from prometheus_client import REGISTRY as shared
    shared_with_queue = CollectorRegistry()
    shared_with_queue.register(_Chain(shared))
    shared_with_queue.register(DeliveryQueueCollector())
    return shared_with_queue


class _Chain(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # The scheme as HTTP reads it, case-insensitive; a bare token is not a bearer one.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the METRICS_TOKEN bearer token\n", status=401)
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


@cache  # one entry per URL pattern: the set is fixed
def route_label(route: str) -> str:
    """`v1/^webhook_endpoints/(?P<webhook_endpoint_id>[^/]+)$` -> `/v1/webhook_endpoints/<…>`."""
    route = _NAMED_GROUP.sub(lambda m: f"<{m.group(1)}>", route)
    return "/" + route.replace("^", "").replace("$", "")


class MetricsMiddleware:
    """Counts every response by its route pattern (`/v1/webhook_endpoints/<id>`), never by
    its path, so ids do not become label values; by its method, any but HTTP's usual ones
    counted as `other`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = route_label(match.route) if match is not None and match.route else "unmatched"
        method = request.method if request.method in _METHODS else None
        HTTP_REQUESTS.labels(route, method or "other", str(response.status_code)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)
        return response
