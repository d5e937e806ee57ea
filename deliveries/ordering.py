"""Ordered endpoints: one delivery in hand at a time, in the order events were published.

A delivery to an ordered endpoint is born *parked*: pending with no `next_attempt_at`, so no
claim and no sweep sees it. The endpoint's `Lane` names its *head*, the one delivery that may be
attempted; it is retried on the usual schedule and holds the others back. When the head ends
(succeeded, failed after its last retry, cancelled), the transaction that records it releases
the next parked delivery, lowest event id first: event ids are drawn in the publishing
transaction, so an event published after another one's publish returned has the higher id.

A fan-out, after its COMMIT, releases only lanes with no head in hand (lanes_idle): behind a
head, its delivery waits for the head's recording to release it, and the recording of a head
that had nothing to release looks again after its own COMMIT, so neither misses the other.

Every decision about a lane is taken under its row lock (`SELECT ... FOR UPDATE`), by whoever
makes it (fan-out, recording, recovery, the sweep), so two workers never hold two heads; and as
PostgreSQL is the only state, the order survives a worker's crash, the broker's loss and a
database restart. Unordered endpoints never come here: their deliveries are never parked.
"""

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from deliveries import sql
from deliveries.claiming import Claimed, json_column
from deliveries.models import Delivery, Lane
from deliveries.selectors import unclaimed
from webhooks.catalog import filter_matches
from webhooks.models import WebhookEndpoint

ORDERED = WebhookEndpoint.DeliveryOrder.ORDERED
PENDING = Delivery.Status.PENDING


def parked() -> Q:
    """Waiting in an ordered endpoint's line (delivery_parked_idx holds exactly these)."""
    return Q(status=PENDING, next_attempt_at__isnull=True)


def _parked_in(alias: str) -> str:
    """`parked` written out, of the delivery table as `alias`, for the statements below."""
    return f"{alias}.status = {{PENDING}} AND {alias}.next_attempt_at IS NULL"


def lanes_release(
    *,
    endpoint_ids: "set[int] | list[int]",
    now: datetime | None = None,
    ended: "set[int] | None" = None,
    known: "dict[int, tuple[int, list[str]]] | None" = None,
    sent: "dict[int, tuple[int, int]] | None" = None,
    claim_token: uuid.UUID | None = None,
    claimed_until: datetime | None = None,
) -> dict[int, int]:
    """For each of these ordered endpoints whose head has ended (or that has none), makes its
    next parked delivery the head, due now; in the caller's transaction. Returns those released
    (delivery: its event): the caller queues them after commit, or sends them itself when it
    gave a claim (`claim_token` until `claimed_until`: they are made claimed by it, as fan-out's
    first batch). Their events matter to a caller that loads them by event (claiming.load): a
    lane may release an earlier event's delivery than the one the caller has in hand.

    `ended` names deliveries the caller has just ended in this transaction (no need to look);
    `known` gives the endpoints' environment and enabled_events when the caller has them
    (endpoint: (environment id, enabled_events)), for endpoints it knows to be ordered; `sent`
    names, per endpoint, the delivery (and its event) the caller already sent as its head ended
    (`peek` chose it): that one is the head now, whatever came since.

    Endpoints that are not ordered (any more) are skipped. A parked delivery whose event has an
    earlier, matching event of the same environment not fanned out yet is not released: that
    event's fan-out releases the lane when it commits.
    """
    if not endpoint_ids:
        return {}
    now = now or timezone.now()
    endpoints = known or _ordered(endpoint_ids)
    if not endpoints:
        return {}
    sent = sent or {}
    released: dict[int, int] = {}
    if connection.vendor == "postgresql" and set(endpoints) <= set(sent):
        # The chain's case (one lane, its next delivery sent already): one statement a lane.
        for pk in sorted(endpoints):
            delivery_id, event_id = sent[pk]
            if _head_sent(pk, delivery_id, event_id, now, claim_token, claimed_until):
                released[delivery_id] = event_id
        return released
    # No savepoint: the caller's transaction is the unit (recording, fan-out, the sweep).
    with transaction.atomic(savepoint=False):
        for pk, lane in sorted(lanes_locked(list(endpoints)).items()):
            head = sent.get(pk)
            if head is None and not _head_active(lane, ended or set()):
                head = _first_releasable(pk, *endpoints[pk])
            if head is None:
                continue
            changes: dict[str, object] = {"next_attempt_at": now, "enqueued_at": now}
            if claim_token is not None:
                changes |= {"claim_token": claim_token, "claimed_until": claimed_until}
            delivery_id, event_id = head
            if Delivery.objects.filter(parked(), id=delivery_id).update(**changes):
                Lane.objects.filter(pk=pk).update(head_delivery_id=delivery_id)
                released[delivery_id] = event_id
    return released


