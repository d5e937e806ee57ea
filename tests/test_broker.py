"""The broker transport: kombu's Redis transport sharing one client per connection pool."""

from config import broker as broker_transport
from config.celery_app import app


def test_redis_urls_use_the_shared_client_transport_and_carry_messages(broker):
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker_transport.Channel)
        queue = connection.SimpleQueue("kinetic-test-broker")
        try:
            for n in range(3):
                queue.put({"n": n})
            received = []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == [0, 1, 2]
            # One client for the pool, whatever the number of calls; a new pool, a new client.
            client = channel._create_client()
            assert channel._create_client() is client
            channel._disconnect_pools()
            assert channel._create_client() is not client
            queue.put({"n": 3})
            assert queue.get(timeout=5).payload == {"n": 3}
        finally:
            queue.clear()
            queue.close()
