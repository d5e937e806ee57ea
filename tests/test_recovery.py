"""Recovery: `POST /v1/webhook_endpoints/{id}/recover`, `GET /v1/recoveries/{id}`, the
`recover_deliveries` command and the console's "recover" action.

End to end with a real Celery worker and a real receiver on 127.0.0.1: deliveries fail for
real (two attempts each: one retry 0.2 s after the first), are cancelled by disabling their
endpoint, and the receiver comes back before the recovery is asked for.
"""

import threading
import time
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts import scopes
from core.times import api_datetime
from deliveries.models import Delivery, DeliveryAttempt, Event, Recovery
from tests import factories
from tests.servers import Received, Reply, wait_for
from tests.test_admin import ENDPOINTS, run_action
from tests.test_auth import assert_error
from tests.test_openapi import RECOVER, RECOVERY, assert_documented
from webhooks.models import WebhookEndpoint

# Every delivery fails for good after two attempts; recoveries go two deliveries a batch.
FAILING_FAST = {"WEBHOOKS_RETRY_SCHEDULE": "0.2", "WEBHOOKS_RECOVERY_BATCH_SIZE": "2"}
# Not the operational events their failures publish (delivery.exhausted).
ONLY_PACKETS = {"enabled_events": ["packet.created"]}
RECOVERY_FIELDS = {
    "object",
    "recovery_id",
    "webhook_endpoint_id",
    "since",
    "until",
    "status",
    "deliveries_requeued",
    "created_at",
}


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # receivers live on 127.0.0.1


class Outage:
    """The receiver's answer by the event's `data.kind`, until `recovered` is set (then 200 for
    everything): "ok" succeeds, "fail" answers 500, "hold" answers 503 with a Retry-After of
    an hour (its delivery stays pending)."""

    def __init__(self) -> None:
        self.recovered = threading.Event()

    def __call__(self, request: Received) -> Reply:
        kind = request.json["data"]["kind"]
        if kind == "ok" or self.recovered.is_set():
            return Reply(200)
        if kind == "hold":
            return Reply(503, headers={"Retry-After": "3600"})
        return Reply(500)


def endpoint_in_an_outage(receiver, **fields) -> tuple[factories.ApiClient, Outage, str]:
    """A new tenant, and its endpoint on the receiver's /hook, answered as an Outage says."""
    tenant = factories.api_client(factories.environment())
    outage = Outage()
    receiver.respond("/hook", outage)
    endpoint = tenant.create_endpoint(f"{receiver.url}/hook", **ONLY_PACKETS, **fields)
    return tenant, outage, endpoint["webhook_endpoint_id"]


def publish(client, kind: str) -> Event:
    response = client.post("/v1/events", {"type": "packet.created", "data": {"kind": kind}})
    assert response.status_code == 201, response.content
    return Event.objects.get(public_id=response.json()["event_id"])


def delivery_of(event: Event) -> Delivery:
    return Delivery.objects.get(event=event)


def reaches(event: Event, status: str, attempts: int | None = None):
    def check() -> bool:
        delivery = Delivery.objects.filter(event=event).first()  # none until fanned out
        return (
            delivery is not None
            and delivery.status == status
            and attempts in (None, delivery.attempt_count)
        )

    return check


def received(receiver, event: Event) -> list[Received]:
    return [r for r in receiver.received("/hook") if r.headers["MD-Event-Id"] == event.public_id]


def recover(client, endpoint_id: str, **window: str):
    return client.post(f"/v1/webhook_endpoints/{endpoint_id}/recover", window)


def recovery_of(client, recovery_id: str) -> dict:
    response = client.get(f"/v1/recoveries/{recovery_id}")
    assert response.status_code == 200, response.content
    return response.json()


def completed(client, recovery_id: str):
    return lambda: recovery_of(client, recovery_id)["status"] == "completed"


