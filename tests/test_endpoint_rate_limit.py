"""An endpoint's rate limit, enforced across worker processes: two real workers share one
limited endpoint's deliveries with an unlimited one's, and a real receiver times them."""

import math
import time
from datetime import datetime, timedelta

import pytest
import requests
from django.db.models import Count
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt
from tests import factories
from tests.servers import (
    FAST_DELIVERY_SETTINGS,
    CeleryWorker,
    Gunicorn,
    PrivatePostgres,
    PrivateRedis,
    Received,
    database_url,
    provision,
    wait_for,
)


def busiest_second(moments: list[float]) -> int:
    """The most of these moments (seconds) within any one second."""
    times = sorted(moments)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def receipts_bound(rate: int, receipts: list[Received], started: dict[str, float]) -> int:
    """The most receipts one second may hold when no second's starts exceed rate + 1.

    The receiver (a Python server in the tests' process, on the same two CPUs) stamps a
    request when its thread gets to it, so a stall of that process stamps the requests that
    came meanwhile together. A second of receipts holds the starts of 1 + the spread of the
    receipts' lags behind their starts: rate more for each second of that spread. `started`:
    each event's first start (seconds)."""
    lags = [r.at - started[r.headers["MD-Event-Id"]] for r in receipts]
    return rate + 1 + math.ceil((max(lags) - min(lags)) * rate)


def first_starts(endpoint_url: str) -> dict[str, float]:
    """Each event's first start to this endpoint (seconds), as the workers recorded it."""
    attempts = DeliveryAttempt.objects.filter(delivery__endpoint__url=endpoint_url, number=1)
    rows = attempts.values_list("delivery__event__public_id", "started_at")
    return {event: at.timestamp() for event, at in rows}


def waits(receipts: list[Received]) -> list[float]:
    """Seconds from each receipt's delivery being made to its arrival, shortest first."""
    rows = Delivery.objects.values_list("event__public_id", "endpoint__url", "created_at")
    made = {(event, url.rsplit("/", 1)[1]): at.timestamp() for event, url, at in rows}
    return sorted(r.at - made[r.headers["MD-Event-Id"], r.path.lstrip("/")] for r in receipts)


