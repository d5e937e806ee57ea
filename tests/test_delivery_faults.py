"""Delivery under faults: a dead endpoint, a killed worker, a flushed broker, a long outage.

Each test runs its own worker (and the suite's broker is a private Redis), so killing or
flushing here disturbs nothing else.
"""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery
from tests import factories
from tests.servers import Reply, wait_for
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True


def publish(client, data=None):
    response = client.post("/v1/events", {"type": "judgment.created", "data": data or {}})
    assert response.status_code == 201, response.content
    return response.json()


def disable(client, endpoint):
    """Disables the endpoint through the API, as its owner would."""
    response = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"status": "disabled"}
    )
    assert response.status_code == 200, response.content


def statuses(event_ids):
    return list(
        Delivery.objects.filter(event__public_id__in=event_ids).values_list("status", flat=True)
    )


def test_one_dead_endpoint_does_not_take_every_sending_thread(private_worker, receiver):
    # The dead endpoint's requests outlast the whole wait below (no answer, a 300 s deadline), so
    # none of its slots frees up however slowly the healthy deliveries go out.
    worker = private_worker(
        WEBHOOKS_DELIVERY_TIMEOUT="300", WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="4"
    )
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/healthy")
    client.create_endpoint(f"{receiver.url}/dead")
    receiver.script("/dead", *[Reply(200, delay=600) for _ in range(100)])
    events = [publish(client, {"i": i}) for i in range(30)]
    wait_for(lambda: len(receiver.received("/healthy")) == 30, timeout=120)
    # The dead endpoint holds every request it gets, yet it never has more than its limit.
    assert 1 <= len(receiver.received("/dead")) <= 4
    ids = {r.headers["MD-Event-Id"] for r in receiver.received("/healthy")}
    assert ids == {e["event_id"] for e in events}
    # A warm shutdown would wait out the dead endpoint's requests (300 s timeout): not tested here.
    worker.kill()


def test_a_burst_beyond_an_endpoints_limit_waits_in_the_worker_for_its_slots(
    private_worker, receiver
):
    """Deliveries past WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT wait in the worker and go out as
    the endpoint's requests end, never more than the limit at once; they are not postponed
    through the database (2 s, then the sweep)."""
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/burst")
    receiver.script("/burst", *[Reply(delay=1.0) for _ in range(4)])
    # Published before the worker starts, so the four fan-outs run at once however slowly this
    # process publishes.
    events = [publish(client, {"i": i}) for i in range(4)]
    ids = [e["event_id"] for e in events]
    # A deadline far past the 1 s replies, so none is a timeout, and a margin of several
    # deadlines, so deliveries may wait in the worker for a slot (admission.waiting_limit).
    private_worker(
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="2",
        WEBHOOKS_DELIVERY_TIMEOUT="10",
        WEBHOOKS_CLAIM_LEASE_MARGIN="50",
    )
    wait_for(lambda: statuses(ids).count("succeeded") == 4, timeout=20)
    arrived = sorted(r.at for r in receiver.received("/burst"))
    assert len(arrived) == 4
    # Two at once; each of the other two when one of those answers, a second later: not before
    # (the limit holds), and not two seconds and a sweep later (postponed).
    slots = [arrived[2] - arrived[0], arrived[3] - arrived[1]]
    assert all(0.9 <= gap < 1.8 for gap in slots), [round(t - arrived[0], 2) for t in arrived]
    assert Delivery.objects.filter(event__public_id__in=ids, attempt_count=1).count() == 4


