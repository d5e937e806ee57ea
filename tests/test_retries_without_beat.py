"""The contract's "Availability": retries do not depend on one process. With no beat running
at all, a failed delivery is retried on its schedule, and a delivery whose task the broker lost
is sent: every worker process sweeps (one at a time)."""

import threading
import time
from collections import Counter

import pytest

from tests import factories
from tests.servers import CeleryWorkerWithoutBeat, Received, Reply, database_url, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # receivers live on 127.0.0.1


@pytest.fixture
def worker_without_beat(django_db_setup, django_db_blocker, broker):
    with django_db_blocker.unblock():
        url = database_url()
    workers = [CeleryWorkerWithoutBeat(url, broker.url) for _ in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


def test_a_failed_delivery_is_retried_with_no_beat_running(worker_without_beat, receiver):
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/flaky")
    receiver.script("/flaky", Reply(500))  # the first attempt fails, the retry (in ~1 s) not
    published = client.post("/v1/events", {"type": "packet.created"})
    assert published.status_code == 201, published.content
    first = wait_for(lambda: receiver.received("/flaky"), timeout=30)[0]
    # The worker's schedule (WEBHOOKS_RETRY_SCHEDULE=1,…) puts the retry ~1 s later; the
    # sweep (every 0.3 s here) queues it.
    got = wait_for(lambda: len(receiver.received("/flaky")) >= 2 and receiver.received("/flaky"))
    assert got[1].headers["MD-Event-Id"] == first.headers["MD-Event-Id"]
    assert got[1].at - first.at < 10


def first_attempts_fail():
    """Fails each event's first request and answers its others: by event, not by turn, so
    that an early retry cannot take a failure meant for a later event's first attempt."""
    seen: set[str] = set()
    lock = threading.Lock()

    def respond(request: Received) -> Reply:
        with lock:
            first = request.headers["MD-Event-Id"] not in seen
            seen.add(request.headers["MD-Event-Id"])
        return Reply(500) if first else Reply()

    return respond


def test_two_workers_sweep_one_at_a_time_and_send_each_retry_once(worker_without_beat, receiver):
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/once")
    receiver.respond("/once", first_attempts_fail())
    events = [client.post("/v1/events", {"type": "packet.created"}).json()["event_id"]
              for _ in range(10)]  # fmt: skip
    wait_for(lambda: len(receiver.received("/once")) >= 20, timeout=60)
    time.sleep(2)  # anything sent twice would have arrived by now
    by_event = Counter(r.headers["MD-Event-Id"] for r in receiver.received("/once"))
    assert by_event == dict.fromkeys(events, 2)
