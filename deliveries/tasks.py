"""Celery tasks: each takes ids, loads what it needs, and calls a service.

Every task is safe to run twice or late: fan-out is once per event, sends claim their rows,
and the sweep only queues what PostgreSQL says is due.

A fan-out or send task that still meets a transient database error after retrying its step
in place (deliveries.transient) is retried by Celery a few times, with backoff, rather than
failed: a failed task is acknowledged and gone, and its work would wait for the sweep
(WEBHOOKS_REENQUEUE_AFTER, a minute by default). The sweep itself runs every second.
"""

from functools import partial

from celery import shared_task
from django.conf import settings

from core import tracing
from core.logging import log_context
from deliveries import dispatch, queue, recovery, retention, services, transient

# Celery's own retry: the task is sent again, due 1, 2, 4, ... s later (up to 30 s, with full
# jitter), before this one is acknowledged; after the last retry the sweep still has the work.
_ON_DATABASE_ERRORS = {
    "autoretry_for": transient.ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name=queue.FAN_OUT_TASK, ignore_result=True, **_ON_DATABASE_ERRORS)
def fan_out_task(event_id: int) -> None:
    """Turns one event into its deliveries, sends the first batch itself and queues the rest.

    Sending the first batch here saves a trip through the broker for the common event that
    goes to a few endpoints (and that batch is made claimed, saving the claiming UPDATE); the
    rest are queued first, so other workers start on them at once.
    """
    tracing.annotate("webhook.event_pk", event_id)
    with log_context(event_pk=event_id):
        first = services.FirstClaim.starting_now(settings.WEBHOOKS_DELIVERY_BATCH_SIZE)
        delivery_ids = transient.retrying(
            partial(services.event_fan_out, event_id=event_id, first_claim=first),
            "fanning out an event",
        )
        # What the fan-out made claimed goes out from here, the rest through the broker.
        rest = [pk for pk in delivery_ids if pk not in first.claimed]
        queue.deliveries_queue(rest, dict.fromkeys(rest, event_id))
        if first.claimed:
            dispatch.deliveries_send(
                delivery_ids=list(first.claimed),
                held_with=first.token,
                event_ids=sorted(set(first.claimed.values())),
            )


@shared_task(name=queue.DELIVER_TASK, ignore_result=True, **_ON_DATABASE_ERRORS)
def deliver_task(delivery_ids: list[int], event_ids: list[int] | None = None) -> None:
    """Attempts a batch of deliveries (those still due and unclaimed); `event_ids`, if the
    queuer knew them, are their events."""
    with log_context(delivery_pks=delivery_ids):
        dispatch.deliveries_send(delivery_ids=delivery_ids, event_ids=event_ids)


@shared_task(name="deliveries.prune", ignore_result=True, expires=3000)
def prune_task() -> None:
    """Deletes events (with their deliveries and attempts) and finished recoveries past
    retention; idempotency records are api.tasks.prune_idempotency_records_task's."""
    retention.retention_prune()


@shared_task(name=queue.RECOVER_TASK, ignore_result=True)
def recover_task(recovery_id: int) -> None:
    """Works the next batch of a recovery (deliveries.recovery). Every worker process queues one
    per running recovery as often as it sweeps, so a lost task only delays a batch."""
    with log_context(recovery_pk=recovery_id):
        transient.retrying(
            partial(recovery.recovery_step, recovery_id=recovery_id), "recovering deliveries"
        )
