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


def test_a_received_task_is_not_copied_to_redis_and_goes_back_unless_acknowledged(broker):
    """No acknowledgement emulation (config.broker): receiving a message writes nothing to
    Redis (kombu would copy it into its "unacked" hash, and delete it on ack), and a consumer
    that closes without acknowledging hands the message back, as a warm shutdown does."""
    name = "kinetic-test-no-ack-emulation"
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(name)
        queue.clear()
        client = connection.default_channel._create_client()
        unacked_key = connection.default_channel.unacked_key
        before = client.hlen(unacked_key)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        assert client.hlen(unacked_key) == before
        queue.close()  # not acknowledged
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(name)
        try:
            again = queue.get(timeout=5)
            assert again.payload == {"n": 1}
            again.ack()
        finally:
            queue.clear()
            queue.close()
