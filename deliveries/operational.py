"""Operational events: what the service publishes itself, about an environment's endpoints and
deliveries, into that environment (the contract's "Operational events").

Each is published in the transaction of the change it tells (the recording's), so a rollback
publishes nothing, and delivered like any event to the endpoints that subscribe to it. None is
published about a delivery of an operational event: an endpoint that fails those too would
otherwise be told about its failures forever.
"""

from datetime import datetime

from deliveries.models import Delivery
from deliveries.sending import Sent
from deliveries.services import event_publish
from webhooks.catalog import DELIVERY_EXHAUSTED, ENDPOINT_DISABLED, is_operational
from webhooks.models import WebhookEndpoint
from webhooks.representation import endpoint_object


def about_ordinary_events(results: list[Sent]) -> list[Sent]:
    """The results that may lead to an operational event: those of other events' deliveries."""
    return [r for r in results if not is_operational(r.delivery.event_type)]


def endpoint_disabled(*, endpoint_id: int, reason: str) -> None:
    """`webhook_endpoint.disabled`, for an endpoint just disabled automatically; `reason` is
    "gone" (410) or "failing"."""
    endpoint = WebhookEndpoint.objects.select_related("environment").get(pk=endpoint_id)
    event_publish(
        environment=endpoint.environment,
        type=ENDPOINT_DISABLED,
        data={"webhook_endpoint": endpoint_object(endpoint), "reason": reason},
        operational=True,
    )


def deliveries_exhausted(results: list[Sent], now: datetime) -> None:
    """`delivery.exhausted`, for each of these failed attempts that was its delivery's last, as
    recorded at `now` (a delivery cancelled meanwhile, or recorded by another claim, is not)."""
    attempted = {r.delivery.pk: r.delivery for r in about_ordinary_events(results)}
    if not attempted:
        return
    failed = (
        Delivery.objects.filter(id__in=attempted, status=Delivery.Status.FAILED, completed_at=now)
        .select_related("endpoint__environment")
        .order_by("id")
    )
    for delivery in failed:
        claimed = attempted[delivery.pk]
        event_publish(
            environment=delivery.endpoint.environment,
            type=DELIVERY_EXHAUSTED,
            data={
                "delivery_id": delivery.public_id,
                "event_id": claimed.event_public_id,
                "event_type": claimed.event_type,
                "webhook_endpoint_id": delivery.endpoint.public_id,
                "attempts": delivery.attempt_count,
                "last_status_code": delivery.last_status_code,
                "last_error": delivery.last_error,
            },
            operational=True,
        )