# --- End to end ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_failed_and_cancelled_deliveries_of_the_window_are_sent_again(private_worker, receiver):
    private_worker(**FAILING_FAST)
    tenant, outage, endpoint_id = endpoint_in_an_outage(receiver)
    endpoint_path = f"/v1/webhook_endpoints/{endpoint_id}"

    before = publish(tenant, "fail")
    wait_for(reaches(before, "failed"))
    failed = publish(tenant, "fail")
    succeeded = publish(tenant, "ok")
    cancelled = publish(tenant, "hold")
    wait_for(reaches(failed, "failed", attempts=2))
    wait_for(reaches(succeeded, "succeeded"))
    wait_for(reaches(cancelled, "pending", attempts=1))
    tenant.patch(endpoint_path, {"status": "disabled"})
    tenant.patch(endpoint_path, {"status": "enabled"})
    assert delivery_of(cancelled).status == "cancelled"
    pending = publish(tenant, "hold")
    after = publish(tenant, "fail")
    wait_for(reaches(pending, "pending", attempts=1))
    wait_for(reaches(after, "failed", attempts=2))
    sent_before = {
        e.public_id: len(received(receiver, e)) for e in Event.objects.filter(type="packet.created")
    }

    outage.recovered.set()
    since, until = failed.created_at, after.created_at  # `after` is outside: until is excluded
    response = recover(tenant, endpoint_id, since=since.isoformat(), until=until.isoformat())
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == RECOVERY_FIELDS
    assert body["object"] == "recovery"
    assert body["recovery_id"].startswith("rcv_") and len(body["recovery_id"]) == 18
    assert body["webhook_endpoint_id"] == endpoint_id
    assert (body["since"], body["until"]) == (api_datetime(since), api_datetime(until))
    assert (body["status"], body["deliveries_requeued"]) == ("running", 0)
    assert body["created_at"].endswith("Z")

    wait_for(completed(tenant, body["recovery_id"]))
    assert recovery_of(tenant, body["recovery_id"])["deliveries_requeued"] == 2
    for event in (failed, cancelled):
        wait_for(reaches(event, "succeeded"))
    time.sleep(1)  # several sweeps: anything else wrongly requeued would be sent by now

    for event, attempts in ((failed, [1, 2, 3]), (cancelled, [1, 2])):
        delivery = delivery_of(event)
        requests = received(receiver, event)
        assert len(requests) == sent_before[event.public_id] + 1
        # The same delivery, attempted again: same ids, attempts numbered on.
        assert {r.headers["MD-Delivery-Id"] for r in requests} == {delivery.public_id}
        assert {r.json["id"] for r in requests} == {event.public_id}
        numbers = DeliveryAttempt.objects.filter(delivery=delivery).order_by("number")
        assert [a.number for a in numbers] == attempts
    for event, status in ((before, "failed"), (after, "failed"), (succeeded, "succeeded")):
        assert delivery_of(event).status == status
        assert len(received(receiver, event)) == sent_before[event.public_id]
    assert delivery_of(pending).status == "pending"  # waiting for its own retry, untouched
    assert len(received(receiver, pending)) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_batches_save_their_place_and_a_new_worker_goes_on_from_it(private_worker, receiver):
    tenant, outage, endpoint_id = endpoint_in_an_outage(receiver)
    first = private_worker(**FAILING_FAST)
    events = [publish(tenant, "fail") for _ in range(6)]
    for event in events:
        wait_for(reaches(event, "failed", attempts=2))
    first.stop()

    outage.recovered.set()
    since = events[0].created_at.isoformat()
    recovery_id = recover(tenant, endpoint_id, since=since).json()["recovery_id"]
    # Sweeps (which queue a running recovery's next step) 30 s apart: the request's own task
    # and the sweep at start take a batch each at most before this worker dies.
    slow = private_worker(**FAILING_FAST, WEBHOOKS_SWEEP_INTERVAL="30")
    wait_for(lambda: recovery_of(tenant, recovery_id)["deliveries_requeued"] >= 2)
    walk = [delivery_of(event) for event in events]  # the walk's order: as they were made
    row = Recovery.objects.get(public_id=recovery_id)
    while True:
        # Read with the worker frozen, so that the other step, if it comes, cannot land
        # between the read and the kill; killed once what it requeued has been sent.
        slow.freeze()
        time.sleep(0.5)  # a COMMIT the worker sent before it froze lands before the read
        row.refresh_from_db()
        done = row.deliveries_requeued
        if all(reaches(event, "succeeded")() for event in events[:done]):
            break
        slow.thaw()
        for event in events[:done]:
            wait_for(reaches(event, "succeeded"))
    slow.kill()

    row.refresh_from_db()
    assert row.status == "running" and row.deliveries_requeued == done < len(events)
    assert row.cursor == walk[done - 1].pk  # the last batch's end, saved with it
    assert {Delivery.objects.get(pk=d.pk).status for d in walk[done:]} == {"failed"}

    progress: list[int] = []

    def all_requeued() -> bool:
        progress.append(recovery_of(tenant, recovery_id)["deliveries_requeued"])
        return progress[-1] == len(events)

    private_worker(**FAILING_FAST)
    wait_for(all_requeued)
    wait_for(completed(tenant, recovery_id))
    assert progress == sorted(progress) and progress[0] < len(events)
    for event in events:
        wait_for(reaches(event, "succeeded", attempts=3))
        assert len(received(receiver, event)) == 3  # two failures, then the recovery's one


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_part_goes_out_on_its_own_task_as_it_comes_due(private_worker, receiver):
    """A part is no more than a process takes in at once for one endpoint, and its task reaches
    a worker as the part comes due: nothing waits for the sweep, which here runs only as the
    worker starts. (Parts as large as a claim batch, 50, left all but 4 of them to be
    postponed, due again for a sweep.)"""
    from bench.control import failed_deliveries

    count = 24
    private_worker(
        WEBHOOKS_SWEEP_INTERVAL="600",
        WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT="1",  # with 3 waiting: 4 at once
        WEBHOOKS_RECOVERY_RATE="10",  # a part of 4 every 0.4 s
    )
    environment = factories.environment()
    tenant = factories.api_client(environment)
    endpoint_id = tenant.create_endpoint(f"{receiver.url}/hook")["webhook_endpoint_id"]
    _, since = failed_deliveries(environment, count)

    recovery_id = recover(tenant, endpoint_id, since=since.isoformat()).json()["recovery_id"]
    wait_for(completed(tenant, recovery_id))
    recovered = Delivery.objects.filter(endpoint__public_id=endpoint_id)
    wait_for(lambda: recovered.filter(status="succeeded").count() == count, timeout=20)
    requests = receiver.received("/hook")
    assert len(requests) == len({r.headers["MD-Delivery-Id"] for r in requests}) == count


