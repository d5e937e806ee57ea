"""The slot statement: run again after a lost answer (`transient.retrying` in dispatch), it
gives no slot to a delivery its first run sent back to the database; run for several batches at
once (the process's slot thread), it serves each delivery under its own batch's claim.

Like tests/test_late_recording.py, this calls the step twice rather than losing the answer on
the wire: the second call is what the retry runs, on a new connection, with the same claim.
"""

import time
import uuid
from datetime import timedelta
from itertools import pairwise

import pytest
from django.utils import timezone

from deliveries import claiming, rates
from deliveries.models import Delivery, Lane
from deliveries.services import event_fan_out, event_publish
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _private_destinations(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True


def test_a_slot_statement_run_again_gives_no_slot_to_what_its_first_run_sent_back(api):
    """The first run finds the lane's next slot just past the horizon and sends both
    deliveries back; by the second, the horizon's end has passed that slot. A slot given now
    would start a delivery the token no longer holds, which any worker may claim when it comes
    due: sent twice."""
    created = api.create_endpoint("http://127.0.0.1:9/limited", rate_limit=1)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    ids = [
        pk
        for i in range(2)
        for pk in event_fan_out(
            event_id=event_publish(
                environment=api.environment, type="packet.created", data={"i": i}
            ).pk
        )
    ]
    # Due again after waiting (returning): they take slots even while the lane has a line.
    now = timezone.now()
    Delivery.objects.filter(pk__in=ids).update(
        created_at=now - timedelta(seconds=10), next_attempt_at=now - timedelta(seconds=1)
    )
    token = uuid.uuid4()
    claimed = claiming.claim(ids, 0, timezone.now(), token, held=False)
    assert sorted(d.pk for d in claimed) == sorted(ids)
    assert all(d.returning for d in claimed)
    beyond = timezone.now() + timedelta(seconds=rates.horizon() + 1.0)
    Lane.objects.update_or_create(endpoint_id=endpoint_id, defaults={"next_slot_at": beyond})

    held = [(d, token) for d in claimed]
    first = rates.slots_take(held)
    assert first.starts == {}
    assert sorted(first.later) == sorted(ids)
    back = Delivery.objects.filter(pk__in=ids)
    assert not back.filter(claim_token__isnull=False).exists()

    time.sleep(1.2)  # the horizon's end passes the lane's next slot
    assert rates.slots_take(held).starts == {}

    # The room was there: held by the token again, they get slots.
    back.update(claim_token=token, claimed_until=timezone.now() + timedelta(minutes=1))
    assert rates.slots_take(held).starts


def limited_deliveries(api, count: int, rate_limit: int = 10) -> tuple[int, list[int]]:
    """A rate-limited endpoint's id, and `count` deliveries to it, due and unclaimed."""
    created = api.create_endpoint("http://127.0.0.1:9/limited", rate_limit=rate_limit)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    events = [
        event_publish(environment=api.environment, type="packet.created", data={"i": i})
        for i in range(count)
    ]
    return endpoint_id, [pk for event in events for pk in event_fan_out(event_id=event.pk)]


def assert_a_step_apart(starts: list, rate_limit: int) -> None:
    spacing = timedelta(seconds=rates.step(rate_limit))
    ordered = sorted(starts)
    assert all(b - a == spacing for a, b in pairwise(ordered)), ordered


def test_one_slot_statement_serves_deliveries_held_by_several_claims(api):
    """Two batches' deliveries, each held with its batch's token, in one statement: each gets a
    slot, the slots a step apart; sent back, each is let go, whichever token held it."""
    endpoint_id, ids = limited_deliveries(api, 4)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    now = timezone.now()
    first = claiming.claim(ids[:2], 0, now, mine, held=False)
    second = claiming.claim(ids[2:], 0, now, theirs, held=False)
    held = [(d, mine) for d in first] + [(d, theirs) for d in second]

    slots = rates.slots_take(held)
    assert sorted(slots.starts) == sorted(ids)
    assert_a_step_apart(list(slots.starts.values()), 10)

    beyond = timezone.now() + timedelta(seconds=rates.horizon() + 1.0)
    Lane.objects.filter(endpoint_id=endpoint_id).update(next_slot_at=beyond)
    back = rates.slots_take(held)
    assert back.starts == {}
    assert sorted(back.later) == sorted(ids)
    assert not Delivery.objects.filter(pk__in=ids, claim_token__isnull=False).exists()
    due = Delivery.objects.filter(pk__in=ids).values_list("id", "next_attempt_at")
    assert dict(due) == back.later


@pytest.mark.django_db(transaction=True)
def test_the_slot_thread_gives_each_batch_the_slots_of_its_own_deliveries(api):
    """Batches hand their deliveries to the process's slot thread and go on; each batch's
    future gives its own deliveries' slots, a step apart from the other batch's."""
    _, ids = limited_deliveries(api, 4)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    now = timezone.now()
    first = claiming.claim(ids[:2], 0, now, mine, held=False)
    second = claiming.claim(ids[2:], 0, now, theirs, held=False)
    taker = rates.SlotTaker()

    try:
        futures = [taker.take(first, mine), taker.take(second, theirs)]
        given = [future.result(timeout=10) for future in futures]
    finally:
        taker.close(wait=10)  # and its connection with it, before the database goes

    assert sorted(given[0].starts) == sorted(ids[:2])
    assert sorted(given[1].starts) == sorted(ids[2:])
    assert_a_step_apart([*given[0].starts.values(), *given[1].starts.values()], 10)
    # Closed (a worker shutting down), it takes nothing more: those claims lapse.
    assert taker.take(first, mine).exception(timeout=1) is not None


@pytest.mark.django_db(transaction=True)
def test_the_slot_thread_holds_no_batch_back_for_another_endpoints_line(api, monkeypatch):
    """Batches for an endpoint with a line wait to be taken with the batches after them (their
    deliveries only go behind the line); a batch for an endpoint without one ends that wait at
    once, since its slots may be free now, and takes the gathered ones with it."""
    monkeypatch.setattr(rates, "GATHER_SECONDS", 120.0)
    created = [
        api.create_endpoint(f"http://127.0.0.1:9/{name}", rate_limit=rate)
        for name, rate in (("lined", 1), ("free", 10))
    ]
    lined_id, free_id = (
        WebhookEndpoint.objects.get(public_id=c["webhook_endpoint_id"]).pk for c in created
    )
    for i in range(33):
        event_fan_out(
            event_id=event_publish(
                environment=api.environment, type="packet.created", data={"i": i}
            ).pk
        )
    lined = list(Delivery.objects.filter(endpoint_id=lined_id).order_by("id"))
    free = list(Delivery.objects.filter(endpoint_id=free_id).order_by("id")[:2])
    parts = [lined[:30], lined[30:31], lined[31:], free]
    tokens = [uuid.uuid4() for _ in parts]
    now = timezone.now()
    batches = [
        claiming.claim([d.pk for d in part], 0, now, token, held=False)
        for part, token in zip(parts, tokens, strict=True)
    ]
    taker = rates.SlotTaker()

    try:
        # 1/s with a horizon of 5 s: most of the first batch goes back, a line of ~25 s.
        first = taker.take(batches[0], tokens[0]).result(timeout=10)
        assert len(first.later) > 20
        behind = [taker.take(batches[1], tokens[1])]
        time.sleep(0.5)
        behind.append(taker.take(batches[2], tokens[2]))  # while the thread gathers
        time.sleep(0.5)
        assert not any(future.done() for future in behind)
        other = taker.take(batches[3], tokens[3])
        given = other.result(timeout=10)
        back = [future.result(timeout=10) for future in behind]
    finally:
        taker.close(wait=10)

    assert sorted(given.starts) == sorted(d.pk for d in free)
    assert all(slots.starts == {} for slots in back)
    assert sorted(back[0].later) == [lined[30].pk]
    assert sorted(back[1].later) == sorted(d.pk for d in lined[31:])
    # Behind the line, a slot apart.
    assert min(back[0].later.values()) > max(first.later.values())
    assert_a_step_apart(
        [*first.later.values(), *back[0].later.values(), *back[1].later.values()], 1
    )


@pytest.mark.django_db(transaction=True)
def test_deliveries_due_again_from_a_line_are_not_held_back_to_be_gathered(api, monkeypatch):
    """A line's own deliveries coming due again (taken back by the process that sent them
    back, Engine.refill_at) take the slots that free up: held for the gathering, they waited
    up to GATHER_SECONDS past their slots, which went by unused, and the endpoint lost that
    much of its rate. They end the gathering at once, as a batch without a line does, and
    take the gathered batches with them."""
    monkeypatch.setattr(rates, "GATHER_SECONDS", 120.0)
    _, ids = limited_deliveries(api, 32, rate_limit=1)
    lined = list(Delivery.objects.filter(pk__in=ids).order_by("id"))
    tokens = [uuid.uuid4() for _ in range(3)]
    now = timezone.now()
    first_batch = claiming.claim([d.pk for d in lined[:30]], 0, now, tokens[0], held=False)
    taker = rates.SlotTaker()

    try:
        # 1/s with a horizon of 5 s: most of the batch goes back, a line of ~25 s.
        first = taker.take(first_batch, tokens[0]).result(timeout=10)
        assert len(first.later) > 20
        new = claiming.claim([d.pk for d in lined[30:]], 0, now, tokens[1], held=False)
        behind = taker.take(new, tokens[1])  # only goes behind the line: gathered
        time.sleep(0.5)
        assert not behind.done()
        # The line's first comes due again, and its process takes it back.
        head = min(first.later, key=first.later.__getitem__)
        Delivery.objects.filter(pk=head).update(next_attempt_at=timezone.now())
        again = claiming.claim([head], 0, timezone.now(), tokens[2], held=False)
        assert [d.returning for d in again] == [True]
        came = taker.take(again, tokens[2]).result(timeout=10)
        gathered = behind.result(timeout=10)
    finally:
        taker.close(wait=10)

    assert list(came.starts) == [head]
    assert gathered.starts == {}
    assert sorted(gathered.later) == sorted(d.pk for d in lined[30:])


def line_of(api, rate_limit: int, count: int) -> tuple[str, int, rates.Slots]:
    """The environment's one endpoint, limited to `rate_limit` a second, given `count`
    deliveries at once: the first take their slots within the horizon, the rest are sent back
    to wait for theirs, and the lane puts new deliveries behind them. Its public id and pk,
    and the slots."""
    endpoint_id, ids = limited_deliveries(api, count, rate_limit=rate_limit)
    token = uuid.uuid4()
    claimed = claiming.claim(ids, 0, timezone.now(), token, held=False)
    slots = rates.slots_take([(d, token) for d in claimed])
    assert slots.starts and slots.later  # a line, seconds long
    return WebhookEndpoint.objects.get(pk=endpoint_id).public_id, endpoint_id, slots


def new_delivery_waits(api) -> float:
    """Seconds a delivery made now waits: for its slot, or to be due again once sent back (the
    slots given before keep their times: up to the horizon)."""
    event = event_publish(environment=api.environment, type="packet.created", data={"new": 1})
    [fresh] = event_fan_out(event_id=event.pk)
    token = uuid.uuid4()
    [claimed] = claiming.claim([fresh], 0, timezone.now(), token, held=False)
    slots = rates.slots_take([(claimed, token)])
    at = (slots.starts | slots.later).get(fresh)  # neither: no limit, it goes now
    return 0.0 if at is None else (at - timezone.now()).total_seconds()


@pytest.mark.parametrize("new_limit", [None, 1000, 1])
def test_a_new_limit_lets_the_old_ones_line_go(api, new_limit):
    """Removed, raised or lowered, the limit applies from now: what waited for the old limit's
    later slots is due now (and takes slots at the new pace, or none), and new deliveries no
    longer go behind the old line."""
    public_id, endpoint_id, slots = line_of(api, 2, 20)
    line_end = Lane.objects.get(endpoint_id=endpoint_id).deferred_until
    assert line_end is not None and line_end > timezone.now()
    assert new_delivery_waits(api) > 8  # behind the line: 20 at 2 a second

    response = api.patch(f"/v1/webhook_endpoints/{public_id}", {"rate_limit": new_limit})
    assert response.status_code == 200, response.content

    now = timezone.now()
    waited = Delivery.objects.filter(pk__in=list(slots.later))
    assert all(due and due <= now for due in waited.values_list("next_attempt_at", flat=True))
    assert Lane.objects.get(endpoint_id=endpoint_id).deferred_until is None
    assert new_delivery_waits(api) <= rates.horizon()


def test_a_disabled_endpoint_enabled_again_puts_new_deliveries_behind_no_old_line(api):
    public_id, _, _ = line_of(api, 2, 20)
    path = f"/v1/webhook_endpoints/{public_id}"
    assert api.patch(path, {"status": "disabled"}).status_code == 200
    assert api.patch(path, {"status": "enabled"}).status_code == 200

    assert new_delivery_waits(api) <= rates.horizon()


def test_ordering_turned_on_while_deliveries_wait_for_slots_parks_what_they_sent_back(api):
    """Claimed when ordering is turned on, they are in a worker's hands and left alone; those
    then given no slot go back parked, for the lane to release in turn, not due later beside
    its head."""
    endpoint_id, ids = limited_deliveries(api, 20, rate_limit=2)
    token = uuid.uuid4()
    claimed = claiming.claim(ids, 0, timezone.now(), token, held=False)
    public_id = WebhookEndpoint.objects.get(pk=endpoint_id).public_id
    response = api.patch(f"/v1/webhook_endpoints/{public_id}", {"delivery_order": "ordered"})
    assert response.status_code == 200, response.content

    slots = rates.slots_take([(d, token) for d in claimed])  # loaded before: unordered

    assert slots.starts and slots.later
    back = Delivery.objects.filter(pk__in=list(slots.later))
    assert set(back.values_list("status", "next_attempt_at", "claim_token")) == {
        ("pending", None, None)
    }
