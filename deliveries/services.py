"""Writes for events and deliveries: publish, fan out, enqueue, sweep, retry, cancel.

The life of an event:
1. `event_publish` stores the event, with its body encoded once, in the producer's
   transaction; after commit a fan-out task is queued (the event row is the outbox).
2. `event_fan_out` makes one delivery per matching enabled endpoint, in bulk, and returns
   their ids after commit; its caller (deliveries.tasks.fan_out_task) sends the first batch
   itself and queues send tasks for the rest.
3. `deliveries.dispatch.deliveries_send` claims, signs, sends and records a batch (the engine's
   rooms: claiming, admission, sending, recording, health).
4. `deliveries_sweep` (every worker process, every WEBHOOKS_SWEEP_INTERVAL, one at a time)
   queues what is due again: retries,
   deliveries whose task the broker lost, claims of workers that died, events never fanned out.
PostgreSQL says what is due; the broker only carries ids, and losing it loses nothing.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Q
from django.utils import timezone

from accounts.models import Environment
from core import tracing
from core.errors import InvalidInput
from core.locks import transaction_lock_timeout, try_transaction_lock
from core.times import api_datetime
from deliveries import claiming, metrics, ordering, queue, sql, transient
from deliveries.models import Delivery, Event, new_delivery_id
from deliveries.selectors import deliveries_due, events_not_fanned_out, unclaimed
from webhooks.catalog import TEST_EVENT_TYPE, filter_matches, is_known, is_operational
from webhooks.models import WebhookEndpoint
from webhooks.selectors import enabled_endpoint_filters

SWEEP_LIMIT = 5000
# A sweep that waits this long for a lock gives up its turn (core.locks.transaction_lock_timeout).
SWEEP_LOCK_TIMEOUT_MS = 500


def event_body(event: Event, environment: Environment, data: dict[str, Any]) -> str:
    """The delivery payload. ASCII-only JSON: the signed bytes survive any re-encoding."""
    return json.dumps(
        {
            "id": event.public_id,
            "object": "event",
            "type": event.type,
            "api_version": event.api_version,
            "environment": environment.name,
            "created_at": api_datetime(event.created_at),
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


_DATA_MEMBER = ',"data":'


def event_body_parts(body: str) -> tuple[str, str]:
    """A body event_body wrote, split into that body with `data` null and `data`'s own JSON
    (written last, so it ends one character before the body does)."""
    at = body.index(_DATA_MEMBER) + len(_DATA_MEMBER)
    return body[:at] + "null}", body[at:-1]


def event_born_fanned_out(
    environment: Environment, type: str, data: dict[str, Any], at: datetime
) -> Event:
    """An event made at `at`, not saved, marked fanned out already: its deliveries are the
    caller's to make (a test event's one, or a benchmark's in bulk), and no fan-out adds any."""
    event = Event(
        environment=environment,
        type=type,
        api_version=settings.API_VERSIONS[-1],
        created_at=at,
        fanned_out_at=at,
    )
    event.body = event_body(event, environment, data)
    return event


@tracing.traced("webhook.publish")
def event_publish(
    *,
    environment: Environment,
    type: str,  # the event's field name
    data: dict[str, Any] | None = None,
    api_version: str | None = None,
    operational: bool = False,
) -> Event:
    """Publishes an event in the caller's transaction: it exists (and will be delivered to
    every matching endpoint) only if that transaction commits. `operational`: one of the
    service's own (deliveries.operational), whose data the endpoint's limits bound instead."""
    if not isinstance(type, str) or not is_known(type):
        raise InvalidInput(
            "type", f"Unknown event type {str(type)[:100]!r}; see GET /v1/event_types."
        )
    if is_operational(type) and not operational:
        raise InvalidInput(
            "type", f"{type!r} is published by the service itself; producers cannot publish it."
        )
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InvalidInput("data", "data must be a JSON object.")
    event = Event(
        environment=environment,
        type=type,
        api_version=api_version or settings.API_VERSIONS[-1],
        created_at=timezone.now(),
    )
    try:
        # allow_nan=False: NaN and Infinity are Python's, not JSON's; written into a body, they
        # broke every receiver's parser (a float past 1e308 from the command or a caller).
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise InvalidInput(
            "data", "data must be JSON: objects, arrays, strings, finite numbers, booleans, null."
        ) from None
    data_size = len(encoded)
    limit = settings.WEBHOOKS_EVENT_DATA_MAX_BYTES
    if data_size > limit and not operational:
        raise InvalidInput("data", f"data is {data_size} bytes encoded; the limit is {limit}.")
    event.body = event_body(event, environment, data)
    event.save()
    event_id = event.pk
    tracing.annotate("webhook.event_id", event.public_id)
    tracing.annotate("webhook.event_pk", event_id)
    # robust: a broker that is down must not fail a publish that committed; the sweep queues
    # the fan-out of any event left behind. Queued in the publish's trace, if any.
    queue_fan_out = tracing.continued(lambda: queue.fan_out_queue([event_id]))
    transaction.on_commit(queue_fan_out, robust=True)
    return event