@pytest.mark.django_db
def test_a_recovery_holds_its_next_batch_while_live_events_wait_for_their_fan_out(settings):
    """Live deliveries are claimed as they are made, in their event's fan-out, so while the
    workers are behind they wait in the broker's line, never due in the database: the
    recovery reads the line's length from the events not fanned out yet."""
    from bench.control import failed_deliveries
    from deliveries.recovery import LIVE_LAG, recovery_create, recovery_step
    from deliveries.services import event_publish

    settings.WEBHOOKS_RECOVERY_BATCH_SIZE = 3
    environment = factories.environment()
    factories.api_client(environment).create_endpoint("https://example.com/hook")
    endpoint, since = failed_deliveries(environment, 6)
    recovery = recovery_create(endpoint=endpoint, since=since)
    recovery_step(recovery_id=recovery.pk)
    recovery.refresh_from_db()
    assert recovery.deliveries_requeued == 3
    # The first batch sent: no delivery is due any more.
    Delivery.objects.filter(status=Delivery.Status.PENDING).update(status=Delivery.Status.SUCCEEDED)

    # An event published and not fanned out (this test's transaction never commits, so its
    # fan-out is never queued).
    live = event_publish(environment=environment, type="packet.created", data={})
    recovery_step(recovery_id=recovery.pk, now=live.created_at + LIVE_LAG * 2)
    recovery.refresh_from_db()
    assert recovery.deliveries_requeued == 3

    recovery_step(recovery_id=recovery.pk, now=live.created_at + LIVE_LAG / 2)
    recovery.refresh_from_db()
    assert recovery.deliveries_requeued == 6


