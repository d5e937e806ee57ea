"""Ordered endpoints through the public interface: a real worker (killed with SIGKILL midway
and replaced), a real receiver that fails and answers slowly, events published one after
another through the API. What the receiver first gets of each event is in publication order,
and nothing is missing.
"""

import itertools
import threading
import time

import pytest
from django.db import transaction

from deliveries.models import Delivery, Event
from tests import factories
from tests.servers import Received, Receiver, Reply, wait_for

# Retries within a sweep or two, so that a failing head holds the line back only briefly.
QUICK = {
    "WEBHOOKS_RETRY_SCHEDULE": "0.05,0.05,0.05,0.05",
    "WEBHOOKS_SWEEP_INTERVAL": "0.1",
}


def fail_every_third_first_attempt(receiver: Receiver, delay: float):
    """Answers slowly; the first attempt of every third event (by its `data.i`) fails."""
    seen: set[str] = set()
    lock = threading.Lock()

    def respond(request: Received) -> Reply:
        event_id = request.headers["MD-Event-Id"]
        with lock:
            first = event_id not in seen
            seen.add(event_id)
        if first and request.json["data"]["i"] % 3 == 0:
            return Reply(status=500, delay=delay)
        return Reply(delay=delay)

    return respond


def first_receipts(received: list[Received]) -> list[str]:
    firsts: dict[str, None] = {}
    for request in sorted(received, key=lambda r: r.at):
        firsts.setdefault(request.headers["MD-Event-Id"], None)
    return list(firsts)


