"""The delivery engine's metrics: attempts, cancellations, latency, and the queue read at scrape
time. Served with the HTTP metrics at /metrics (api.metrics)."""

import logging
from collections.abc import Iterator
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from deliveries.models import Delivery

logger = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = Counter(
    "kinetic_delivery_attempts_total",
    "Delivery attempts, by outcome: succeeded, failed (to be retried, unless the delivery was "
    "cancelled meanwhile), exhausted (given up).",
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
        now = timezone.now()
        due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        try:
            # Capped: a scrape must stay cheap even with millions due.
            depth = due.order_by()[:100_000].count()
            oldest = (
                due.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
            )
        except DatabaseError as error:
            # The process's own counters are what an operator needs while PostgreSQL is away;
            # the two gauges are left out of this scrape rather than fail it whole.
            logger.warning("metrics: the delivery queue could not be read: %s", error)
            return
        age = (now - oldest) if oldest else timedelta(0)
        yield GaugeMetricFamily(
            "kinetic_deliveries_due", "Pending deliveries whose attempt is due now.", value=depth
        )
        yield GaugeMetricFamily(
            "kinetic_oldest_due_delivery_age_seconds",
            "How long the longest-waiting due delivery has been due.",
            value=age.total_seconds(),
        )