@dataclass(frozen=True)
class FirstClaim:
    """The first `count` deliveries of a fan-out are made claimed with `token` until `until`,
    for a caller that sends them at once: no UPDATE to claim them afterwards, one less write
    per delivery. If the caller dies, they are due again when the claim runs out.

    `claimed` is filled by the fan-out as each part commits (delivery: its event): the first
    batch, and what ordered endpoints' lanes released, which may be an earlier event's
    delivery. The caller sends exactly these, loaded from their events' partitions
    (claiming.load), even when a retry of the fan-out returns nothing."""

    token: uuid.UUID
    until: datetime
    count: int
    claimed: dict[int, int] = field(default_factory=dict)

    @classmethod
    def starting_now(cls, count: int) -> "FirstClaim":
        """A claim on `count` deliveries for a caller about to send them, for one lease."""
        lease = timedelta(seconds=claiming.lease_seconds())
        return cls(token=uuid.uuid4(), until=timezone.now() + lease, count=count)


def event_fan_out(*, event_id: int, first_claim: FirstClaim | None = None) -> list[int]:
    """One delivery per enabled endpoint of the event's environment whose filter matches.

    Runs once per event however often it is called (the event row is locked and marked;
    deliveries are unique per event and endpoint). Returns the ids of the deliveries made,
    committed and marked enqueued: the caller sends them or queues them (and if it dies
    first, the sweep queues them again), the first ones claimed if `first_claim` says so.
    """
    now = sql.db_time(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        # Marking the event takes its row lock until commit: a second run waits, then finds it
        # marked and makes nothing.
        cursor.execute(sql.statement(_FAN_OUT_MARK), [now, event_id])
        marked = cursor.fetchone()
        if marked is None:
            return []
        environment_id, event_type = marked
        candidates = enabled_endpoint_filters(environment_id=environment_id)
        matched = [
            (pk, ordered)
            for pk, events, ordered in candidates
            if filter_matches(events, event_type)
        ]
        still = _still_ordered(cursor, [pk for pk, ordered in matched if ordered])
        matched = [(pk, ordered and pk in still) for pk, ordered in matched]
        claimed = 0 if first_claim is None else first_claim.count
        # An ordered endpoint's delivery is born parked (deliveries.ordering): not due, not
        # queued, not claimed, until its lane releases it.
        states = [
            _PARKED if ordered else _CLAIMED if i < claimed else _QUEUED
            for i, (_, ordered) in enumerate(matched)
        ]
        made: list[tuple[int, bool, bool]] = []
        for start in range(0, len(matched), FAN_OUT_CHUNK):
            chunk = slice(start, start + FAN_OUT_CHUNK)
            endpoint_ids = [pk for pk, _ in matched[chunk]]
            insert = _fan_out_insert(event_id, endpoint_ids, states[chunk], now, first_claim)
            cursor.execute(*insert)
            made += cursor.fetchall()
        ordered_ids = [pk for pk, ordered in matched if ordered]
        filters = {pk: events for pk, events, _ in candidates}
        held = [pk for pk, claimed_now, _ in made if claimed_now]
        queued = [pk for pk, claimed_now, was_parked in made if not claimed_now and not was_parked]
    if first_claim is not None:
        first_claim.claimed.update(dict.fromkeys(held, event_id))
    # After the COMMIT, and only for lanes with no head in hand: a busy ordered endpoint's
    # head, as it ends, releases the next delivery, this one among them. Taking each lane's
    # lock in every fan-out kept that recording waiting behind the queue of fan-outs, and the
    # endpoint's line with it (docs/delivery-control.md). Committed first, this delivery is
    # seen by the recording of a head that ends after this looks (ordering.lanes_idle).
    # Tried again here on its own: the event is marked, so a retry of the whole fan-out would
    # make nothing, and leave its first batch claimed and unsent until the claim ran out.
    release = partial(
        _lanes_release_idle,
        ordered_ids,
        {pk: (environment_id, filters[pk]) for pk in ordered_ids},
        first_claim,
    )
    released = transient.retrying(
        release, "releasing ordered endpoints' lanes", again=partial(release, again=True)
    )
    if first_claim is not None:
        first_claim.claimed.update(released)
        # The claimed ones first, whatever order RETURNING gave them in; of the parked ones
        # only those their lane released (claimed as the first batch is).
        return held + list(released) + queued
    return held + queued + list(released)


def _lanes_release_idle(
    ordered_ids: list[int],
    known: dict[int, tuple[int, list[str]]],
    first_claim: FirstClaim | None,
    *,
    again: bool = False,
) -> dict[int, int]:
    """Releases the lanes of these ordered endpoints that have no head in hand (a fan-out's,
    after its COMMIT). A lane may release an earlier event's delivery than the fan-out's own:
    one whose fan-out committed and has not come to this point yet.

    Run `again` after an error, it also returns the heads the claim holds already: a run whose
    COMMIT's answer was lost released them, and the lanes it left busy are no longer idle. Not
    sent here, they would wait out the claim (75 s)."""
    idle = ordering.lanes_idle(ordered_ids)
    released = ordering.lanes_release(
        endpoint_ids=idle,
        known={pk: known[pk] for pk in idle},
        claim_token=None if first_claim is None else first_claim.token,
        claimed_until=None if first_claim is None else first_claim.until,
    )
    if again and first_claim is not None:
        released |= ordering.heads_held(ordered_ids, first_claim.token)
    return released


# Written out (see deliveries.sql): fan-out runs for every event, and for an event to 10,000
# endpoints building model instances cost more than the INSERT.
FAN_OUT_CHUNK = 1000
_FAN_OUT_MARK = """
UPDATE {event} SET fanned_out_at = %s WHERE id = %s AND fanned_out_at IS NULL
RETURNING environment_id, type
"""
# What a new delivery is born: due and queued (its task is the caller's), claimed by the
# caller's first batch as well, or parked behind its ordered endpoint's lane.
_QUEUED, _CLAIMED, _PARKED = 0, 1, 2
# The ordered endpoints among these, their rows share-locked until the fan-out commits.
_STILL_ORDERED = """
SELECT id FROM {endpoint} WHERE id IN ({ids}) AND delivery_order = {ORDERED}{lock}
"""


def _still_ordered(cursor: Any, endpoint_ids: list[int]) -> set[int]:
    """Which of these endpoints, read as ordered, still are, held so until the fan-out commits.
    Ordering turned off releases the endpoint's parked deliveries, and only sees committed
    ones: parked by a fan-out that read the endpoint before the change and committed after
    it, a delivery would have waited in a line nobody releases. With the row share-locked, a
    change of ordering waits for this fan-out's commit (and then releases what it parked); one
    made first is what this reads, after waiting for it."""
    if not endpoint_ids:
        return set()
    lock = " FOR SHARE" if connection.vendor == "postgresql" else ""  # SQLite: one writer
    statement = sql.statement(_STILL_ORDERED, ids=sql.marks(endpoint_ids), lock=lock)
    cursor.execute(statement, endpoint_ids)
    return {pk for (pk,) in cursor.fetchall()}


def _fan_out_insert(
    event_id: int,
    endpoint_ids: list[int],
    states: list[int],
    now: Any,
    first_claim: FirstClaim | None,
) -> tuple[str, list[Any]]:
    """The INSERT of one chunk of an event's deliveries, and its parameters."""
    until, token = (None, None) if first_claim is None else (first_claim.until, first_claim.token)
    claim = [sql.db_time(until), sql.db_uuid(token)]
    if connection.vendor == "postgresql":
        arrays = [sql.array(new_delivery_id() for _ in endpoint_ids), sql.array(endpoint_ids)]
        return sql.statement(_FAN_OUT_UNNEST), [
            event_id, now, now, now, *claim, *_fan_out_defaults(), *arrays, sql.array(states)
        ]  # fmt: skip
    params: list[Any] = []
    for endpoint_id, state in zip(endpoint_ids, states, strict=True):
        params += [new_delivery_id(), event_id, endpoint_id, now]
        if state == _PARKED:
            params += [None, None, None, None]
        else:
            params += [now, now, *(claim if state == _CLAIMED else [None, None])]
        params += _fan_out_defaults()
    row = f"({sql.marks(_FAN_OUT_COLUMNS)})"
    return sql.statement(_FAN_OUT_INSERT, rows=sql.rows(row, len(endpoint_ids))), params


# A new delivery's columns: these set per delivery, then the model's defaults for the rest.
_FAN_OUT_SET = (
    "public_id",
    "event_id",
    "endpoint_id",
    "created_at",
    "next_attempt_at",
    "enqueued_at",
    "claimed_until",
    "claim_token",
)
_FAN_OUT_DEFAULTED = ("status", "attempt_count", "last_error")
_FAN_OUT_COLUMNS = _FAN_OUT_SET + _FAN_OUT_DEFAULTED
_FAN_OUT_INSERT = f"""
INSERT INTO {{delivery}} ({", ".join(_FAN_OUT_COLUMNS)})
VALUES {{rows}}
RETURNING id, claimed_until IS NOT NULL, next_attempt_at IS NULL
"""  # noqa: S608  the model's column names; values are parameters
# The same on PostgreSQL, with what varies per delivery in three arrays (public id, endpoint,
# state) and the rest written once: one text for every size of fan-out. With the values
# written out a row each, psycopg parsed the statement anew on every call (past 50
# parameters it caches nothing) and wrote out the same times again for every row: ten times
# as long, for an event to 11 endpoints, as the whole statement takes now
# (docs/delivery-control.md).
_FAN_OUT_UNNEST = f"""
INSERT INTO {{delivery}} ({", ".join(_FAN_OUT_COLUMNS)})
SELECT r.public_id, %s, r.endpoint_id, %s,
    CASE WHEN r.state <> {_PARKED} THEN %s::timestamptz END,
    CASE WHEN r.state <> {_PARKED} THEN %s::timestamptz END,
    CASE WHEN r.state = {_CLAIMED} THEN %s::timestamptz END,
    CASE WHEN r.state = {_CLAIMED} THEN %s::uuid END,
    {", ".join(["%s"] * len(_FAN_OUT_DEFAULTED))}
FROM unnest(%s::text[], %s::bigint[], %s::smallint[]) AS r(public_id, endpoint_id, state)
RETURNING id, claimed_until IS NOT NULL, next_attempt_at IS NULL
"""  # noqa: S608  the model's column names; values are parameters


@cache
def _fan_out_defaults() -> list[Any]:
    """The model's defaults for the columns a fan-out does not set, as the database takes
    them."""
    fields = [Delivery._meta.get_field(name) for name in _FAN_OUT_DEFAULTED]
    return [
        field.get_db_prep_save(field.get_default(), connection)
        for field in fields
        if isinstance(field, Field)  # all of them: concrete columns
    ]


def deliveries_sweep(*, now: datetime | None = None) -> int:
    """Queues every delivery that is due and has no live task or claim; returns how many.

    Every worker process sweeps (deliveries.dispatch), so retries do not wait on any one
    process; one sweep runs at a time (a transaction lock), the others skip their turn."""
    with transaction.atomic():
        if not try_transaction_lock("deliveries:sweep"):
            return 0
        transaction_lock_timeout(SWEEP_LOCK_TIMEOUT_MS)
        return _sweep(now or timezone.now())


def _sweep(now: datetime) -> int:
    stale = now - timedelta(seconds=settings.WEBHOOKS_REENQUEUE_AFTER)
    event_of = dict(
        deliveries_due(now)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
        .order_by("next_attempt_at")
        .values_list("id", "event_id")[:SWEEP_LIMIT]
    )
    ids = list(event_of)
    if ids:
        # With their events, PostgreSQL looks in those days' partitions only.
        events = set(event_of.values())
        Delivery.objects.filter(id__in=ids, event_id__in=events).update(enqueued_at=now)
        # After the COMMIT: until then the UPDATE holds these rows locked, and a worker quick
        # to take the task would skip them (SKIP LOCKED) and send nothing.
        transaction.on_commit(lambda: queue.deliveries_queue(ids, event_of), robust=True)
    lost_events = list(
        # Not fanned out this long after publishing: its fan-out task was lost.
        events_not_fanned_out(stale).order_by("created_at").values_list("id", flat=True)[:100]
    )
    transaction.on_commit(lambda: queue.fan_out_queue(lost_events), robust=True)
    released = ordering.lanes_release(endpoint_ids=ordering.lanes_stalled(), now=now)
    transaction.on_commit(lambda: queue.deliveries_queue(list(released), released), robust=True)
    return len(ids) + len(released)


def delivery_retry_now(*, delivery: Delivery) -> Delivery:
    """Sends the delivery again now, whatever its state, as one more attempt; refused while an
    attempt of it is in flight (held by a worker's live claim), and while its endpoint is
    disabled or deleted (nothing is sent to it: the worker would cancel it).

    That attempt's outcome would overwrite the request: a success marks it succeeded, a failure
    schedules the next retry by the backoff schedule, and the retry asked for would be lost
    while the caller was told it was pending. The check and the change are one UPDATE, so a
    worker cannot claim the delivery in between.
    """
    if not delivery.endpoint.is_enabled:
        raise InvalidInput(
            "delivery_id",
            "The delivery's webhook endpoint is disabled or deleted; enable it first.",
        )
    now = timezone.now()
    # An ordered endpoint's delivery takes its place in the line (deliveries.ordering).
    ordered = delivery.endpoint.is_ordered
    requeued = (
        Delivery.objects.filter(pk=delivery.pk)
        .filter(unclaimed(now))
        .update(
            status=Delivery.Status.PENDING,
            next_attempt_at=None if ordered else now,
            completed_at=None,
            enqueued_at=None if ordered else now,
        )
    )
    if not requeued:
        raise InvalidInput(
            "delivery_id",
            "An attempt of this delivery is in progress; retry it once that attempt has ended.",
        )
    released = {delivery.pk: delivery.event_id}
    if ordered:
        released = ordering.lanes_release(endpoint_ids=[delivery.endpoint_id], now=now)
    delivery.refresh_from_db()
    transaction.on_commit(lambda: queue.deliveries_queue(list(released), released), robust=True)
    return delivery


def endpoint_deliveries_cancel(*, endpoint_ids: list[int], reason: str) -> int:
    """Nothing queued is sent to a disabled or deleted endpoint.

    Rows a worker holds locked right now are skipped, never waited for: they are being
    claimed or recorded, that is in flight, and a worker checks the endpoint when it next
    claims them (dispatch: cancelled then). Waiting deadlocked: the caller (an API DELETE or
    PATCH, the admin) has already updated the endpoint's row, and a worker recording attempts
    locks their deliveries and then that endpoint's row for its failure streak."""
    in_hand = (
        Delivery.objects.filter(endpoint_id__in=endpoint_ids, status=Delivery.Status.PENDING)
        .order_by()
        .select_for_update(skip_locked=True, of=("self",))
        .values("id")
    )
    cancelled = Delivery.objects.filter(id__in=in_hand).update(
        status=Delivery.Status.CANCELLED,
        completed_at=timezone.now(),
        next_attempt_at=None,
        last_error=reason[:200],
    )
    metrics.DELIVERIES_CANCELLED.inc(cancelled)
    return cancelled


def endpoint_test_event_send(
    *, endpoint: WebhookEndpoint, first_claim: FirstClaim | None = None
) -> Delivery:
    """Sends a `ping` event to this one endpoint, whatever its enabled_events (POST
    /v1/webhook_endpoints/{id}/test, the portal's and the console's "send test event").
    Returns its delivery, queued; or, with `first_claim`, made claimed with it and not queued,
    for a caller that sends it at once (the API does, to answer with the attempt's outcome).
    Made claimed, no worker's top-up can take it before that caller does, and the caller's
    claim compares no clock with the one that made it due.

    The event is born fanned out, with its single delivery, so no other endpoint gets it;
    signing, sending, retries and the attempt record are those of every delivery.
    """
    if not endpoint.is_enabled:
        # The sender cancels deliveries to disabled endpoints: a test would never leave.
        raise InvalidInput("webhook_endpoint_id", "Only an enabled endpoint can get a test event.")
    environment = endpoint.environment
    now = timezone.now()
    with transaction.atomic():
        data = {"webhook_endpoint_id": endpoint.public_id}
        event = event_born_fanned_out(environment, TEST_EVENT_TYPE, data, now)
        event.save()
        delivery = Delivery.objects.create(
            event=event,
            endpoint=endpoint,
            created_at=now,
            next_attempt_at=now,
            enqueued_at=now,
            claim_token=None if first_claim is None else first_claim.token,
            claimed_until=None if first_claim is None else first_claim.until,
        )
        if first_claim is None:
            delivery_id = delivery.pk
            transaction.on_commit(lambda: queue.deliveries_queue([delivery_id]), robust=True)
    if first_claim is not None:
        first_claim.claimed[delivery.pk] = event.pk
    return delivery
