"""Endpoints' recent figures for people to read (the customer portal): deliveries and success
rate over the last day, and the last delivery.

Bounded whatever an endpoint's volume: each reads at most RECENT_CAP + 1 of the endpoint's
newest deliveries along delivery_endpoint_idx (endpoint, -created_at, -id), so an endpoint with
millions of deliveries costs what one with RECENT_CAP does; past the cap the count says so.
A page of endpoints reads all their figures in one statement on PostgreSQL: its cost in round
trips does not grow with its rows.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Q

from core.sql import fetch_all
from deliveries import sql
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


def endpoints_recent_figures(*, endpoint_ids: list[int], now: datetime) -> dict[int, RecentFigures]:
    """The figures of each endpoint (the caller has scoped them to its tenant), by id: on
    PostgreSQL one statement for them all, so that a list page takes as many queries with
    twenty endpoints as with two."""
    if not endpoint_ids:
        return {}
    if connection.vendor == "postgresql":
        return _read_in_one_statement(endpoint_ids, now)
    return {endpoint_id: _read_alone(endpoint_id, now) for endpoint_id in endpoint_ids}


def endpoint_recent_figures(*, endpoint_id: int, now: datetime) -> RecentFigures:
    """The figures of one endpoint (the caller has scoped it to its tenant)."""
    return endpoints_recent_figures(endpoint_ids=[endpoint_id], now=now)[endpoint_id]


# Each endpoint's two reads of _read_alone, side by side (parameters: the endpoint ids, the
# succeeded and failed statuses, the window's start, RECENT_CAP + 1). Each LATERAL is one
# ordered range read along delivery_endpoint_idx, in every partition, that stops at its LIMIT:
# the window's newest rows up to the cap, and the newest row whenever it was. The cap is a
# subquery, whose value the planner does not know (as claiming's `now`): it then plans to read a
# part of each endpoint's rows, as an ordered index read does. Told the cap, it weighed it
# against an average endpoint's day, expected to read that whole, and read every endpoint's day
# by bitmap and sorted it: the busiest endpoint's whole day too.
_RECENT = """
SELECT e.id, recent.total, recent.succeeded, recent.failed,
    newest.status, newest.last_status_code, newest.created_at
FROM unnest(%s::bigint[]) AS e(id)
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
        count(*) FILTER (WHERE w.status = %s) AS succeeded,
        count(*) FILTER (WHERE w.status = %s) AS failed
    FROM (
        SELECT d.status FROM {delivery} AS d
        WHERE d.endpoint_id = e.id AND d.created_at >= %s
        ORDER BY d.created_at DESC, d.id DESC
        LIMIT (SELECT %s)
    ) AS w
) AS recent
LEFT JOIN LATERAL (
    SELECT d.status, d.last_status_code, d.created_at FROM {delivery} AS d
    WHERE d.endpoint_id = e.id
    ORDER BY d.created_at DESC, d.id DESC
    LIMIT 1
) AS newest ON true
"""


def _read_in_one_statement(endpoint_ids: list[int], now: datetime) -> dict[int, RecentFigures]:
    """PostgreSQL: every endpoint's figures in one statement."""
    rows = fetch_all(
        sql.statement(_RECENT),
        [
            endpoint_ids,
            Delivery.Status.SUCCEEDED.value,
            Delivery.Status.FAILED.value,
            now - RECENT_WINDOW,
            RECENT_CAP + 1,
        ],
    )
    return {
        endpoint_id: _figures(total, succeeded, failed, status, status_code, created_at)
        for endpoint_id, total, succeeded, failed, status, status_code, created_at in rows
    }


def _read_alone(endpoint_id: int, now: datetime) -> RecentFigures:
    """One endpoint's figures in two index range reads, the first capped at RECENT_CAP + 1
    rows: SQLite (bin/dev) has no LATERAL, and reads an endpoint at a time."""
    newest = Delivery.objects.filter(endpoint_id=endpoint_id).order_by("-created_at", "-id")
    counts = newest.filter(created_at__gte=now - RECENT_WINDOW)[: RECENT_CAP + 1].aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=Delivery.Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=Delivery.Status.FAILED)),
    )
    last = newest.values("status", "last_status_code", "created_at").first()
    return _figures(
        counts["total"],
        counts["succeeded"],
        counts["failed"],
        last["status"] if last else None,
        last["last_status_code"] if last else None,
        last["created_at"] if last else None,
    )


def _figures(
    total: int,
    succeeded: int,
    failed: int,
    last_status: str | None,
    last_status_code: int | None,
    last_at: datetime | None,
) -> RecentFigures:
    """The figures from up to RECENT_CAP + 1 rows counted: one more than the cap says there
    are more."""
    return RecentFigures(
        deliveries=min(total, RECENT_CAP),
        capped=total > RECENT_CAP,
        succeeded=succeeded,
        failed=failed,
        last_status=last_status,
        last_status_code=last_status_code,
        last_at=last_at,
    )