@pytest.mark.django_db
def test_a_recovery_holds_its_next_batch_for_due_deliveries_only_once_they_have_waited(settings):
    """A delivery just come due waits for its task or the next sweep to reach a worker: the
    recovery's own batch, due part by part, does not hold the next one back from idle workers.
    A batch of due deliveries still unclaimed after LIVE_LAG does."""
    from bench.control import failed_deliveries
    from deliveries.recovery import LIVE_LAG, recovery_create, recovery_step

    settings.WEBHOOKS_RECOVERY_BATCH_SIZE = 3
    environment = factories.environment()
    factories.api_client(environment).create_endpoint("https://example.com/hook")
    endpoint, since = failed_deliveries(environment, 9)
    recovery = recovery_create(endpoint=endpoint, since=since)

    def requeued_after_a_step(now: datetime | None = None) -> int:
        recovery_step(recovery_id=recovery.pk, now=now)
        recovery.refresh_from_db()
        return recovery.deliveries_requeued

    def last_due() -> datetime:
        pending = Delivery.objects.filter(status=Delivery.Status.PENDING)
        return max(at for at in pending.values_list("next_attempt_at", flat=True) if at)

    assert requeued_after_a_step() == 3
    # The first batch due (no worker here claims it), for less than LIVE_LAG.
    assert requeued_after_a_step(last_due() + LIVE_LAG / 2) == 6
    # Six due, unclaimed for longer than LIVE_LAG: two batches wait for the workers.
    assert requeued_after_a_step(last_due() + LIVE_LAG * 2) == 6


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_ordered_endpoint_receives_the_recovered_in_publication_order(private_worker, receiver):
    private_worker(**FAILING_FAST)
    tenant, outage, endpoint_id = endpoint_in_an_outage(receiver, delivery_order="ordered")
    events = [publish(tenant, "fail") for _ in range(5)]
    for event in events:
        wait_for(reaches(event, "failed", attempts=2), timeout=60)
    failures = len(receiver.received("/hook"))

    outage.recovered.set()
    response = recover(tenant, endpoint_id, since=events[0].created_at.isoformat())
    wait_for(completed(tenant, response.json()["recovery_id"]))
    for event in events:
        wait_for(reaches(event, "succeeded", attempts=3))
    again = receiver.received("/hook")[failures:]
    assert [r.headers["MD-Event-Id"] for r in again] == [e.public_id for e in events]


# --- The endpoint changed while a recovery runs --------------------------------------------