def publish(client: factories.ApiClient, count: int, start: int = 0) -> list[str]:
    """One after another: each publish returns before the next begins."""
    ids = []
    for i in range(start, start + count):
        response = client.post("/v1/events", {"type": "packet.updated", "data": {"i": i}})
        assert response.status_code == 201, response.content
        ids.append(response.json()["event_id"])
    return ids


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ordered_endpoint_gets_events_in_publication_order_through_a_worker_kill(
    private_worker, receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/ordered", delivery_order="ordered")
    assert endpoint["delivery_order"] == "ordered"
    receiver.respond("/ordered", fail_every_third_first_attempt(receiver, delay=0.01))
    worker = private_worker(**QUICK)

    published = publish(client, 250)
    wait_for(lambda: len(first_receipts(receiver.received("/ordered"))) >= 100, timeout=120)
    worker.kill()  # mid-stream: the head in flight is lost with it, and the claim with it
    published += publish(client, 250, start=250)
    replacement = private_worker(**QUICK)

    try:
        wait_for(lambda: len(first_receipts(receiver.received("/ordered"))) >= 500, timeout=240)
    except AssertionError:
        raise AssertionError(
            f"{len(first_receipts(receiver.received('/ordered')))} of 500 received\n"
            f"{replacement.output()[-4000:]}"
        ) from None
    assert first_receipts(receiver.received("/ordered")) == published
    wait_for(
        lambda: not Delivery.objects.filter(status=Delivery.Status.PENDING).exists(), timeout=30
    )
    assert Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count() == 500
    # Never two in flight: each request began after the one before it had been answered.
    requests = sorted(receiver.received("/ordered"), key=lambda r: r.at)
    overlapping = [(a, b) for a, b in itertools.pairwise(requests) if b.at - a.at < 0.009]
    # The head in flight at the kill may be repeated (at least once), at most that once.
    assert len(overlapping) <= 1, [
        (a.json["data"]["i"], b.json["data"]["i"]) for a, b in overlapping
    ]
    assert Event.objects.count() == 500


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_told_to_stop_sends_no_more_of_a_line_and_the_next_one_keeps_its_order(
    private_worker, receiver, settings
):
    """Told to stop (SIGTERM), a worker finishes the head in flight and starts nothing more of
    the line its task was going along (for up to dispatch.CHAIN_SECONDS): what the head's end
    released it lets go unsent, claimed by nobody, and the next worker sends it, in order."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/stopping", delivery_order="ordered")
    receiver.respond("/stopping", lambda _: Reply(delay=0.3))
    published = publish(client, 8)
    worker = private_worker()
    wait_for(lambda: len(receiver.received("/stopping")) >= 2, timeout=30, interval=0.02)
    told = time.time()
    worker.stop()
    assert worker.process.returncode == 0
    # The head in flight began before SIGTERM; a request that began later was started after it.
    late = [round(r.at - told, 2) for r in receiver.received("/stopping") if r.at > told + 0.05]
    assert late == []
    assert not Delivery.objects.filter(status="pending", claim_token__isnull=False).exists()

    private_worker()
    wait_for(lambda: len(first_receipts(receiver.received("/stopping"))) == 8, timeout=30)
    assert first_receipts(receiver.received("/stopping")) == published


@pytest.mark.django_db(transaction=True)
def test_a_failing_head_holds_the_line_and_ordering_off_releases_it(worker, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/held", delivery_order="ordered")
    # Every attempt fails: however late this test looks, the line is still held (with two
    # failures scripted, a third attempt could succeed and release the next before the look),
    # and what releases it is ordering turned off, not the head's success.
    receiver.respond("/held", lambda _: Reply(status=500))
    published = publish(client, 3)
    wait_for(lambda: len(receiver.received("/held")) >= 2, timeout=30)
    time.sleep(0.5)
    # The head is waiting for its next retry (1 s with the test schedule); the others wait.
    assert {r.headers["MD-Event-Id"] for r in receiver.received("/held")} == {published[0]}
    response = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}",
        {"delivery_order": "unordered"},
    )
    assert response.status_code == 200, response.content
    assert response.json()["delivery_order"] == "unordered"
    wait_for(
        lambda: {r.headers["MD-Event-Id"] for r in receiver.received("/held")} == set(published),
        timeout=30,
    )


@pytest.mark.django_db(transaction=True)
def test_ordering_costs_unordered_endpoints_nothing_and_ordered_ones_run_one_at_a_time(
    worker, receiver, settings
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/one", delivery_order="ordered")
    client.create_endpoint(f"{receiver.url}/many")
    receiver.respond("/one", lambda _: Reply(delay=0.2))
    receiver.respond("/many", lambda _: Reply(delay=0.2))
    # In one transaction, their fan-outs queued together: the unordered endpoint's requests
    # overlap however slowly this process publishes.
    with transaction.atomic():
        published = publish(client, 10)
    wait_for(lambda: len(receiver.received("/many")) == 10, timeout=30)
    wait_for(lambda: len(receiver.received("/one")) == 10, timeout=30)
    assert first_receipts(receiver.received("/one")) == published
    # Each answer takes 0.2 s: the ordered endpoint's requests come one after another, at least
    # that far apart; the unordered endpoint's overlap. (Counting the ordered receipts when the
    # unordered ten were in, at most 3, failed on a loaded machine whose fan-outs were slow.)
    starts = sorted(r.at for r in receiver.received("/one"))
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(starts)), starts
    many = sorted(r.at for r in receiver.received("/many"))
    assert any(b - a < 0.19 for a, b in itertools.pairwise(many)), many


@pytest.mark.django_db
def test_turning_ordering_on_parks_what_was_not_attempted_and_sends_it_in_order(receiver, settings):
    from deliveries.dispatch import deliveries_send
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/later")
    published = publish(client, 5)  # in the test's transaction: no worker sees them
    delivery_ids = []
    for event in Event.objects.order_by("id"):
        delivery_ids += event_fan_out(event_id=event.pk)
    assert Delivery.objects.filter(next_attempt_at__isnull=False).count() == 5
    response = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"delivery_order": "ordered"}
    )
    assert response.status_code == 200, response.content
    # One head, released in publication order; four parked behind it.
    head = Delivery.objects.get(next_attempt_at__isnull=False)
    assert head.event.public_id == published[0]
    # Sending every id sends the head; each head's end releases the next, sent in its turn.
    deliveries_send(delivery_ids=list(reversed(delivery_ids)), wait_for_all=True)
    assert first_receipts(receiver.received("/later")) == published
    assert Delivery.objects.filter(status="succeeded").count() == 5


@pytest.mark.django_db
def test_an_event_fanned_out_before_an_earlier_one_waits_for_it(receiver, settings):
    """Fan-outs may run out of order (a lost task, two workers): the later event's delivery
    waits until the earlier event, if the endpoint would get it, is fanned out too."""
    from deliveries.dispatch import deliveries_send
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(
        f"{receiver.url}/o", delivery_order="ordered", enabled_events=["packet.updated"]
    )
    first, second = publish(client, 2)
    other = client.post("/v1/events", {"type": "judgment.created"}).json()["event_id"]
    third = publish(client, 1)[0]
    events = {e.public_id: e.pk for e in Event.objects.all()}

    assert event_fan_out(event_id=events[second]) == []  # parked: the first is on its way
    [head] = event_fan_out(event_id=events[first])  # the first, released as the head
    assert event_fan_out(event_id=events[third]) == []  # behind the head
    # `other` is never fanned out here: an earlier event the endpoint would not get holds
    # nothing back.
    assert Event.objects.get(pk=events[other]).fanned_out_at is None
    deliveries_send(delivery_ids=[head], wait_for_all=True)
    assert first_receipts(receiver.received("/o")) == [first, second, third]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_fan_out_behind_a_head_in_hand_does_not_wait_for_the_lanes_lock(receiver, settings):
    """While the head is in hand (its receiver refuses it for now), the next event's fan-out
    leaves its delivery to the head's recording: it does not queue for the lane's lock, which
    the recording of the head itself needs (another transaction holds it here, as a recording
    would). Then the head's recording releases it, in order. A worker of another test may
    run either fan-out first: it meets the same lock."""
    from django.db import connections, transaction

    from deliveries.dispatch import deliveries_send
    from deliveries.models import Lane
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/o", delivery_order="ordered")
    # Refused until the lane is let go: retried, the head stays in hand however long this
    # takes, where a slow answer could end first on a busy machine.
    accepting = threading.Event()
    receiver.respond("/o", lambda request: Reply() if accepting.is_set() else Reply(status=500))
    [first] = publish(client, 1)
    event_fan_out(event_id=Event.objects.get(public_id=first).pk)
    head = Delivery.objects.get(event__public_id=first)
    # A worker that fanned the event out before this call releases the lane (making it) after
    # its COMMIT, a moment after this call found the event marked and made nothing.
    lanes = Lane.objects.filter(endpoint__public_id=endpoint["webhook_endpoint_id"])
    lane = wait_for(lambda: lanes.filter(head_delivery_id=head.pk).first())

    locked, done = threading.Event(), threading.Event()

    def hold_the_lane() -> None:
        try:
            with transaction.atomic():
                list(Lane.objects.select_for_update().filter(pk=lane.pk))
                locked.set()
                done.wait(timeout=30)
        finally:
            connections.close_all()

    made: list[list[int]] = []

    def fan_out(event_id: int) -> None:
        try:
            made.append(event_fan_out(event_id=event_id))
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_lane)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        [second] = publish(client, 1, start=1)
        second_pk = Event.objects.get(public_id=second).pk
        fanning = threading.Thread(target=fan_out, args=[second_pk])
        fanning.start()
        fanning.join(timeout=5)
        assert not fanning.is_alive(), "the fan-out waited for the lane's lock"
        assert made == [[]]  # parked behind the head (or fanned out already by a worker)
        assert Delivery.objects.get(event_id=second_pk).next_attempt_at is None
    finally:
        done.set()
        holder.join()
        accepting.set()
    deliveries_send(delivery_ids=[head.pk], wait_for_all=True)
    wait_for(lambda: first_receipts(receiver.received("/o")) == [first, second], timeout=30)


@pytest.mark.django_db
def test_turning_ordering_on_leaves_a_delivery_already_attempted_on_its_schedule(
    receiver, settings
):
    """The contract: turning ordering on applies to deliveries not yet attempted."""
    from deliveries.dispatch import deliveries_send
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/mixed")
    receiver.script("/mixed", Reply(status=500))
    attempted, waiting = publish(client, 2)
    events = {e.public_id: e.pk for e in Event.objects.all()}
    [retrying] = event_fan_out(event_id=events[attempted])
    deliveries_send(delivery_ids=[retrying], wait_for_all=True)  # fails: a retry is scheduled
    event_fan_out(event_id=events[waiting])
    retry_at = Delivery.objects.get(pk=retrying).next_attempt_at
    assert retry_at is not None

    response = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"delivery_order": "ordered"}
    )
    assert response.status_code == 200, response.content
    # The attempted one keeps its retry time; the one never attempted took the line's head.
    assert Delivery.objects.get(pk=retrying).next_attempt_at == retry_at
    head = Delivery.objects.get(event__public_id=waiting)
    assert head.next_attempt_at is not None and head.attempt_count == 0


@pytest.mark.django_db
def test_a_test_event_goes_at_once_and_lets_nothing_past_a_failing_head(api, receiver, settings):
    """A test event is not one of the endpoint's events: it goes out at once, outside the
    order, and its success releases nothing (the head's end does)."""
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_RETRY_SCHEDULE = [3600]  # the head's retry is an hour away
    endpoint = api.create_endpoint(f"{receiver.url}/pinged", delivery_order="ordered")
    receiver.script("/pinged", Reply(status=500))
    head = Delivery.objects.get(event=factories.deliver_here(api.environment, "packet.updated"))
    assert (head.status, head.attempt_count) == ("pending", 1)  # failed; holds the line
    [behind] = publish(api, 1)
    event_fan_out(event_id=Event.objects.get(public_id=behind).pk)

    response = api.post(f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/test")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    types = [r.json["type"] for r in receiver.received("/pinged")]
    assert types == ["packet.updated", "ping"]  # the head's failure, then the test event
    parked = Delivery.objects.get(event__public_id=behind)
    assert (parked.attempt_count, parked.next_attempt_at) == (0, None)
    head.refresh_from_db()
    assert head.status == "pending"


@pytest.mark.django_db
def test_a_retry_left_on_its_schedule_by_ordering_on_releases_nothing(receiver, settings):
    """A delivery attempted before ordering was turned on keeps its schedule (the contract);
    its success must not send the line's next delivery while the line's head is in hand."""
    from deliveries.dispatch import deliveries_send
    from deliveries.services import event_fan_out

    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    settings.WEBHOOKS_RETRY_SCHEDULE = [0.3, 3600]
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/turned")
    # The first attempts of the retried delivery and of the line's head fail; then 200s.
    receiver.script("/turned", Reply(status=500), Reply(status=500))
    retried, head_event, parked_event = publish(client, 3)
    events = {e.public_id: e.pk for e in Event.objects.all()}
    [early] = event_fan_out(event_id=events[retried])
    deliveries_send(delivery_ids=[early], wait_for_all=True)  # fails: retry in about 0.3 s
    for public_id in (head_event, parked_event):
        event_fan_out(event_id=events[public_id])
    response = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"delivery_order": "ordered"}
    )
    assert response.status_code == 200, response.content
    head = Delivery.objects.get(event__public_id=head_event)
    deliveries_send(delivery_ids=[head.pk], top_up=False, wait_for_all=True)  # fails: in hand
    time.sleep(0.4)  # the early delivery's retry comes due

    deliveries_send(delivery_ids=[early], top_up=False, wait_for_all=True)

    assert Delivery.objects.get(pk=early).status == "succeeded"
    head.refresh_from_db()
    assert (head.status, head.attempt_count) == ("pending", 1)
    parked = Delivery.objects.get(event__public_id=parked_event)
    assert (parked.attempt_count, parked.next_attempt_at) == (0, None)
    assert parked_event not in first_receipts(receiver.received("/turned"))


@pytest.mark.django_db(transaction=True)
def test_ordering_turned_off_during_a_fan_out_that_read_it_on_leaves_nothing_parked():
    """The fan-out reads its endpoints before the change commits and inserts after it, behind
    a head in hand (so it releases nothing itself): the change's release of the parked
    deliveries cannot see that one, and the head's end no longer releases anything on an
    unordered endpoint, so the fan-out must not park it."""
    import psycopg
    from django.db import connection
    from django.utils import timezone

    from deliveries.services import event_born_fanned_out, event_fan_out
    from tests.servers import database_url
    from tests.test_cancel_while_recording import waiting_on_a_lock
    from webhooks.models import WebhookEndpoint
    from webhooks.services import endpoint_update

    client = factories.api_client(factories.environment())
    public_id = client.create_endpoint("https://example.com/o", delivery_order="ordered")[
        "webhook_endpoint_id"
    ]
    endpoint = WebhookEndpoint.objects.get(public_id=public_id)

    def published() -> Event:
        """An event as published, its fan-out left to this test (no task is queued for it:
        the module's worker would run it first)."""
        event = event_born_fanned_out(endpoint.environment, "packet.updated", {}, timezone.now())
        event.fanned_out_at = None
        event.save()
        return event

    assert len(event_fan_out(event_id=published().pk)) == 1  # the lane's head, in hand
    event = published()
    changed, commit, fanned = threading.Event(), threading.Event(), []

    def change_ordering() -> None:
        try:
            with transaction.atomic():
                endpoint_update(endpoint=endpoint, delivery_order="unordered")
                changed.set()
                commit.wait(10)
        finally:
            connection.close()

    def fan_out() -> None:
        try:
            fanned.extend(event_fan_out(event_id=event.pk))
        finally:
            connection.close()

    with psycopg.connect(database_url(), autocommit=True) as monitor:
        changer = threading.Thread(target=change_ordering)
        changer.start()
        assert changed.wait(10)
        fanner = threading.Thread(target=fan_out)
        fanner.start()
        # Before: the fan-out went through at once, reading the ordering before the change.
        wait_for(lambda: not fanner.is_alive() or waiting_on_a_lock(monitor) == 1, timeout=10)
        commit.set()
        changer.join(10)
        fanner.join(10)

    delivery = Delivery.objects.get(event=event)
    assert fanned == [delivery.pk]  # queued by its fan-out, as an unordered endpoint's is
    parked = delivery.status == "pending" and delivery.next_attempt_at is None
    assert not parked
