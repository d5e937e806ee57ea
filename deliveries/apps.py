from typing import Any

from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    name = "deliveries"
    verbose_name = "Deliveries"

    def ready(self) -> None:
        from django.db import transaction

        from deliveries import ordering, queue, rates, recovery
        from deliveries.services import endpoint_deliveries_cancel
        from webhooks.signals import delivery_order_changed, endpoints_stopped, rate_limit_changed

        def cancel_queued(sender: Any, *, endpoint_ids: list[int], reason: str, **_: Any) -> None:
            endpoint_deliveries_cancel(endpoint_ids=endpoint_ids, reason=reason)
            recovery.recoveries_stop(endpoint_ids=endpoint_ids)
            rates.lines_let_go(endpoint_ids=endpoint_ids)  # cancelled: new events wait for none

        # Nothing queued is sent to an endpoint that stopped receiving (webhooks.signals), nor
        # is what a recovery of it had left to requeue.
        endpoints_stopped.connect(cancel_queued, weak=False, dispatch_uid="deliveries-cancel")

        def reorder(sender: Any, *, endpoint_id: int, ordered: bool, **_: Any) -> None:
            released = ordering.ordering_changed(endpoint_id=endpoint_id, ordered=ordered)
            transaction.on_commit(lambda: queue.deliveries_queue(released), robust=True)

        # Ordering on parks what was not attempted yet; off lets every parked delivery go.
        delivery_order_changed.connect(reorder, weak=False, dispatch_uid="deliveries-reorder")

        def rate_anew(sender: Any, *, endpoint_id: int, **_: Any) -> None:
            due = rates.lines_let_go(endpoint_ids=[endpoint_id])
            transaction.on_commit(lambda: queue.deliveries_queue(list(due), due), robust=True)

        # A new limit, or none: what waits behind the old one's line goes now, at the new pace.
        rate_limit_changed.connect(rate_anew, weak=False, dispatch_uid="deliveries-rate")
