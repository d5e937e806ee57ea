"""Endpoint health, as the attempts tell it: failure streaks, 410 Gone, and the automatic
disable of endpoints failing for too long, told as `webhook_endpoint.disabled`. The writes are
webhooks' services; the policy is here, where the attempts are seen."""

import logging
from collections import Counter
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction

from deliveries import metrics, operational
from deliveries.sending import Sent
from webhooks import services as endpoints
from webhooks.models import WebhookEndpoint

logger = logging.getLogger(__name__)

GONE_REASON = "The endpoint answered 410 Gone."


def gone(results: list[Sent]) -> set[int]:
    """The endpoints that answered 410 Gone: no retry, and they are disabled."""
    return {r.delivery.endpoint_id for r in results if r.outcome.status_code == 410}


def endpoint_health_update(
    successes: list[Sent], failures: list[Sent], gone_ids: set[int], now: datetime
) -> None:
    """Failure streaks, 410 Gone, and the auto-disable of endpoints failing for too long, in
    the caller's (the recording's) transaction."""
    healthy = {r.delivery.endpoint_id for r in successes}
    # Only endpoints that were failing when loaded need their streak reset: a healthy batch
    # costs no query here.
    endpoints.endpoints_recovered(
        endpoint_ids={r.delivery.endpoint_id for r in successes if r.delivery.endpoint_failing}
    )
    failing = Counter(
        r.delivery.endpoint_id for r in failures if r.delivery.endpoint_id not in healthy
    )
    endpoints.endpoints_failed(failures=dict(failing), now=now)
    to_disable: dict[int, str] = dict.fromkeys(gone_ids, GONE_REASON)
    cutoff = now - timedelta(seconds=settings.WEBHOOKS_AUTO_DISABLE_AFTER)
    # Asked only when something failed: building this query, even one the ORM then finds
    # empty, costs a healthy worker's batches more than their own recording.
    long_failing = (
        WebhookEndpoint.objects.filter(
            id__in=list(failing), failing_since__lte=cutoff, status=WebhookEndpoint.Status.ENABLED
        ).values_list("id", flat=True)
        if failing
        else []
    )
    for pk in long_failing:
        to_disable.setdefault(
            pk,
            "Every delivery attempt failed for "
            f"{settings.WEBHOOKS_AUTO_DISABLE_AFTER // 3600} hours or more.",
        )
    # Only a failure of another event's delivery leads to webhook_endpoint.disabled: one of an
    # operational event's does not tell anew (deliveries.operational).
    told = {r.delivery.endpoint_id for r in operational.about_ordinary_events(failures)}
    for pk, reason in sorted(to_disable.items()):
        if endpoints.endpoint_disable_automatically(endpoint_id=pk, reason=reason, now=now):
            why = "gone" if pk in gone_ids else "failing"
            if pk in told:
                operational.endpoint_disabled(endpoint_id=pk, reason=why)
            # Told once it is so: not for a transaction that rolls back (its retry tells).
            transaction.on_commit(partial(_disabled, pk, reason, why))


def _disabled(pk: int, reason: str, why: str) -> None:
    logger.warning("endpoint %s disabled automatically: %s", pk, reason)
    metrics.ENDPOINTS_AUTO_DISABLED.labels(why).inc()
