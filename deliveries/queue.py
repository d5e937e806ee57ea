"""Queueing the delivery tasks, by their names: only ids travel through the broker.

The tasks (deliveries.tasks) call the services and the engine; the services queue tasks. Sending
by name (Celery's `send_task`, which applies the same routes) keeps the arrow one way: this
module needs the task's name, not its code.
"""

from collections.abc import Mapping
from datetime import datetime

from celery import current_app
from django.conf import settings

from deliveries import sql

FAN_OUT_TASK = "deliveries.fan_out"
DELIVER_TASK = "deliveries.deliver"
RECOVER_TASK = "deliveries.recover"
RECOVER_TASK_EXPIRES = 30  # seconds


def fan_out_queue(event_ids: list[int]) -> None:
    """A fan-out task per event."""
    for event_id in event_ids:
        current_app.send_task(FAN_OUT_TASK, args=[event_id])


def deliveries_queue(
    delivery_ids: list[int],
    event_of: Mapping[int, int] | None = None,
    *,
    eta: datetime | None = None,
) -> None:
    """Send tasks for these deliveries, in batches; with `event_of` (delivery: its event), each
    task carries its batch's events too, for its claim to look in their partitions only. With
    `eta`, a worker holds the tasks until then (Celery's own timer), and runs them as it comes."""
    size = settings.WEBHOOKS_DELIVERY_BATCH_SIZE
    for batch, events in sql.batches(delivery_ids, size, event_of):
        kwargs = {"event_ids": events} if event_of else {}
        current_app.send_task(DELIVER_TASK, args=[batch], kwargs=kwargs, eta=eta)


def recoveries_queue(recovery_ids: list[int]) -> None:
    """A task per recovery, to work its next batch (deliveries.recovery). One not started
    within RECOVER_TASK_EXPIRES is dropped: the workers have queued a fresher one by then."""
    for recovery_id in recovery_ids:
        current_app.send_task(RECOVER_TASK, args=[recovery_id], expires=RECOVER_TASK_EXPIRES)