@pytest.mark.django_db
def test_disabling_the_endpoint_ends_its_recovery_even_if_it_is_enabled_again(settings):
    """Re-enabling resumes new events only (the contract): a recovery does not go on with what
    it had left once its endpoint was disabled, whenever its next step runs."""
    from bench.control import failed_deliveries
    from deliveries.recovery import recovery_step

    settings.WEBHOOKS_RECOVERY_BATCH_SIZE = 2
    tenant = factories.api_client(factories.environment())
    endpoint_id = tenant.create_endpoint("https://example.com/hook")["webhook_endpoint_id"]
    endpoint, since = failed_deliveries(tenant.environment, 6)
    recovery_id = recover(tenant, endpoint_id, since=since.isoformat()).json()["recovery_id"]
    recovery_step(recovery_id=Recovery.objects.get(public_id=recovery_id).pk)
    assert recovery_of(tenant, recovery_id)["deliveries_requeued"] == 2

    path = f"/v1/webhook_endpoints/{endpoint_id}"
    assert tenant.patch(path, {"status": "disabled"}).status_code == 200
    shown = recovery_of(tenant, recovery_id)
    assert (shown["status"], shown["deliveries_requeued"]) == ("completed", 2)
    assert tenant.patch(path, {"status": "enabled"}).status_code == 200
    recovery_step(recovery_id=Recovery.objects.get(public_id=recovery_id).pk)

    shown = recovery_of(tenant, recovery_id)
    assert (shown["status"], shown["deliveries_requeued"]) == ("completed", 2)
    statuses = Delivery.objects.filter(endpoint=endpoint).values_list("status", flat=True)
    assert sorted(statuses) == ["cancelled"] * 2 + ["failed"] * 4


def step_while_the_endpoint_changes(tenant, endpoint_id: str, recovery_id: str, change: dict):
    """A recovery step of an ordered endpoint holds its requeued deliveries uncommitted while it
    waits for the lane's lock (held here, as a recording of that lane would), and the endpoint
    is changed through the API meanwhile; then the lane is let go. Returns the change's answer."""
    import psycopg
    from django.db import connection, transaction

    from deliveries import ordering
    from deliveries.models import Lane
    from deliveries.recovery import recovery_step
    from tests.servers import database_url
    from tests.test_cancel_while_recording import waiting_on_a_lock

    endpoint = WebhookEndpoint.objects.get(public_id=endpoint_id)
    ordering.lanes_make([endpoint.pk])
    recovery_pk = Recovery.objects.get(public_id=recovery_id).pk
    held, let_go, answers = threading.Event(), threading.Event(), []

    def in_a_thread(work):
        def run() -> None:
            try:
                work()
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def hold_the_lane() -> None:
        with transaction.atomic():
            Lane.objects.select_for_update().get(endpoint_id=endpoint.pk)
            held.set()
            let_go.wait(30)

    path = f"/v1/webhook_endpoints/{endpoint_id}"
    with psycopg.connect(database_url(), autocommit=True) as monitor:
        holder = in_a_thread(hold_the_lane)
        assert held.wait(10)
        stepper = in_a_thread(lambda: recovery_step(recovery_id=recovery_pk))
        wait_for(lambda: waiting_on_a_lock(monitor) == 1, timeout=10)
        changer = in_a_thread(lambda: answers.append(tenant.patch(path, change)))
        # Before: the change went through at once. Now it waits for the step's commit.
        wait_for(lambda: answers or waiting_on_a_lock(monitor) == 2, timeout=10)
        let_go.set()
        for thread in (holder, stepper, changer):
            thread.join(30)
    [answer] = answers
    assert answer.status_code == 200, answer.content
    return endpoint


def ordered_endpoint_recovering_three():
    """A new tenant's ordered endpoint with three failed deliveries, and their recovery, asked
    for and not stepped yet (one step of ten takes all three)."""
    from bench.control import failed_deliveries

    tenant = factories.api_client(factories.environment())
    endpoint_id = tenant.create_endpoint("https://example.com/hook", delivery_order="ordered")[
        "webhook_endpoint_id"
    ]
    _, since = failed_deliveries(tenant.environment, 3)
    recovery_id = recover(tenant, endpoint_id, since=since.isoformat()).json()["recovery_id"]
    return tenant, endpoint_id, recovery_id