def test_a_worker_shutting_down_sends_nothing_that_waits_for_a_slot(private_worker, receiver):
    """Told to stop, a worker finishes its requests in flight but starts none of the deliveries
    waiting for their endpoint's slot: it releases them unattempted, and the next worker sends
    them at once, not when the claim would have lapsed (each event still arrives once)."""
    # A deadline far past the slow reply, so it is never a timeout, and a margin past one
    # deadline, so one delivery may wait in the worker for the slot (admission.waiting_limit).
    settings = {
        "WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT": "1",
        "WEBHOOKS_DELIVERY_TIMEOUT": "10",
        "WEBHOOKS_CLAIM_LEASE_MARGIN": "11",
    }
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/one-at-a-time")
    receiver.script("/one-at-a-time", Reply(delay=3))  # in flight while the worker is told to stop
    # Published before the worker starts, so both fan-outs run at once and the second delivery
    # comes to the slot while the first holds it, however slowly this process publishes.
    events = [publish(client, {"i": i}) for i in range(2)]
    ids = [e["event_id"] for e in events]
    worker = private_worker(**settings)
    # Both made: a fan-out not yet taken from the broker would be handed back by the shutdown.
    wait_for(
        lambda: len(statuses(ids)) == 2 and len(receiver.received("/one-at-a-time")) == 1,
        timeout=30,
    )
    worker.stop()  # warm shutdown, while the second delivery waits for the slot
    assert worker.process.returncode == 0
    assert len(receiver.received("/one-at-a-time")) == 1
    assert sorted(statuses(ids)) == ["pending", "succeeded"]
    waited = Delivery.objects.get(event__public_id__in=ids, status="pending")
    assert waited.attempt_count == 0
    assert not waited.attempts.exists()
    assert (waited.claim_token, waited.claimed_until, waited.enqueued_at) == (None, None, None)

    private_worker(**settings)
    # Well before its claim would have lapsed: the deadline and the margin (21 s) from fan-out.
    wait_for(lambda: statuses(ids).count("succeeded") == 2, timeout=12)
    got = [r.headers["MD-Event-Id"] for r in receiver.received("/one-at-a-time")]
    assert sorted(got) == sorted(ids)


def test_a_delivery_waiting_for_its_slot_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """Disabling takes effect at once for what waits in the worker too: the delivery waiting
    behind the endpoint's one request in flight is cancelled, never sent."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/slow-then-off")
    receiver.script("/slow-then-off", Reply(delay=3))  # in flight while the endpoint is disabled
    # Published before the worker starts, so both fan-outs run at once and the second delivery
    # comes to the slot while the first holds it, however slowly this process publishes.
    events = [publish(client, {"i": i}) for i in range(2)]
    ids = [e["event_id"] for e in events]
    # A deadline far past the slow reply, so it is never a timeout, and a margin of several
    # deadlines, so deliveries may wait in the worker for the slot (admission.waiting_limit).
    private_worker(
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",
        WEBHOOKS_DELIVERY_TIMEOUT="10",
        WEBHOOKS_CLAIM_LEASE_MARGIN="50",
    )
    # Both made: a fan-out after the disabling would make no delivery for this endpoint at all.
    wait_for(
        lambda: len(statuses(ids)) == 2 and len(receiver.received("/slow-then-off")) == 1,
        timeout=30,
    )
    disable(client, endpoint)
    wait_for(lambda: statuses(ids).count("succeeded") == 1, timeout=30)
    time.sleep(2)  # past the slot's hand-off, had the waiting delivery been sent
    assert len(receiver.received("/slow-then-off")) == 1
    assert sorted(statuses(ids)) == ["cancelled", "succeeded"]
    assert not Delivery.objects.get(event__public_id__in=ids, status="cancelled").attempts.exists()


def test_a_delivery_waiting_for_room_in_its_endpoints_line_is_not_sent_once_it_is_disabled(
    private_worker, receiver
):
    """The same for a delivery that found its endpoint's line full, with no place to wait in
    the worker: its task looks for room as the line drains, during its first wave (0.5 s). The
    endpoint disabled meanwhile, it is cancelled, never sent, when the line's request ends."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/full-then-off")
    # In flight while the endpoint is disabled; it ends within the other task's first wave,
    # after a cancel check has seen the disabling.
    receiver.script("/full-then-off", Reply(delay=0.35))
    # Published before the worker starts, so both fan-outs run at once and the second finds
    # the line full.
    events = [publish(client, {"i": i}) for i in range(2)]
    ids = [e["event_id"] for e in events]
    # One request in flight, and no place to wait for it (a margin of one deadline:
    # admission.waiting_limit is 0), so the second stays with its task.
    private_worker(
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",
        WEBHOOKS_DELIVERY_TIMEOUT="10",
        WEBHOOKS_CLAIM_LEASE_MARGIN="10",
        WEBHOOKS_WAITING_CHECK_INTERVAL="0.05",
    )
    wait_for(lambda: len(receiver.received("/full-then-off")) == 1, timeout=30, interval=0.01)
    disable(client, endpoint)
    wait_for(lambda: "pending" not in statuses(ids), timeout=30)
    time.sleep(3)  # past the line's draining and the postponing (2 s), had it been sent
    assert len(receiver.received("/full-then-off")) == 1
    assert sorted(statuses(ids)) == ["cancelled", "succeeded"]
    assert not Delivery.objects.get(event__public_id__in=ids, status="cancelled").attempts.exists()


