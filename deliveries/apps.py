from typing import Any

from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    name = "deliveries"
    verbose_name = "Deliveries"

    def ready(self) -> None:
        from deliveries.services import endpoint_deliveries_cancel
        from webhooks.signals import endpoints_stopped

        def cancel_queued(sender: Any, *, endpoint_ids: list[int], reason: str, **_: Any) -> None:
            endpoint_deliveries_cancel(endpoint_ids=endpoint_ids, reason=reason)

        # Nothing queued is sent to an endpoint that stopped receiving (webhooks.signals).
        endpoints_stopped.connect(cancel_queued, weak=False, dispatch_uid="deliveries-cancel")