@pytest.mark.django_db(transaction=True)
def test_ordering_turned_off_while_a_step_requeues_leaves_nothing_waiting_in_a_line(settings):
    settings.WEBHOOKS_RECOVERY_BATCH_SIZE = 10
    tenant, endpoint_id, recovery_id = ordered_endpoint_recovering_three()

    endpoint = step_while_the_endpoint_changes(
        tenant, endpoint_id, recovery_id, {"delivery_order": "unordered"}
    )

    # Unordered now: all three requeued and due, none parked where no lane would release it.
    rows = Delivery.objects.filter(endpoint=endpoint).values_list("status", "next_attempt_at")
    assert [status for status, _ in rows] == ["pending"] * 3
    assert all(due is not None for _, due in rows)
    assert recovery_of(tenant, recovery_id)["deliveries_requeued"] == 3


@pytest.mark.django_db(transaction=True)
def test_disabling_while_a_step_requeues_cancels_what_it_requeued(settings):
    settings.WEBHOOKS_RECOVERY_BATCH_SIZE = 10
    tenant, endpoint_id, recovery_id = ordered_endpoint_recovering_three()

    endpoint = step_while_the_endpoint_changes(
        tenant, endpoint_id, recovery_id, {"status": "disabled"}
    )

    # Nothing queued is sent to a disabled endpoint, nor once it is enabled again.
    statuses = Delivery.objects.filter(endpoint=endpoint).values_list("status", flat=True)
    assert list(statuses) == ["cancelled"] * 3
    assert recovery_of(tenant, recovery_id)["status"] == "completed"


# --- The API without a worker ---------------------------------------------------------------


@pytest.fixture
def endpoint_id(api) -> str:
    return api.create_endpoint()["webhook_endpoint_id"]


def an_hour_ago() -> str:
    return (timezone.now() - timedelta(hours=1)).isoformat()


def test_the_answers_are_documented_and_the_recovery_can_be_read_back(api, endpoint_id):
    schema = api.get("/v1/openapi.json").json()
    created = assert_documented(
        schema, "post", RECOVER, recover(api, endpoint_id, since=an_hour_ago())
    )
    read = api.get(f"/v1/recoveries/{created['recovery_id']}")
    assert assert_documented(schema, "get", RECOVERY, read) == created
    missing = api.get("/v1/recoveries/rcv_00000000000000")
    assert_documented(schema, "get", RECOVERY, missing)
    assert_error(missing, 404, "not_found", param="recovery_id")


def test_until_defaults_to_now(api, endpoint_id):
    before = timezone.now().replace(microsecond=0)
    body = recover(api, endpoint_id, since=an_hour_ago()).json()
    recovery = Recovery.objects.get(public_id=body["recovery_id"])
    assert before <= recovery.until <= timezone.now()
    assert body["until"] == api_datetime(recovery.until)


def test_times_in_any_zone_are_read_as_the_instant_they_name(api, endpoint_id):
    body = recover(
        api,
        endpoint_id,
        since=(timezone.now() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
    ).json()
    # Three hours ago's UTC clock reading, written as +02:00: two hours earlier than that.
    shown = datetime.fromisoformat(body["since"])
    assert abs((timezone.now() - timedelta(hours=5)) - shown) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("window", "code", "param"),
    [
        ({}, "parameter_missing", "since"),
        ({"until": "2026-06-12T00:00:00Z"}, "parameter_missing", "since"),
        ({"since": "2026-06-12T00:00:00"}, "parameter_invalid", "since"),  # no zone
        ({"since": "2026-06-12"}, "parameter_invalid", "since"),
        ({"since": "yesterday"}, "parameter_invalid", "since"),
        ({"since": 1781222400}, "parameter_invalid", "since"),
        ({"since": None}, "parameter_invalid", "since"),
        ({"since": "2026-02-30T00:00:00Z"}, "parameter_invalid", "since"),
        ({"since": "0001-01-01T00:30:00+01:00"}, "parameter_invalid", "since"),
        ({"since": "HOUR_AGO", "until": "2026-06-12T00:00:00"}, "parameter_invalid", "until"),
        ({"since": "HOUR_AGO", "until": "HOUR_AGO"}, "parameter_invalid", "until"),  # empty
        ({"since": "HOUR_AGO", "until": "TWO_HOURS_AGO"}, "parameter_invalid", "until"),
        ({"since": "IN_AN_HOUR"}, "parameter_invalid", "since"),  # until (now) is before it
        ({"since": "31_DAYS_AGO"}, "parameter_invalid", "since"),  # past retention
        ({"since": "HOUR_AGO", "status": "completed"}, "parameter_invalid", "status"),
        ({"since": "HOUR_AGO", "colour": "red"}, "parameter_unknown", "colour"),
    ],
)
def test_a_bad_window_is_refused_by_name_and_nothing_is_made(api, endpoint_id, window, code, param):
    now = timezone.now()
    times = {
        "HOUR_AGO": now - timedelta(hours=1),
        "TWO_HOURS_AGO": now - timedelta(hours=2),
        "IN_AN_HOUR": now + timedelta(hours=1),
        "31_DAYS_AGO": now - timedelta(days=31),
    }
    window = {k: times[v].isoformat() if v in times else v for k, v in window.items()}
    assert_error(recover(api, endpoint_id, **window), 400, code, param=param)
    assert not Recovery.objects.exists()