def test_an_ordered_endpoints_next_delivery_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """The same for an ordered endpoint's next delivery, loaded while its head is in flight so
    that it goes out the moment the head succeeds: the endpoint disabled meanwhile, it is
    cancelled, never sent."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/ordered-then-off", delivery_order="ordered")
    # The second is the head in flight while the endpoint is disabled; by then every fan-out
    # has run, and the third is loaded behind it. It answers within its task's first wave
    # (0.5 s: a slower head is recorded by the recorder thread, and its next one released
    # through the database) and after a cancel check (every 0.25 s) has seen the disabling.
    receiver.script("/ordered-then-off", Reply(delay=0.2), Reply(delay=0.45))
    events = [publish(client, {"i": i}) for i in range(3)]
    ids = [e["event_id"] for e in events]
    private_worker(WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: len(receiver.received("/ordered-then-off")) == 2, timeout=30, interval=0.02)
    disable(client, endpoint)
    wait_for(lambda: statuses(ids).count("succeeded") == 2, timeout=30)
    time.sleep(1)  # past the head's success, had the next delivery been sent
    got = [r.headers["MD-Event-Id"] for r in receiver.received("/ordered-then-off")]
    assert got == ids[:2]
    assert sorted(statuses(ids)) == ["cancelled", "succeeded", "succeeded"]
    cancelled = Delivery.objects.get(event__public_id=ids[2])
    assert cancelled.status == "cancelled"
    assert not cancelled.attempts.exists()


def test_a_delivery_waiting_for_its_rate_limit_slot_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """The same for what waits in the worker for a rate-limit slot: at 1/s, the second and
    third deliveries wait a second and two for theirs, and are cancelled, never sent."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/limited-then-off", rate_limit=1)
    events = [publish(client, {"i": i}) for i in range(3)]
    ids = [e["event_id"] for e in events]
    # A margin of several seconds, so the worker holds 5 s of slots (rates.horizon) rather
    # than send the later ones back to the database.
    private_worker(WEBHOOKS_CLAIM_LEASE_MARGIN="50")
    wait_for(lambda: len(receiver.received("/limited-then-off")) == 1, timeout=30, interval=0.02)
    disable(client, endpoint)
    wait_for(lambda: statuses(ids).count("cancelled") == 2, timeout=30)
    time.sleep(3)  # past the second and third slots, had they been sent
    assert len(receiver.received("/limited-then-off")) == 1
    cancelled = Delivery.objects.filter(event__public_id__in=ids, status="cancelled")
    assert not cancelled.filter(attempts__isnull=False).exists()


