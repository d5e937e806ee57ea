"""The broker: kombu's Redis transport, configured by CELERY_BROKER_TRANSPORT_OPTIONS."""

import redis

from config.celery_app import app


def test_redis_urls_carry_messages_in_order(broker):
    with app.connection_for_write() as connection:
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
        finally:
            queue.clear()
            queue.close()


def test_a_received_task_is_held_by_its_consumer_alone_and_goes_back_unless_acknowledged(broker):
    """No acknowledgement emulation: a received message is in no Redis key (kombu would copy
    it into its "unacked" hash, and delete it on ack), and a consumer that closes without
    acknowledging hands it back to its queue, as a worker's warm shutdown does."""
    name = "kinetic-test-no-ack-emulation"
    server = redis.Redis.from_url(broker.url)
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(name)
        queue.clear()
        unacked_key = connection.default_channel.unacked_key
        unacked_before = server.hlen(unacked_key)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        assert server.llen(name) == 0
        assert server.hlen(unacked_key) == unacked_before
        queue.close()  # not acknowledged
    assert server.llen(name) == 1
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(name)
        try:
            again = queue.get(timeout=5)
            assert again.payload == {"n": 1}
            again.ack()
        finally:
            queue.clear()
            queue.close()
    assert server.llen(name) == 0