def _head_sent(
    endpoint_id: int,
    delivery_id: int,
    event_id: int,
    now: datetime,
    claim_token: uuid.UUID | None,
    claimed_until: datetime | None,
) -> bool:
    """lanes_release for a lane whose next delivery the caller sent already, in one statement
    (PostgreSQL): the lane locked, that delivery made its head if it is still parked. The
    recording of an ordered endpoint's head runs this for every delivery of the chain; three
    statements (lock, delivery, lane) were most of its time (docs/delivery-control.md)."""
    params: dict[str, Any] = {
        "endpoint": endpoint_id,
        "delivery_id": delivery_id,
        "event": event_id,
        "now": now,
        "token": claim_token,
        "until": claimed_until,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_HEAD_SENT), params)
        return cursor.fetchone() is not None


# Locks the lane first (the head's UPDATE reads `lane`), as lanes_locked does; the delivery is
# named by its event too, so that PostgreSQL plans and touches that day's partition alone.
# Without a claim, the delivery's claim is left as it is (a parked one holds none).
_HEAD_SENT = """
WITH lane AS (
    SELECT endpoint_id FROM {lane} WHERE endpoint_id = %(endpoint)s FOR UPDATE
), head AS (
    UPDATE {delivery} SET next_attempt_at = %(now)s, enqueued_at = %(now)s,
        claim_token = COALESCE(%(token)s, {delivery}.claim_token),
        claimed_until = COALESCE(%(until)s, {delivery}.claimed_until)
    FROM lane
    WHERE {delivery}.id = %(delivery_id)s AND {delivery}.event_id = %(event)s
        AND {parked}
    RETURNING {delivery}.id
)
UPDATE {lane} SET head_delivery_id = head.id FROM head WHERE {lane}.endpoint_id = %(endpoint)s
RETURNING head.id
""".replace("{parked}", _parked_in("{delivery}"))


def peek(
    heads: dict[int, int], known: "dict[int, tuple[int, list[str]]] | None" = None
) -> dict[int, tuple[int, int]]:
    """The next delivery and its event (endpoint: (delivery, event)) of each of these ordered
    endpoints whose lane's head is the delivery the caller has in flight (`heads`, endpoint:
    delivery), as its lane would release it now: for a caller that loads it, and sends it the
    moment the head succeeds (deliveries.chain). Changes nothing.

    A delivery to an ordered endpoint that is not its lane's head (a test event, a retry left
    on its schedule when ordering was turned on) releases nothing as it ends: the head does."""
    endpoints = known or _ordered(set(heads))
    following = {
        pk: _first_releasable(pk, *endpoints[pk], behind=heads[pk])
        for pk in sorted(endpoints)
        if pk in heads
    }
    return {pk: first for pk, first in following.items() if first is not None}


def lanes_known(deliveries: "list[Claimed]") -> dict[int, tuple[int, list[str]]]:
    """What `lanes_release` and `peek` need of these deliveries' endpoints, from their load."""
    return {d.endpoint_id: (d.environment_id, json_column(d.enabled_events)) for d in deliveries}


def _ordered(endpoint_ids: "set[int] | list[int]") -> dict[int, tuple[int, list[str]]]:
    rows = WebhookEndpoint.objects.filter(id__in=list(endpoint_ids), delivery_order=ORDERED)
    return {
        pk: (environment_id, enabled_events)
        for pk, environment_id, enabled_events in rows.values_list(
            "id", "environment_id", "enabled_events"
        )
    }


