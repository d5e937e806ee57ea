"""What the endpoints' writes tell the rooms above them.

`webhooks` sits below `deliveries` (a delivery belongs to an endpoint), so its services cannot
call the delivery engine. The one rule that crosses, "an endpoint that stops receiving has its
queued deliveries cancelled", is sent from here, inside the writing transaction, and carried
out by `deliveries` (see deliveries.apps): the service that stops an endpoint is the one place
that sends it, and every caller (API, console, commands, the engine's auto-disable) gets it.
"""

from django.dispatch import Signal

# Sent with `endpoint_ids` (list[int]) and `reason` ("endpoint disabled", "endpoint deleted")
# inside the transaction that disabled or deleted them: receivers write in it too.
endpoints_stopped = Signal()

# Sent with `endpoint_id` (int) and `ordered` (bool) inside the transaction that changed the
# endpoint's delivery_order: ordering on parks its deliveries not yet attempted, ordering off
# releases the ones waiting (deliveries.ordering).
delivery_order_changed = Signal()

# Sent with `endpoint_id` (int) inside the transaction that changed the endpoint's rate_limit
# (to another limit or none): the line the old limit made is let go (deliveries.rates).
rate_limit_changed = Signal()
