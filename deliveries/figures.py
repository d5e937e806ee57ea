"""An endpoint's recent figures for people to read (the customer portal): deliveries and success
rate over the last day, and its last delivery.

Bounded whatever the endpoint's volume: each reads at most RECENT_CAP + 1 of the endpoint's
newest deliveries along delivery_endpoint_idx (endpoint, -created_at, -id), so an endpoint with
millions of deliveries costs what one with RECENT_CAP does; past the cap the count says so.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from deliveries.models import Delivery

RECENT_WINDOW = timedelta(hours=24)
RECENT_CAP = 10_000


@dataclass(frozen=True)
class RecentFigures:
    deliveries: int  # in the window, at most RECENT_CAP (then `capped`)
    capped: bool
    succeeded: int
    failed: int
    last_status: str | None  # the newest delivery's, whenever it was
    last_status_code: int | None
    last_at: datetime | None

    @property
    def success_rate(self) -> float | None:
        """Succeeded out of those that ended (succeeded or failed for good); None if none."""
        ended = self.succeeded + self.failed
        return self.succeeded / ended if ended else None


def endpoint_recent_figures(*, endpoint_id: int, now: datetime) -> RecentFigures:
    """The figures of one endpoint (the caller has scoped it to its tenant): two index range
    reads, the first capped at RECENT_CAP + 1 rows."""
    newest = Delivery.objects.filter(endpoint_id=endpoint_id).order_by("-created_at", "-id")
    counts = newest.filter(created_at__gte=now - RECENT_WINDOW)[: RECENT_CAP + 1].aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=Delivery.Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=Delivery.Status.FAILED)),
    )
    last = newest.values("status", "last_status_code", "created_at").first()
    return RecentFigures(
        deliveries=min(counts["total"], RECENT_CAP),
        capped=counts["total"] > RECENT_CAP,
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        last_status=last["status"] if last else None,
        last_status_code=last["last_status_code"] if last else None,
        last_at=last["created_at"] if last else None,
    )