def lanes_locked(endpoint_ids: list[int]) -> dict[int, Lane]:
    """The endpoints' lanes, made if need be, locked until the transaction ends; in id order,
    as every writer of several lanes: two never wait on each other in a circle."""
    lanes = _select_locked(endpoint_ids)
    missing = [pk for pk in endpoint_ids if pk not in lanes]
    if missing:
        lanes_make(missing)
        lanes |= _select_locked(missing)
    return lanes


def lanes_make(endpoint_ids: list[int]) -> None:
    """The endpoints' lanes, made where they are missing (a lane is made on first use)."""
    Lane.objects.bulk_create([Lane(endpoint_id=pk) for pk in endpoint_ids], ignore_conflicts=True)


def _select_locked(endpoint_ids: list[int]) -> dict[int, Lane]:
    locked = Lane.objects.select_for_update().filter(endpoint_id__in=endpoint_ids)
    return {lane.endpoint_id: lane for lane in locked.order_by("endpoint_id")}


def _head_active(lane: Lane, ended: set[int]) -> bool:
    """Whether this lane (locked by the caller) has its head in hand; one the caller has just
    `ended` has not."""
    if lane.head_delivery_id is None or lane.head_delivery_id in ended:
        return False
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_HEAD_OF), [lane.endpoint_id])
        return cursor.fetchone() is not None


def _first_releasable(
    endpoint_id: int, environment_id: int, enabled_events: list[str], behind: int | None = None
) -> tuple[int, int] | None:
    """The endpoint's first parked delivery and its event, unless an earlier event it would get
    is still on its way (published, not fanned out yet); with `behind`, only if that delivery
    is the lane's head.

    One statement, so one snapshot: a fan-out commits its deliveries and its event's mark
    together, and this sees both or neither. Two reads, lane lock or not (a fan-out commits
    without it), could see neither the earlier event's delivery nor that event on its way, and
    let the later event go first."""
    statement, params = _FIRST_PARKED, [endpoint_id, environment_id]
    if behind is not None:
        statement, params = _FIRST_PARKED_BEHIND, [endpoint_id, behind, environment_id]
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(statement), params)
        rows = cursor.fetchall()
    if not rows:
        return None
    delivery_id, event_id, _ = rows[0]
    if any(t is not None and filter_matches(enabled_events, t) for _, _, t in rows):
        return None
    return delivery_id, event_id


# The first parked delivery (delivery_parked_idx), with the types of the environment's earlier
# events not fanned out yet (event_fanout_pending_idx): one row, or one per such type.
_FIRST_PARKED = """
SELECT DISTINCT parked.id, parked.event_id, earlier.type
FROM (
    SELECT d.id, d.event_id FROM {delivery} AS d
    WHERE d.endpoint_id = %s AND {parked}{behind}
    ORDER BY d.event_id LIMIT 1
) parked
LEFT JOIN {event} earlier
    ON earlier.environment_id = %s AND earlier.fanned_out_at IS NULL
    AND earlier.id < parked.event_id
""".replace("{parked}", _parked_in("d"))
# The same, behind a given head (its lane's primary key read in the same statement).
_FIRST_PARKED_BEHIND = _FIRST_PARKED.replace(
    "{behind}",
    " AND EXISTS (SELECT 1 FROM {lane} AS lane"
    " WHERE lane.endpoint_id = d.endpoint_id AND lane.head_delivery_id = %s)",
)
_FIRST_PARKED = _FIRST_PARKED.replace("{behind}", "")


def lanes_idle(endpoint_ids: list[int]) -> list[int]:
    """Of these ordered endpoints, those with no head in hand, read without their lanes' locks:
    the ones a delivery just committed to them may have to be released for. A head in hand
    releases it as it ends, if this read missed that end: the end's recording, finding nothing
    to release, looks again after its COMMIT (lanes_stalled), and sees what was committed
    before this read."""
    if not endpoint_ids:
        return []
    # Written out: every fan-out to an ordered endpoint asks this, and building it in the ORM
    # was a third of its time in a busy worker (docs/delivery-control.md).
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_BUSY, ids=sql.marks(endpoint_ids)), endpoint_ids)
        busy = {pk for (pk,) in cursor.fetchall()}
    return [pk for pk in endpoint_ids if pk not in busy]