def publish(client: factories.ApiClient, count: int, first: int = 0) -> list[str]:
    """`count` events published one after another; their ids, in that order."""
    ids = []
    for i in range(first, first + count):
        response = client.post("/v1/events", {"type": "packet.created", "data": {"i": i}})
        assert response.status_code == 201, response.content
        ids.append(str(response.json()["event_id"]))
    return ids


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
# 20/s spaces slots by the least margin (rates.MIN_PACE); 50/s by what late starts need.
@pytest.mark.parametrize("rate", [20, 50])
def test_a_limited_endpoint_never_exceeds_its_rate_and_the_other_runs_at_full_speed(
    private_worker, receiver, settings, rate
):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    limited = client.create_endpoint(f"{receiver.url}/limited", rate_limit=rate)
    assert limited["rate_limit"] == rate
    client.create_endpoint(f"{receiver.url}/free")
    events = 6 * rate  # about 6 s of the limit
    # Everything is published before the workers start, so both endpoints start with a full
    # queue and the free one's pace is the workers', not the publishing loop's.
    publish(client, events)
    private_worker()
    private_worker()

    def progress() -> str:
        received = {path: len(receiver.received(path)) for path in ("/free", "/limited")}
        statuses = Delivery.objects.values_list("status").annotate(n=Count("id"))
        return f"received {received}, deliveries {dict(statuses)}, attempts {attempts()}"

    def attempts() -> int:
        return DeliveryAttempt.objects.count()

    wait_for(lambda: len(receiver.received("/free")) >= events, timeout=60, explain=progress)
    wait_for(lambda: len(receiver.received("/limited")) >= events, timeout=60, explain=progress)
    limited_got = receiver.received("/limited")
    limited_took = max(r.at for r in limited_got) - min(r.at for r in limited_got)

    # The workers' own record of when each request went out, and the receipts, which add the
    # receiver's own delays (receipts_bound).
    wait_for(lambda: attempts() >= 2 * events, timeout=30, explain=progress)
    started = first_starts(limited["url"])
    assert busiest_second(list(started.values())) <= rate + 1
    assert busiest_second([r.at for r in limited_got]) <= receipts_bound(rate, limited_got, started)
    assert limited_took >= (events - rate - 1) / rate
    # The free endpoint was not held back to the limited one's pace: its deliveries arrived
    # within a fraction of a second of being made (0.1-0.4 s at the 95th percentile here), where
    # held to 50/s behind a fan-out of 60-80 events/s they would wait 1.5 s and more, and at
    # 20/s several. Measured from each delivery's making, not as how far the limited one had
    # got when the free one finished: the free one's pace is the fan-out's, which one worker
    # (the second starts seconds later) keeps at little above 50 events/s on a slow minute.
    free_waits = waits(receiver.received("/free"))
    assert free_waits[int(0.95 * events)] < 1.0, free_waits[-10:]
    assert len({r.headers["MD-Event-Id"] for r in limited_got}) == events
    # Waiting for a slot costs no attempt: one attempt per delivery, all succeeded.
    wait_for(
        lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count() == 2 * events,
        timeout=30,
        explain=progress,
    )
    assert attempts() == 2 * events, progress()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_starved_mid_run_does_not_put_its_late_starts_beside_the_others(
    private_worker, receiver, settings
):
    """One of the two workers is stopped for 0.3 s every second while both send to a 20/s
    endpoint: the slots it took pass while it is stopped, and its threads asleep until them
    wake together, when the other worker is sending its own. Those that wake late are not
    sent (rates.slot_kept) but take other slots under their claims (Engine._slot_again),
    which keeps the starts apart."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    limited = client.create_endpoint(f"{receiver.url}/limited", rate_limit=20)
    events = 100
    publish(client, events)
    starved, other = private_worker(), private_worker()
    while len(receiver.received("/limited")) < events * 9 // 10 and other.process.poll() is None:
        starved.starve(0.3)
        time.sleep(0.7)
    wait_for(lambda: DeliveryAttempt.objects.count() >= events, timeout=60)

    started = DeliveryAttempt.objects.filter(delivery__endpoint__url=limited["url"])
    assert busiest_second([a.started_at.timestamp() for a in started]) <= 21
    # Everything arrives. (A delivery whose claim ran out while its worker was stopped may be
    # sent by both: at least once, with the tests' 4-second lease.)
    wait_for(
        lambda: len({r.headers["MD-Event-Id"] for r in receiver.received("/limited")}) == events,
        timeout=30,
    )


@pytest.mark.slow
def test_a_worker_sends_at_the_slots_it_holds_while_postgres_is_away(receiver):
    """PostgreSQL stops for 3 s while a worker holds slots of a 4/s endpoint for the next
    5 s: those deliveries still go out at their slots (a start needs no statement), no closer
    together than the limit, and every event arrives once the database is back. (Private
    servers: the shared ones stay up.)"""
    postgres, redis = PrivatePostgres(), PrivateRedis()
    server = worker = None
    try:
        database_url = postgres.create_database("kinetic")
        key = provision(database_url, redis.url, "webhook_endpoints:write,events:write")
        server = Gunicorn(database_url, redis.url, **FAST_DELIVERY_SETTINGS)
        headers = {"Authorization": f"Bearer {key}"}
        created = requests.post(
            f"{server.url}/v1/webhook_endpoints",
            json={"url": f"{receiver.url}/limited", "rate_limit": 4},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        events = 40
        for i in range(events):
            response = requests.post(
                f"{server.url}/v1/events",
                json={"type": "packet.created", "data": {"i": i}},
                headers=headers,
                timeout=10,
            )
            assert response.status_code == 201, response.text
        # Started once all are published, so that it has a backlog whatever the pace of the
        # publishing. A 10 s margin: it takes 5 s of slots at a time, well within its claims.
        worker = CeleryWorker(database_url, redis.url, WEBHOOKS_CLAIM_LEASE_MARGIN="10")
        wait_for(lambda: len(receiver.received("/limited")) >= 4, timeout=60)
        postgres.stop()
        stopped = time.time()
        time.sleep(3)
        back = time.time()
        postgres.start()

        def ids() -> set[str]:
            return {r.headers["MD-Event-Id"] for r in receiver.received("/limited")}

        wait_for(lambda: len(ids()) == events, timeout=120)
        got = receiver.received("/limited")
        firsts: dict[str, float] = {}
        for r in sorted(got, key=lambda r: r.at):
            firsts.setdefault(r.headers["MD-Event-Id"], r.at)
        away = [at for at in firsts.values() if stopped + 0.5 <= at <= back]
        assert len(away) >= 3, (stopped, back, sorted(firsts.values()))
        assert busiest_second(list(firsts.values())) <= 5
    finally:
        for process in (worker, server):
            if process is not None:
                process.stop()
        redis.destroy()
        postgres.destroy()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_stream_at_the_limit_does_not_keep_a_backlog_waiting(private_worker, receiver, settings):
    """60 events wait for a 10/s endpoint (6 s of its limit; a worker takes 1 s of slots at a
    time in the tests and sends the rest back), and 30 more come at its limit while they
    drain. The backlog goes first: deliveries made since wait behind those sent back, rather
    than take each slot as it frees up while the backlog is sent back again and again."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=10)
    backlog = publish(client, 60)
    private_worker()
    wait_for(lambda: len(receiver.received("/limited")) >= 5, timeout=30)
    stream = []
    for i in range(30):
        stream += publish(client, 1, first=100 + i)
        time.sleep(0.1)
    everything = set(backlog + stream)
    wait_for(
        lambda: {r.headers["MD-Event-Id"] for r in receiver.received("/limited")} >= everything,
        timeout=60,
    )

    got = sorted(receiver.received("/limited"), key=lambda r: r.at)
    firsts = list(dict.fromkeys(r.headers["MD-Event-Id"] for r in got))
    last_of_backlog = max(firsts.index(event) for event in backlog)
    ahead = [event for event in firsts[:last_of_backlog] if event in stream]
    assert len(ahead) <= 2, (len(ahead), firsts)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_takes_back_the_deliveries_it_sent_to_the_database_as_they_come_due(
    private_worker, receiver, settings
):
    """40 events for a 10/s endpoint, and a worker whose sweep runs once, as it starts: it
    holds a second of slots at a time in the tests and sends the rest back to the database.
    Those come back at their time through the worker that sent them back, not through a sweep
    and a task queued behind whatever else the broker holds, so the endpoint keeps its rate."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=10)
    events = 40
    publish(client, events)
    private_worker(WEBHOOKS_SWEEP_INTERVAL="3600")
    wait_for(lambda: len(receiver.received("/limited")) >= events, timeout=120)

    got = receiver.received("/limited")
    assert len({r.headers["MD-Event-Id"] for r in got}) == events
    # 40 at 10/s take about 4 s; sent back and left to wait, they would take the sweep's hour.
    took = max(r.at for r in got) - min(r.at for r in got)
    assert took < 60, took
    # Sent back and taken again, each still cost one attempt: the one that was sent.
    wait_for(
        lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count() == events,
        timeout=30,
    )
    assert DeliveryAttempt.objects.count() == events
    started = first_starts(f"{receiver.url}/limited")
    assert busiest_second(list(started.values())) <= 11
    assert busiest_second([r.at for r in got]) <= receipts_bound(10, got, started)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_what_a_worker_killed_had_sent_back_for_its_slots_is_sent_by_another(
    private_worker, receiver, settings
):
    """What a worker sends back to the database for its slots it takes back itself, so it is
    marked enqueued for when it comes due, and the sweeps leave it (queued by a sweep as well,
    each came due into a race between the worker and a task, whose loser claimed nothing).
    That worker killed, the sweep of another takes it over once it has been due
    WEBHOOKS_REENQUEUE_AFTER (2 s in the tests), and nothing is lost."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=5)
    # 6 s of its limit: a worker holds 1 s of slots at a time in the tests.
    events = set(publish(client, 30))
    first = private_worker()
    wait_for(lambda: len(receiver.received("/limited")) >= 2, timeout=30)

    def sent_back() -> list[tuple[datetime | None, datetime | None]] | None:
        """When each delivery sent back is due, and enqueued for; None while under 10."""
        later = timezone.now() + timedelta(seconds=1)
        rows = Delivery.objects.filter(
            status=Delivery.Status.PENDING, claimed_until__isnull=True, next_attempt_at__gt=later
        ).values_list("next_attempt_at", "enqueued_at")
        return list(rows) if len(rows) >= 10 else None

    rows = wait_for(sent_back, timeout=30)
    assert all(enqueued == due for due, enqueued in rows), rows
    first.kill()

    private_worker()
    wait_for(
        lambda: {r.headers["MD-Event-Id"] for r in receiver.received("/limited")} >= events,
        timeout=90,
    )
    wait_for(
        lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).count() == len(events),
        timeout=30,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_what_a_worker_stopped_had_sent_back_for_its_slots_goes_to_the_others_as_it_comes_due(
    private_worker, receiver, settings
):
    """A worker shutting down (SIGTERM) clears the enqueued marks of what it was to take back
    itself, and releases the claims of what waited in it for a slot, so another worker's sweep
    sends all of it as it comes due, not when the claims lapse and WEBHOOKS_REENQUEUE_AFTER
    later (60 s for the second worker here)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=5)
    events = publish(client, 30)  # 6 s of its limit: a worker holds 1 s of slots at a time here
    first = private_worker()
    wait_for(lambda: len(receiver.received("/limited")) >= 2, timeout=30)

    def sent_back_ids() -> set[str] | None:
        """The events of the deliveries sent back to the database; None while under 10 (the
        slot thread gathers a line's batches before it sends them back)."""
        back = Delivery.objects.filter(
            status=Delivery.Status.PENDING,
            claimed_until__isnull=True,
            next_attempt_at__gt=timezone.now() + timedelta(seconds=1),
        )
        ids = set(back.values_list("event__public_id", flat=True))
        return ids if len(ids) >= 10 else None

    sent_back = wait_for(sent_back_ids, timeout=10)
    first.stop()
    still_marked = Delivery.objects.filter(
        event__public_id__in=sent_back, status=Delivery.Status.PENDING, enqueued_at__isnull=False
    )
    assert not still_marked.exists()
    # Those waiting in the worker for their slots were never sent: no longer held either.
    pending = Delivery.objects.filter(status=Delivery.Status.PENDING)
    assert not pending.filter(claim_token__isnull=False).exists()

    private_worker(WEBHOOKS_REENQUEUE_AFTER="60")
    # The last of them was due about 6 s after the first worker started.
    wait_for(
        lambda: {r.headers["MD-Event-Id"] for r in receiver.received("/limited")} >= set(events),
        timeout=30,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_test_event_behind_a_limited_endpoints_line_goes_out_at_its_slot(
    private_worker, receiver, broker, settings
):
    """A test event (POST /v1/webhook_endpoints/{id}/test, sent by the web process itself) to
    a limited endpoint whose line reaches past the slots a process holds goes back to the
    database behind the line, and a worker sends it at its slot: the web process takes
    nothing back itself, so it is not marked enqueued for that, which would leave it to the
    sweeps WEBHOOKS_REENQUEUE_AFTER (60 s here) past its slot."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/limited", rate_limit=1)
    # Holding 1 s of slots at a time, as a worker does in the tests.
    server = Gunicorn(database_url(), broker.url, **FAST_DELIVERY_SETTINGS)
    try:
        publish(client, 6)  # 6 s of its limit
        private_worker(WEBHOOKS_REENQUEUE_AFTER="60")
        wait_for(lambda: receiver.received("/limited"), timeout=30)
        answer = requests.post(
            f"{server.url}/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}/test",
            headers=client.headers(),
            timeout=30,
        )
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    ping = answer.json()
    assert (ping["status"], ping["attempt_count"]) == ("pending", 0)  # behind the line

    def pinged() -> list[Received]:
        got = receiver.received("/limited")
        return [r for r in got if r.headers["MD-Delivery-Id"] == ping["delivery_id"]]

    wait_for(pinged, timeout=15)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_limited_endpoints_attempts_are_recorded_several_to_a_transaction(
    private_worker, receiver, settings
):
    """Nothing follows from recording an unordered limited endpoint's attempt, so the worker
    records them together, up to UNHURRIED_SECONDS after each ends, rather than one or two to
    a transaction as they end a step apart. A round's successes share their completion time."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    client.create_endpoint(f"{receiver.url}/limited", rate_limit=10)
    events = 30
    publish(client, events)
    private_worker()
    succeeded = Delivery.objects.filter(status=Delivery.Status.SUCCEEDED)
    wait_for(lambda: succeeded.count() == events, timeout=60)
    # 3 s at 10/s, recorded a round at least every half second: about 7 rounds. One to a
    # transaction as they end, 30.
    rounds = succeeded.values("completed_at").distinct().count()
    assert rounds <= 12, rounds


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_ordered_limited_endpoint_gets_its_events_in_order_within_its_rate(
    private_worker, receiver, settings
):
    """Both at once, on PostgreSQL, with two workers: 30 events to an ordered endpoint
    limited to 10/s (3 s of its limit, past the 1 s of slots a worker takes at a time in the
    tests, so heads are sent back for their slots and come due again). They are first
    received in publication order, never more than rate + 1 started in a second, with one
    attempt each."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(
        f"{receiver.url}/ordered", delivery_order="ordered", rate_limit=10
    )
    events = publish(client, 30)
    private_worker()
    private_worker()
    wait_for(lambda: len(receiver.received("/ordered")) >= len(events), timeout=60)

    got = sorted(receiver.received("/ordered"), key=lambda r: r.at)
    assert list(dict.fromkeys(r.headers["MD-Event-Id"] for r in got)) == events
    wait_for(lambda: DeliveryAttempt.objects.count() >= len(events), timeout=30)
    attempts = DeliveryAttempt.objects.filter(delivery__endpoint__url=endpoint["url"])
    assert busiest_second([a.started_at.timestamp() for a in attempts]) <= 11
    assert attempts.count() == len(events)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_limit_removed_lets_its_line_go_at_once(private_worker, receiver, settings):
    """40 events wait for a 2/s endpoint (20 s of its limit). Once `rate_limit` is removed, the
    line goes out as fast as the worker sends, not at the old pace: the slots already given
    (up to the horizon) keep their times, what waited in the database is due at once."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    client = factories.api_client(factories.environment())
    endpoint = client.create_endpoint(f"{receiver.url}/limited", rate_limit=2)
    events = set(publish(client, 40))
    private_worker()
    wait_for(lambda: len(receiver.received("/limited")) >= 3, timeout=30)
    patched = client.patch(
        f"/v1/webhook_endpoints/{endpoint['webhook_endpoint_id']}", {"rate_limit": None}
    )
    assert patched.status_code == 200, patched.content
    removed_at = time.time()
    wait_for(
        lambda: {r.headers["MD-Event-Id"] for r in receiver.received("/limited")} >= events,
        timeout=60,
    )

    after = [r.at for r in receiver.received("/limited") if r.at > removed_at]
    # At 2/s, no second could hold more than 3 of them.
    assert busiest_second(after) >= 10, sorted(after)
