"""PostgreSQL and Redis restarted while events are published and delivered: nothing is lost,
nothing is sent for a publish that failed, and everything completes once they are back.

Private servers only (a PostgreSQL cluster and a Redis of the test's own), the production web
server (gunicorn) and a real worker; the machine's shared servers are never touched.
"""

import os
import signal
import threading
import time
from typing import Any

import pytest
import requests
from django.db import connections

from deliveries.models import Event
from tests import factories, summary
from tests.servers import (
    FAST_DELIVERY_SETTINGS,
    Gunicorn,
    PrivatePostgres,
    PrivateRedis,
    SupervisedWorker,
    provision,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.mark.django_db(transaction=True)
def test_a_publish_succeeds_while_the_broker_is_down(broker, private_worker, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/outage")
    broker.stop()
    try:
        started = time.monotonic()
        response = client.post("/v1/events", {"type": "packet.created"})
        took = time.monotonic() - started
    finally:
        broker.start()
    assert response.status_code == 201, response.content
    assert took < 10  # the publish gave up on the broker quickly instead of hanging
    event_id = response.json()["event_id"]
    assert Event.objects.get(public_id=event_id).fanned_out_at is None  # its task never left
    private_worker()
    got = wait_for(lambda: receiver.received("/outage"), timeout=40)
    assert [r.headers["MD-Event-Id"] for r in got] == [event_id]


@pytest.mark.django_db(transaction=True)
def test_a_publish_answers_in_time_while_the_broker_hangs(broker):
    """Redis hangs (its process stopped: the kernel still takes the connection, nothing
    answers) under this process's kept broker connection: the publish gives up on the broker
    as quickly as when it is down, and the event is stored for the sweep to queue."""
    client = factories.api_client(factories.environment())
    assert client.post("/v1/events", {"type": "packet.created"}).status_code == 201  # connected
    answers: list[Any] = []

    def publish() -> None:
        try:
            answers.append(client.post("/v1/events", {"type": "packet.created"}))
        finally:
            connections.close_all()  # this thread's, before the test database goes

    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    publishing = threading.Thread(target=publish)
    try:
        publishing.start()
        publishing.join(10)
        answered_in_time = bool(answers)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
        publishing.join(30)
    assert answered_in_time, "no answer in 10 s"
    assert answers[0].status_code == 201, answers[0].content
    event = Event.objects.get(public_id=answers[0].json()["event_id"])
    assert event.fanned_out_at is None  # its task never left


class Publisher(threading.Thread):
    """Publishes events at a steady pace, retrying each (same Idempotency-Key) until the API
    confirms it, as a careful client would through an outage."""

    def __init__(self, url: str, key: str, count: int) -> None:
        super().__init__()
        self.url, self.key, self.count = url, key, count
        self.created: list[str] = []
        self.failures = 0

    def run(self) -> None:
        session = requests.Session()
        for i in range(self.count):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    response = session.post(
                        f"{self.url}/v1/events",
                        json={"type": "judgment.created", "data": {"i": i}},
                        headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": f"e{i}"},
                        timeout=30,
                    )
                except requests.RequestException:
                    response = None
                if response is not None and response.status_code == 201:
                    self.created.append(response.json()["event_id"])
                    break
                self.failures += 1
                time.sleep(0.2)
            time.sleep(0.05)


def test_restarting_postgres_and_redis_loses_nothing(receiver, pytestconfig):
    postgres, redis = PrivatePostgres(), PrivateRedis()
    server = worker = None
    try:
        database_url = postgres.create_database("kinetic")
        key = provision(database_url, redis.url, "webhook_endpoints:write,events:write")
        server = Gunicorn(database_url, redis.url, WORKERS="2", **FAST_DELIVERY_SETTINGS)
        worker = SupervisedWorker(database_url, redis.url)
        # /a and /b unordered, /c ordered: the order survives both restarts as well.
        for path, order in (("/a", "unordered"), ("/b", "unordered"), ("/c", "ordered")):
            response = requests.post(
                f"{server.url}/v1/webhook_endpoints",
                json={"url": f"{receiver.url}{path}", "delivery_order": order},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 201, response.text

        publisher = Publisher(server.url, key, count=60)
        publisher.start()
        wait_for(lambda: len(publisher.created) >= 15, timeout=60)
        postgres.stop()  # mid-stream: publishes fail, deliveries cannot be recorded
        time.sleep(1.5)
        postgres.start()
        wait_for(lambda: len(publisher.created) >= 35, timeout=90)
        redis.stop()  # and the broker forgets every queued task
        time.sleep(1.5)
        redis.start()
        publisher.join(180)
        assert not publisher.is_alive()
        created = set(publisher.created)
        assert len(created) == 60

        def delivered(path: str) -> set[str]:
            return {r.headers["MD-Event-Id"] for r in receiver.received(path)}

        paths = ("/a", "/b", "/c")
        try:
            wait_for(lambda: all(created <= delivered(path) for path in paths), timeout=120)
        except AssertionError:
            missing = set().union(*(created - delivered(path) for path in paths))
            raise AssertionError(
                f"{len(missing)} events not delivered: {sorted(missing)[:5]}\n"
                f"worker log tail:\n{worker.output()[-6000:]}"
            ) from None
        # Nothing was delivered for a publish the API did not confirm.
        assert all(delivered(path) <= created for path in paths)
        # The ordered endpoint first received each event in the order it was published.
        firsts = list(dict.fromkeys(r.headers["MD-Event-Id"] for r in receiver.received("/c")))
        assert firsts == publisher.created
        summary.add(
            pytestconfig,
            [
                f"faults: 2 restarts; events confirmed {len(created)}, publish attempts that "
                f"failed and were retried {publisher.failures}, requests received "
                f"{len(receiver.received())} for {3 * len(created)} deliveries, worker restarts by "
                f"the supervisor {worker.restarts}, events lost 0"
            ],
        )
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.stop()
        redis.destroy()
        postgres.destroy()