# A lane's head in hand: its head delivery pending and due at some time (any delivery not
# `parked` is, until it ends). The one definition, for the fan-outs' question (lanes_idle),
# the recordings' and the sweep's (lanes_stalled) and a release's under the lane's lock.
_HEAD_IN_HAND = """EXISTS (
    SELECT 1 FROM {delivery} AS head
    WHERE head.id = lane.head_delivery_id
        AND head.status = {PENDING} AND head.next_attempt_at IS NOT NULL
)"""
_HEAD_OF = """
SELECT 1 FROM {lane} AS lane WHERE lane.endpoint_id = %s AND {head_in_hand}
""".replace("{head_in_hand}", _HEAD_IN_HAND)
_BUSY = """
SELECT lane.endpoint_id FROM {lane} AS lane
WHERE lane.endpoint_id IN ({ids}) AND {head_in_hand}
""".replace("{head_in_hand}", _HEAD_IN_HAND)
# Enabled ordered endpoints' lanes with parked deliveries (`parked`: delivery_parked_idx) and
# no head in hand.
_STALLED = """
SELECT lane.endpoint_id FROM {lane} AS lane
JOIN {endpoint} AS endpoint ON endpoint.id = lane.endpoint_id
WHERE endpoint.delivery_order = {ORDERED} AND endpoint.status = {ENABLED}
    AND endpoint.deleted_at IS NULL{among}
    AND NOT {head_in_hand}
    AND EXISTS (
        SELECT 1 FROM {delivery} AS parked
        WHERE parked.endpoint_id = lane.endpoint_id AND {parked}
    )
LIMIT 1000
""".replace("{head_in_hand}", _HEAD_IN_HAND).replace("{parked}", _parked_in("parked"))


def heads_held(endpoint_ids: list[int], token: uuid.UUID) -> dict[int, int]:
    """The heads of these endpoints' lanes that `token` holds (delivery: its event)."""
    heads = Lane.objects.filter(endpoint_id__in=endpoint_ids).values("head_delivery_id")
    held = Delivery.objects.filter(id__in=Subquery(heads), claim_token=token)
    return dict(held.values_list("id", "event_id"))


def lanes_stalled(endpoint_ids: "Collection[int] | None" = None) -> list[int]:
    """Enabled ordered endpoints (of these, if given) with parked deliveries and no head in
    hand: the sweep's safety net (a head cancelled by hand, an earlier event that turned out
    not to match), and a recording's second look after its COMMIT. At most 1,000 a call."""
    ids = list(endpoint_ids) if endpoint_ids is not None else None
    if ids == []:
        return []
    among = f" AND lane.endpoint_id IN ({sql.marks(ids)})" if ids else ""
    statement = sql.statement(_STALLED, among=among)
    with connection.cursor() as cursor:
        cursor.execute(statement, ids or [])
        return [pk for (pk,) in cursor.fetchall()]


def ordering_changed(*, endpoint_id: int, ordered: bool) -> list[int]:
    """Ordering on parks the endpoint's deliveries not attempted yet (and not in a worker's
    hands); off makes every parked one due (the sweep queues them). In the caller's
    transaction; returns the ids to queue after commit."""
    now = timezone.now()
    if ordered:
        not_attempted = (
            Delivery.objects.filter(
                unclaimed(now), endpoint_id=endpoint_id, status=PENDING, attempt_count=0
            )
            .order_by()
            # A row a worker holds locked is in its hands: it goes out unordered, as it would
            # have a moment earlier. Waiting could deadlock with a worker recording it.
            .select_for_update(skip_locked=True, of=("self",))
            .values("id")
        )
        Delivery.objects.filter(id__in=not_attempted).update(next_attempt_at=None, enqueued_at=None)
        return list(lanes_release(endpoint_ids=[endpoint_id], now=now))
    # Due now and queued by the next sweep: a backlog of any size in one statement.
    Delivery.objects.filter(parked(), endpoint_id=endpoint_id).update(
        next_attempt_at=now, enqueued_at=None
    )
    Lane.objects.filter(endpoint_id=endpoint_id).update(head_delivery_id=None)
    return []