def test_a_rate_limited_delivery_past_its_slot_waiting_for_a_place_is_not_sent_once_disabled(
    private_worker, receiver
):
    """A rate-limited delivery sleeps until its slot before it takes a place among its
    endpoint's requests in flight (dispatch.Engine._at_slot_send). With one place
    (rates.places: the in-flight limit, and a quarter of 4 sending threads), held by a slow
    first request, the second delivery's slot comes and it waits for the place; disabled
    meanwhile, it is cancelled and never sent, when the place frees or after."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/slot-then-off", rate_limit=10)
    receiver.script("/slot-then-off", Reply(delay=2))
    ids = [publish(client, {"i": i})["event_id"] for i in range(2)]
    private_worker(
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",
        WEBHOOKS_SEND_THREADS="4",
        WEBHOOKS_DELIVERY_TIMEOUT="10",
        WEBHOOKS_CLAIM_LEASE_MARGIN="50",
    )
    wait_for(lambda: len(receiver.received("/slot-then-off")) == 1, timeout=30, interval=0.02)
    time.sleep(0.5)  # the second's slot and turn, 0.1 s after the first's, have come
    disable(client, endpoint)
    wait_for(lambda: statuses(ids).count("succeeded") == 1, timeout=30)
    time.sleep(1)  # past the place freeing, had the waiting delivery been sent
    assert len(receiver.received("/slot-then-off")) == 1
    assert sorted(statuses(ids)) == ["cancelled", "succeeded"]
    assert not Delivery.objects.get(event__public_id__in=ids, status="cancelled").attempts.exists()


def test_a_rate_limited_endpoint_has_half_a_second_of_its_rate_in_flight(private_worker, receiver):
    """A rate-limited endpoint's requests in flight may pass WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT,
    up to half a second of its rate (rates.places): a delivery takes its place at its slot,
    and one that finds none free waits for one, then takes another slot. At 10/s, with the
    in-flight limit at 1 and every request answered after 2 s, five go out a step apart, each
    before the first is answered; the sixth waits for a place, and goes out once the first is
    answered."""
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/slow-limited", rate_limit=10)
    receiver.respond("/slow-limited", lambda _: Reply(delay=2))
    for i in range(6):
        publish(client, {"i": i})
    private_worker(WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1", WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: len(receiver.received("/slow-limited")) == 6, timeout=30)
    arrived = sorted(r.at for r in receiver.received("/slow-limited"))
    # Each before the first was answered (2 s); with one place, 8 s or more.
    assert arrived[4] - arrived[0] < 1.9, arrived
    assert arrived[5] - arrived[0] >= 2, arrived


def test_a_delivery_handed_to_a_sending_thread_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """The same for a rate-limited delivery whose slot came, handed to a sending thread: it
    waits there for a free thread (the worker's only one for rate-limited deliveries, held by
    a slow request to another rate-limited endpoint), and the endpoint disabled meanwhile is
    not sent to. Its endpoint is made once the slow request holds the thread: made before,
    its delivery could have come to the thread first, had the other's come late to its slot
    (and so taken another)."""
    client = factories.api_client(factories.environment())
    holding = client.create_endpoint(f"{receiver.url}/holds-the-thread", rate_limit=10)
    receiver.script("/holds-the-thread", Reply(delay=4))
    first = publish(client)
    private_worker(WEBHOOKS_SEND_THREADS="1", WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: len(receiver.received("/holds-the-thread")) == 1, timeout=30)
    limited = client.create_endpoint(f"{receiver.url}/limited-handed-then-off", rate_limit=10)
    event = publish(client)  # to both: each handed to the one thread, behind the slow request
    deliveries = Delivery.objects.filter(event__public_id=event["event_id"])
    handed = deliveries.filter(endpoint__public_id=limited["webhook_endpoint_id"])
    # Claimed by the worker (and so in its hands, not the database's line), not yet sent.
    wait_for(lambda: handed.filter(claimed_until__isnull=False).exists(), timeout=30)
    time.sleep(0.5)  # its slot is now: it is handed over within a statement's time
    assert not receiver.received("/limited-handed-then-off")
    disable(client, limited)
    held = Delivery.objects.filter(
        event__public_id=first["event_id"], endpoint__public_id=holding["webhook_endpoint_id"]
    )
    wait_for(lambda: held.filter(status="succeeded").exists(), timeout=30)
    time.sleep(2)  # past the thread's coming free, had the handed delivery been sent
    assert not receiver.received("/limited-handed-then-off")
    delivery = handed.get()
    assert delivery.status == "cancelled"
    assert not delivery.attempts.exists()


def test_a_rate_limited_delivery_does_not_wait_for_a_thread_behind_other_endpoints(
    private_worker, receiver
):
    """A rate-limited delivery whose slot has come goes to sending threads of its own
    (dispatch.Engine.paced): with the worker's only shared sending thread held by a slow
    request to an unlimited endpoint, a limited endpoint's delivery is sent at its slot, not
    after the slow request ends."""
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/holds-the-shared-thread")
    receiver.script("/holds-the-shared-thread", Reply(delay=6))
    publish(client)
    private_worker(WEBHOOKS_SEND_THREADS="1", WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: len(receiver.received("/holds-the-shared-thread")) == 1, timeout=30)
    client.create_endpoint(f"{receiver.url}/limited-beside-it", rate_limit=10)
    event = publish(client)  # to both: the unlimited one's waits for the thread
    wait_for(lambda: len(receiver.received("/limited-beside-it")) == 1, timeout=30)
    (slow, *_) = receiver.received("/holds-the-shared-thread")
    (limited,) = receiver.received("/limited-beside-it")
    # Sent while the slow request held the shared thread, well before it ended (6 s).
    assert limited.at < slow.at + 4.5
    wait_for(lambda: statuses([event["event_id"]]) == ["succeeded"] * 2, timeout=30)


def test_a_delivery_waiting_for_a_free_sending_thread_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """The same with no rate limit: a delivery admitted to its endpoint's slot, handed to the
    sending threads and waiting for a free one (the worker's only one, held by a slow request
    to another endpoint), has not started; its endpoint disabled meanwhile is not sent to."""
    client = factories.api_client(factories.environment())
    holding = client.create_endpoint(f"{receiver.url}/holds-the-thread")
    receiver.script("/holds-the-thread", Reply(delay=6))
    publish(client)
    private_worker(WEBHOOKS_SEND_THREADS="1", WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: len(receiver.received("/holds-the-thread")) == 1, timeout=30)
    target = client.create_endpoint(f"{receiver.url}/waits-then-off")
    event = publish(client)  # to both: each handed to the sending threads, behind the first
    queued = Delivery.objects.filter(
        event__public_id=event["event_id"], endpoint__public_id=target["webhook_endpoint_id"]
    )
    wait_for(lambda: queued.filter(claimed_until__isnull=False).exists(), timeout=30)
    time.sleep(0.5)  # admitted and handed over within a statement's time of its claim
    assert not receiver.received("/waits-then-off")
    disable(client, target)
    held = Delivery.objects.filter(endpoint__public_id=holding["webhook_endpoint_id"])
    wait_for(lambda: held.filter(status="succeeded").count() == 2, timeout=30)
    time.sleep(1)  # past the thread's coming free, had the waiting delivery been sent
    assert not receiver.received("/waits-then-off")
    delivery = queued.get()
    assert delivery.status == "cancelled"
    assert not delivery.attempts.exists()


def test_a_delivery_sent_back_for_its_rate_limit_slot_is_not_sent_once_its_endpoint_is_disabled(
    private_worker, receiver
):
    """The same for what waits in PostgreSQL for a rate-limit slot: with the tests' 2-second
    margin a worker holds 1 s of slots at a time, and sends the rest back to the database,
    to take back itself by id as they come due. Disabled meanwhile, they are cancelled, and
    taking them back claims none of them."""
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/limited-back-then-off", rate_limit=1)
    ids = [publish(client, {"i": i})["event_id"] for i in range(5)]
    private_worker()
    wait_for(lambda: len(receiver.received("/limited-back-then-off")) == 1, timeout=30)
    sent_back = list(
        Delivery.objects.filter(
            event__public_id__in=ids,
            status="pending",
            claimed_until__isnull=True,
            next_attempt_at__isnull=False,
        ).values_list("pk", "next_attempt_at")
    )
    assert sent_back, statuses(ids)
    disable(client, endpoint)
    # Past the last of them coming due, and a refill round after it.
    last_due = max(at for _, at in sent_back if at is not None)
    wait_for(lambda: timezone.now() > last_due + timedelta(seconds=2), timeout=30)
    back = Delivery.objects.filter(pk__in=[pk for pk, _ in sent_back])
    assert set(back.values_list("status", flat=True)) == {"cancelled"}
    assert not back.filter(attempts__isnull=False).exists()
    succeeded = Delivery.objects.filter(event__public_id__in=ids, status="succeeded").count()
    assert len(receiver.received("/limited-back-then-off")) == succeeded


def test_auto_disable_after_failing_for_the_configured_period(private_worker, receiver):
    private_worker(WEBHOOKS_AUTO_DISABLE_AFTER="2", WEBHOOKS_RETRY_SCHEDULE="1,1,1,1,1,1,1,1")
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/down")
    receiver.script("/down", *[Reply(503) for _ in range(50)])
    event = publish(client)
    stored = wait_for(
        lambda: WebhookEndpoint.objects.filter(
            public_id=endpoint["webhook_endpoint_id"], status="disabled"
        ).first(),
        timeout=30,
    )
    assert "failed" in stored.disabled_reason
    delivery = Delivery.objects.get(event__public_id=event["event_id"])
    assert delivery.status == "cancelled"
    assert delivery.attempt_count >= 2
    assert stored.updated_at - stored.failing_since >= timedelta(seconds=2)


def test_a_worker_killed_mid_delivery_loses_nothing(private_worker, receiver):
    first = private_worker()
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/slow-once")
    receiver.script("/slow-once", Reply(200, delay=1.5))
    event = publish(client)
    wait_for(lambda: receiver.received("/slow-once"))
    first.kill()  # SIGKILL while the request is in flight: no ack, no record
    delivery = Delivery.objects.get(event__public_id=event["event_id"])
    assert delivery.status == "pending"
    assert delivery.claimed_until is not None

    private_worker()
    wait_for(
        lambda: Delivery.objects.filter(pk=delivery.pk, status="succeeded").exists(), timeout=40
    )
    requests_ = receiver.received("/slow-once")
    assert len(requests_) >= 2  # at least once: the interrupted attempt, then the redelivery
    assert {r.headers["MD-Event-Id"] for r in requests_} == {event["event_id"]}
    assert len({r.body for r in requests_}) == 1
    del endpoint


def test_a_flushed_broker_loses_nothing(private_worker, receiver, broker):
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/a")
    client.create_endpoint(f"{receiver.url}/b", enabled_events=["judgment.created"])
    # No worker yet: the fan-out tasks wait in Redis, then Redis forgets them.
    events = [publish(client, {"i": i}) for i in range(5)]
    assert broker.command("FLUSHALL").startswith(b"+OK")

    private_worker()
    ids = [e["event_id"] for e in events]
    wait_for(lambda: statuses(ids).count("succeeded") == 10, timeout=40)
    for path in ("/a", "/b"):
        got = sorted(r.headers["MD-Event-Id"] for r in receiver.received(path))
        assert sorted(set(got)) == sorted(ids)


def test_a_flush_after_fan_out_loses_nothing(private_worker, receiver, broker):
    worker = private_worker()
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/c")
    event = publish(client)
    wait_for(lambda: Delivery.objects.filter(event__public_id=event["event_id"]).exists())
    worker.stop()
    # Deliveries queued for retry or sending, and the broker loses its queues.
    Delivery.objects.update(status="pending", next_attempt_at=None, enqueued_at=None)
    oldest = Delivery.objects.first()
    assert oldest is not None
    Delivery.objects.update(next_attempt_at=oldest.created_at)
    assert broker.command("FLUSHALL").startswith(b"+OK")
    before = len(receiver.received("/c"))
    private_worker()
    wait_for(lambda: len(receiver.received("/c")) > before, timeout=40)
    wait_for(lambda: statuses([event["event_id"]]) == ["succeeded"], timeout=40)


def test_retries_due_together_beyond_an_endpoints_line_go_out_in_their_task(
    private_worker, receiver
):
    """A task may carry more deliveries of one endpoint than a process takes in at once: an
    endpoint's retries come due together after an outage. Those past the line join it as it
    drains, in the task's first wave, rather than being postponed for a sweep (which here runs
    only as the worker starts)."""
    from bench.control import failed_deliveries

    environment = factories.environment()
    factories.api_client(environment).create_endpoint(f"{receiver.url}/back")
    endpoint, _ = failed_deliveries(environment, 12)
    retries = Delivery.objects.filter(endpoint=endpoint)
    retries.update(status="pending", next_attempt_at=timezone.now(), completed_at=None)
    private_worker(
        WEBHOOKS_SWEEP_INTERVAL="600",
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",  # with 3 waiting: 4 at once
    )
    wait_for(lambda: retries.filter(status="succeeded").count() == 12, timeout=30)
    requests = receiver.received("/back")
    assert len(requests) == len({r.headers["MD-Delivery-Id"] for r in requests}) == 12


def test_a_worker_told_to_stop_starts_nothing_that_waited_for_room_in_its_line(
    private_worker, receiver
):
    """Retries due together, more of one endpoint than its line holds, join the line as it
    drains during their task's first wave; told to stop (SIGTERM) meanwhile, the worker starts
    none of those still waiting: it releases them unsent, claimed by nobody."""
    from bench.control import failed_deliveries

    environment = factories.environment()
    factories.api_client(environment).create_endpoint(f"{receiver.url}/draining")
    receiver.respond("/draining", lambda _: Reply(delay=0.15))  # a few in the first wave
    endpoint, _ = failed_deliveries(environment, 12)
    retries = Delivery.objects.filter(endpoint=endpoint)
    retries.update(status="pending", next_attempt_at=timezone.now(), completed_at=None)
    worker = private_worker(
        WEBHOOKS_SWEEP_INTERVAL="600",  # one sweep, as it starts: one task for the twelve
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",
    )
    wait_for(lambda: len(receiver.received("/draining")) >= 2, timeout=30, interval=0.01)
    told = time.time()
    worker.stop()
    assert worker.process.returncode == 0
    late = [round(r.at - told, 2) for r in receiver.received("/draining") if r.at > told + 0.05]
    assert late == []
    left = retries.filter(status="pending")
    assert left.count() == 12 - len(receiver.received("/draining"))
    assert not left.filter(claim_token__isnull=False).exists()


def test_a_prefork_worker_told_to_stop_records_the_attempt_in_flight(private_worker, receiver):
    """With CELERY_WORKER_POOL=prefork the attempt runs in a pool process, which Celery ends
    with os._exit once its task returns (the first wave): the attempt still in flight is
    recorded before that, not left claimed with no attempt, to be sent again."""
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/in-a-child")
    # Past its task's first wave (0.5 s), and the second the pool process lingers after it.
    receiver.script("/in-a-child", Reply(delay=3))
    event = publish(client)
    worker = private_worker(CELERY_WORKER_POOL="prefork", WEBHOOKS_DELIVERY_TIMEOUT="10")
    wait_for(lambda: receiver.received("/in-a-child"), timeout=30, interval=0.02)
    # To the main process alone, as compose and Kubernetes send it: the pool's processes
    # take SIGTERM's default action.
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(15)
    assert worker.process.returncode == 0
    delivery = Delivery.objects.get(event__public_id=event["event_id"])
    assert (delivery.status, delivery.attempt_count, delivery.claim_token) == ("succeeded", 1, None)