def test_since_just_inside_the_retention_window_is_accepted(api, endpoint_id, settings):
    since = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS) + timedelta(minutes=1)
    assert recover(api, endpoint_id, since=since.isoformat()).status_code == 202


def test_a_disabled_endpoint_is_refused_with_no_param(api, endpoint_id):
    api.patch(f"/v1/webhook_endpoints/{endpoint_id}", {"status": "disabled"})
    error = assert_error(recover(api, endpoint_id, since=an_hour_ago()), 400, "parameter_invalid")
    assert "disabled" in error["message"]
    assert not Recovery.objects.exists()


def test_recoveries_belong_to_their_tenant(api, endpoint_id):
    mine = recover(api, endpoint_id, since=an_hour_ago()).json()["recovery_id"]
    org = api.environment.organization
    others = [
        factories.api_client(org.environments.get(name="production")),
        factories.api_client(factories.environment()),
    ]
    for other in others:
        theirs = other.create_endpoint()["webhook_endpoint_id"]
        assert_error(
            recover(api, theirs, since=an_hour_ago()), 404, "not_found", "webhook_endpoint_id"
        )
        assert_error(other.get(f"/v1/recoveries/{mine}"), 404, "not_found", "recovery_id")
    assert Recovery.objects.count() == 1
    deleted = api.create_endpoint()["webhook_endpoint_id"]
    api.delete(f"/v1/webhook_endpoints/{deleted}")
    assert_error(
        recover(api, deleted, since=an_hour_ago()), 404, "not_found", "webhook_endpoint_id"
    )


def test_scopes(api, endpoint_id):
    mine = recover(api, endpoint_id, since=an_hour_ago()).json()["recovery_id"]
    reader = factories.api_client(api.environment, scopes=[scopes.WEBHOOK_ENDPOINTS_READ])
    writer = factories.api_client(api.environment, scopes=[scopes.WEBHOOK_ENDPOINTS_WRITE])
    assert_error(recover(reader, endpoint_id, since=an_hour_ago()), 403, "insufficient_scope")
    assert_error(writer.get(f"/v1/recoveries/{mine}"), 403, "insufficient_scope")
    assert recover(writer, endpoint_id, since=an_hour_ago()).status_code == 202
    assert reader.get(f"/v1/recoveries/{mine}").status_code == 200


def test_an_idempotency_key_replays_the_202_byte_for_byte(api, endpoint_id):
    window = {"since": an_hour_ago()}
    path = f"/v1/webhook_endpoints/{endpoint_id}/recover"
    first = api.post(path, window, headers={"Idempotency-Key": "recover-1"})
    again = api.post(path, window, headers={"Idempotency-Key": "recover-1"})
    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again["Idempotent-Replayed"] == "true"
    assert Recovery.objects.count() == 1
    other = api.post(path, {"since": an_hour_ago()}, headers={"Idempotency-Key": "recover-1"})
    assert_error(other, 409, "idempotency_key_reused", param="Idempotency-Key")


