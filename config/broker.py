"""kombu's Redis transport, with one Redis client per connection pool instead of one per call,
and without acknowledgement emulation.

kombu's Redis channel builds a new `redis.Redis` client for every publish, every delivery it
hands to the worker and every ack; with redis-py 8 each costs ~120 us of CPU (its response
callbacks are rebuilt each time), a quarter of the CPU of `task.delay()`. Clients are
thread-safe and take a connection from the pool per command, so one per pool does the same
work; a new pool (kombu makes one after a connection error) gets a new client.

Acknowledgement emulation (kombu's default) copies every task into an "unacked" hash when a
worker receives it and deletes it on ack: two MULTI/EXEC round trips per task, ~0.4 ms of a
worker's 1.2-1.7 ms of CPU for a task that does nearly nothing (issue 7). What it buys is
that the tasks of a worker that died are queued again once `visibility_timeout` (an hour)
has passed. Deliveries do not need that: PostgreSQL is the record, and the sweep queues
again, within WEBHOOKS_REENQUEUE_AFTER (a minute), every event not fanned out and every due
delivery whose task never ran. A worker's warm shutdown still hands its prefetched tasks
back to Redis.

`redis://` and `rediss://` broker URLs resolve to this transport once `install()` has run
(config/celery_app.py calls it).
"""

from typing import Any

from kombu import transport
from kombu.transport import redis


class Channel(redis.Channel):
    ack_emulation = False
    _shared_client: "tuple[Any, Any] | None" = None  # (pool, client)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared[0] is not pool:
            shared = self._shared_client = (pool, super()._create_client())
        return shared[1]


class Transport(redis.Transport):
    Channel = Channel


def install() -> None:
    for scheme in ("redis", "rediss"):
        transport.TRANSPORT_ALIASES[scheme] = "config.broker:Transport"
