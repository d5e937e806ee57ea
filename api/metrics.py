"""Prometheus metrics: every metric the service exposes is defined here, and served at /metrics.

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
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")

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
DELIVERY_ATTEMPTS = Counter(
    "kinetic_delivery_attempts_total",
    "Delivery attempts, by outcome: succeeded, failed (will retry), exhausted (given up).",
    ["outcome"],
)
DELIVERIES_CANCELLED = Counter(
    "kinetic_deliveries_cancelled_total",
    "Deliveries cancelled because their endpoint was disabled or deleted.",
)
ATTEMPT_DURATION = Histogram(
    "kinetic_delivery_attempt_duration_seconds",
    "Duration of one HTTP delivery attempt.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
DELIVERY_LATENCY = Histogram(
    "kinetic_delivery_latency_seconds",
    "From an event's publication to its successful delivery to one endpoint.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400, 259200),
)
ATTEMPTS_PER_DELIVERY = Histogram(
    "kinetic_delivery_attempts_per_delivery",
    "Attempts a delivery took, observed when it succeeds or is given up.",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15),
)
ENDPOINTS_AUTO_DISABLED = Counter(
    "kinetic_endpoints_auto_disabled_total",
    "Endpoints disabled by the service, by reason: gone (410) or failing.",
    ["reason"],
)


class DeliveryQueueCollector(Collector):
    """Deliveries due now and the age of the oldest, read from PostgreSQL at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from deliveries.models import Delivery  # the app registry is ready by scrape time

        now = timezone.now()
        due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        # Capped: a scrape must stay cheap even with millions due.
        depth = due.order_by()[:100_000].count()
        oldest = due.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
        age = (now - oldest) if oldest else timedelta(0)
        yield GaugeMetricFamily(
            "kinetic_deliveries_due", "Pending deliveries whose attempt is due now.", value=depth
        )
        yield GaugeMetricFamily(
            "kinetic_oldest_due_delivery_age_seconds",
            "How long the longest-waiting due delivery has been due.",
            value=age.total_seconds(),
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
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need the METRICS_TOKEN bearer token\n", status=401)
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


@cache  # one entry per URL pattern: the set is fixed
def route_label(route: str) -> str:
    """`v1/^webhook_endpoints/(?P<webhook_endpoint_id>[^/]+)$` -> `/v1/webhook_endpoints/<…>`."""
    route = _NAMED_GROUP.sub(lambda m: f"<{m.group(1)}>", route)
    return "/" + route.replace("^", "").replace("$", "")


class MetricsMiddleware:
    """Counts every response by its route pattern (`/v1/webhook_endpoints/<id>`), never by
    its path, so ids do not become label values."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = route_label(match.route) if match is not None and match.route else "unmatched"
        HTTP_REQUESTS.labels(route, request.method or "", str(response.status_code)).inc()
        HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)
        return response