def test_other_methods_on_the_paths_are_405(api, endpoint_id):
    assert_error(api.get(f"/v1/webhook_endpoints/{endpoint_id}/recover"), 405, "method_not_allowed")
    assert_error(api.post("/v1/recoveries/rcv_00000000000000"), 405, "method_not_allowed")


# --- The command -----------------------------------------------------------------------------


def test_the_command_prints_the_recovery_id_last(api, endpoint_id):
    out = StringIO()
    call_command("recover_deliveries", endpoint_id, "--since", an_hour_ago(), stdout=out)
    recovery_id = out.getvalue().strip().splitlines()[-1]
    recovery = Recovery.objects.get(public_id=recovery_id)
    assert recovery.endpoint.public_id == endpoint_id
    assert recovery_of(api, recovery_id)["status"] == "running"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["we_00000000000000", "--since", "2026-06-12T00:00:00Z"], "no such webhook endpoint"),
        (["ENDPOINT", "--since", "2026-06-12T00:00:00"], "with a zone"),
        (["ENDPOINT", "--since", "HOUR_AGO", "--until", "TWO_HOURS_AGO"], "--until"),
        (["ENDPOINT", "--since", "31_DAYS_AGO"], "--since"),
    ],
)
def test_the_command_refuses_what_the_api_refuses(endpoint_id, args, message):
    now = timezone.now()
    times = {
        "HOUR_AGO": now - timedelta(hours=1),
        "TWO_HOURS_AGO": now - timedelta(hours=2),
        "31_DAYS_AGO": now - timedelta(days=31),
    }
    args = [endpoint_id if a == "ENDPOINT" else a for a in args]
    args = [times[a].isoformat() if a in times else a for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("recover_deliveries", *args, stdout=StringIO())
    assert not Recovery.objects.exists()


# --- The console -----------------------------------------------------------------------------

RECOVERIES = reverse("admin:deliveries_recovery_changelist")


def test_the_recover_action_asks_for_the_window_then_starts_one_per_endpoint(admin_client, api):
    endpoints = [
        WebhookEndpoint.objects.get(public_id=api.create_endpoint()["webhook_endpoint_id"])
        for _ in range(2)
    ]
    page = run_action(admin_client, ENDPOINTS, "recover", endpoints)
    assert page.status_code == 200
    assert 'name="since"' in page.content.decode()
    assert not Recovery.objects.exists()

    since = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    done = run_action(admin_client, ENDPOINTS, "recover", endpoints, since=since, confirm="Recover")
    assert done.status_code == 302
    made = Recovery.objects.order_by("id")
    assert sorted(r.endpoint_id for r in made) == sorted(e.pk for e in endpoints)
    listing = admin_client.get(RECOVERIES).content.decode()
    for recovery in made:
        assert recovery.public_id in listing
    assert api.environment.organization.slug in listing
    detail = admin_client.get(reverse("admin:deliveries_recovery_change", args=[made[0].pk]))
    assert detail.status_code == 200
    assert made[0].endpoint.public_id in detail.content.decode()


def test_the_recover_action_shows_the_services_refusal_on_its_form(admin_client, api):
    endpoint = WebhookEndpoint.objects.get(public_id=api.create_endpoint()["webhook_endpoint_id"])
    month_ago = (timezone.now() - timedelta(days=31)).strftime("%Y-%m-%d %H:%M:%S")
    page = run_action(
        admin_client, ENDPOINTS, "recover", [endpoint], since=month_ago, confirm="Recover"
    )
    assert page.status_code == 200
    assert "retention window" in page.content.decode()
    assert not Recovery.objects.exists()
