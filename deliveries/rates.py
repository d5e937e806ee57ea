"""Per-endpoint rate limits, enforced across every worker process.

A rate-limited endpoint's `Lane` holds its next free slot (GCRA's "theoretical arrival time"):
a delivery may start at that slot, and taking it moves the slot on by 1/rate seconds (a little
more: `step`). A batch takes its deliveries' slots of each lane in one statement, under the
lane's row lock, so however many workers claim an endpoint's deliveries, their starts are that
far apart and no second holds more than `rate` + 1 of them. Slots are taken at most
HORIZON_SECONDS ahead: a delivery whose slot is later goes back to the database, due shortly
before its slot, with no attempt counted; one whose slot is near waits in its worker for it,
without a sending thread until a few steps before it (admission.Timetable, handover_seconds);
the same statement sends the others back.

A request starts only within LATE_SECONDS of its slot (`slot_kept`). One that comes to it later
(its process starved of CPU or stopped, or it waited for a place) would go out beside the next
slot, which another process may hold: it is not sent, but takes another slot under its claim
and waits for it (dispatch.Engine._slot_again; an ordered endpoint's is let go unattempted,
due at once). Each slot is given once, so starting needs no database: a request on time
starts at its slot without a statement, whatever the database does meanwhile.

PostgreSQL rather than Redis holds the slots: it is already where every worker decides what is
due, under the same transactions; the broker may be another server (or none, in `bin/dev`),
and a Redis flush would forget the slots and let a burst through. The cost is one row lock per
rate-limited endpoint per batch, paid only by rate-limited endpoints, and held for one
statement.
"""

import logging
import math
import queue
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from deliveries import sql, transient
from deliveries.claiming import Claimed, postpone
from deliveries.models import Delivery, Lane
from deliveries.ordering import lanes_locked, lanes_make
from deliveries.selectors import unclaimed

logger = logging.getLogger(__name__)

# How far ahead a worker takes slots: within the claim's lease by a wide margin.
HORIZON_SECONDS = 5.0
# A request that would start later than this after its slot is not sent (slot_kept).
LATE_SECONDS = 0.03
# What a busy interpreter may add between that check and the start the attempt records.
START_SLACK_SECONDS = 0.01
# Slots are at least this much wider than 1/rate: room for the workers' clocks to differ.
MIN_PACE = 1.01
# How long the slot thread gathers batches for endpoints with a line (SlotTaker): their
# deliveries go behind it, due a second or more later, and lose nothing by waiting; a batch for
# any other endpoint ends the gathering.
GATHER_SECONDS = 0.5
# A delivery sent back to the database is due this long before its expected slot, so that a
# worker has it in hand when its slot comes.
LEAD_SECONDS = 1.0
# A delivery waiting for its slot goes to a sending thread this many steps before it (at most
# HANDOVER_MAX_SECONDS): the thread then waits for the slot, rather than arrive after it.
HANDOVER_STEPS = 3
HANDOVER_MAX_SECONDS = 0.1
# A rate-limited endpoint's requests in flight per process (places): its rate times
# PLACE_SECONDS, up to the process's sending threads divided by PLACES_SHARE.
PLACE_SECONDS = 0.5
PLACES_SHARE = 4


def step(rate: int) -> float:
    """Seconds between an endpoint's slots: pace / rate, pace being the narrowest widening of
    1/rate that keeps any one second to rate + 1 starts. A start leaves within LATE + SLACK of
    its slot, so one second's starts have their slots within 1 + LATE + SLACK seconds, and
    slots pace / rate apart put at most
    (1 + LATE + SLACK) * rate / pace of them there: pace is 2% over 1 at 50/s, 4% at
    10,000/s, and MIN_PACE under 34/s."""
    pace = max(MIN_PACE, (1 + LATE_SECONDS + START_SLACK_SECONDS) / (1 + 1 / rate))
    return pace / rate


@dataclass
class Slots:
    starts: dict[int, datetime] = field(default_factory=dict)  # delivery: when it may start
    # delivery: when it is due again, back in the database already (the slot statement sent
    # it back): not to be sent, nor postponed again
    later: dict[int, datetime] = field(default_factory=dict)
    # endpoint: when the first and the last of its deliveries in `later` are due again
    sent_back: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)

    def of(self, deliveries: list[Claimed]) -> "Slots":
        """What these deliveries were given, of a take for several batches (SlotTaker)."""
        back = {d.endpoint_id for d in deliveries if d.pk in self.later}
        return Slots(
            {d.pk: self.starts[d.pk] for d in deliveries if d.pk in self.starts},
            {d.pk: self.later[d.pk] for d in deliveries if d.pk in self.later},
            {pk: self.sent_back[pk] for pk in back if pk in self.sent_back},
        )


def handover_seconds(rate: int) -> float:
    """How long before its slot a delivery is handed to a sending thread. On a busy worker the
    sending threads' queue holds a handed delivery up for tens of milliseconds, and one that
    reaches its thread more than LATE_SECONDS after its slot is not sent: the slot goes unused,
    and the endpoint loses it from its rate. Handed over early, a few requests wait for their
    slots on their threads instead."""
    return min(HANDOVER_MAX_SECONDS, HANDOVER_STEPS * step(rate))


def places(rate: int) -> int:
    """How many requests to a rate-limited endpoint one process may have in flight: half a
    second of its rate, within a quarter of the sending threads, never under
    WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT. A delivery takes its place at its slot
    (Engine._at_slot_send); one that finds none free waits for one, and is not sent if its
    slot has gone by meanwhile. The rate already bounds how many start, and the places bound
    only what a slow endpoint holds up, on threads of its own (Engine.paced). Measured in
    docs/delivery-control.md."""
    share = int(settings.WEBHOOKS_SEND_THREADS) // PLACES_SHARE
    wanted = min(math.ceil(rate * PLACE_SECONDS), share)
    return max(int(settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT), wanted)


def lead_seconds() -> float:
    """How long before its expected slot a delivery sent back to the database is due again."""
    return min(LEAD_SECONDS, horizon() / 2)


def horizon() -> float:
    return min(HORIZON_SECONDS, float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN) / 2)


def slots_take(held: list[tuple[Claimed, uuid.UUID]], *, refills: bool = True) -> Slots:
    """The start time of each of these deliveries to rate-limited endpoints (each with the
    token that holds its claim) whose slot falls within the horizon; the others sent back to
    the database (their claims let go), and when they are due again. One statement per
    endpoint, committed at once, whichever batches the deliveries came in (SlotTaker).
    `refills`: the caller's process takes back what an unordered endpoint's sends back as it
    comes due (dispatch.Engine.refill_at); without, the sweep does."""
    by_endpoint: defaultdict[int, list[tuple[Claimed, uuid.UUID]]] = defaultdict(list)
    for delivery, token in held:
        if delivery.rate_limit:
            by_endpoint[delivery.endpoint_id].append((delivery, token))
    slots = Slots()
    for endpoint_id, batch in sorted(by_endpoint.items()):
        # Those due again after waiting first: they were due before the others.
        waiting = sorted(batch, key=lambda pair: not pair[0].returning)
        spacing = timedelta(seconds=step(waiting[0][0].rate_limit))  # type: ignore[arg-type]
        lead = timedelta(seconds=lead_seconds())
        returning = sum(1 for d, _ in waiting if d.returning)
        # An unordered endpoint's sent back are this process's to take back (Engine.refill_at).
        refilled = refills and not waiting[0][0].ordered
        taking = _Taking(len(waiting), returning, spacing, lead, timezone.now(), refilled)
        take = _take_in_one_statement if connection.vendor == "postgresql" else _take_locked
        first, taken, tail = take(endpoint_id, taking, waiting)
        for i, (delivery, _) in enumerate(waiting[:taken]):
            slots.starts[delivery.pk] = first + i * spacing
        # Behind those sent back before: a backlog comes due a slot apart, not all at once.
        for j, (delivery, _) in enumerate(waiting[taken:]):
            slots.later[delivery.pk] = tail + j * spacing
        if taken < len(waiting):
            slots.sent_back[endpoint_id] = (tail, tail + (len(waiting) - taken - 1) * spacing)
    return slots


class SlotTaker:
    """Takes the slots of one worker process's batches on one thread, with its own connection
    (like the recorder's): a batch hands over its deliveries to unordered rate-limited endpoints
    and goes on with the others; `take`'s future gives their slots.

    While an endpoint has a line (deliveries sent back to the database and not due yet), each
    event's fan-out brings it one new delivery, which only goes behind the line. Taken in a
    statement of its own each, with the lane's lock, those were most of what a backlogged
    endpoint cost the others (docs/delivery-control.md). While the batches asked for are all
    new deliveries for such endpoints, the thread gathers them for up to GATHER_SECONDS, and
    takes their slots in one statement per endpoint; any other batch (another endpoint's, or
    the line's own deliveries due again) is taken at once, with what was gathered so far."""

    def __init__(self) -> None:
        # None: close, once what was asked before is taken.
        self._requests: queue.SimpleQueue[_SlotRequest | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lines: dict[int, datetime] = {}  # endpoint: when its line ends, as last taken here
        # While the thread gathers: until when, and the batches held for it meanwhile.
        self._gathering: datetime | None = None
        self._held: list[_SlotRequest] = []

    def take(self, deliveries: list[Claimed], token: uuid.UUID) -> "Future[Slots]":
        request = _SlotRequest(deliveries, token, Future())
        with self._lock:
            if self._closed:  # a worker shutting down: their claims are released (Engine)
                request.slots.set_exception(RuntimeError("the slot thread is closed"))
                return request.slots
            if self._thread is None:
                # A daemon: what it holds at exit is claimed, and due again when the claims lapse.
                self._thread = threading.Thread(target=self._run, name="webhook-rate", daemon=True)
                self._thread.start()
            if self._gathering is not None and self._behind_lines(request, self._gathering):
                # Taken with the gathering, without waking the thread: each wake-up of another
                # thread in a busy process cost the sending threads more than the put itself
                # (docs/delivery-control.md).
                self._held.append(request)
            else:
                self._requests.put(request)
        return request.slots

    def close(self, *, wait: float = 0.0, **_: Any) -> None:
        """Takes the slots asked for so far, then closes the thread's connection and ends it;
        waits up to `wait` seconds for that."""
        with self._lock:
            self._closed, thread = True, self._thread
            self._requests.put(None)
        if thread is not None and wait:
            thread.join(wait)

    def _run(self) -> None:
        tend, failed, closing = transient.Tending(), False, False
        while not closing:
            gathered, closing = self._gather()
            if not gathered:
                break
            tend(failed=failed)
            failed = False
            held = [(d, request.token) for request in gathered for d in request.deliveries]
            try:
                slots = transient.retrying(partial(slots_take, held), "taking rate slots")
            except Exception as error:  # released, or left to lapse (Engine._slots_came)
                logger.warning("taking rate-limit slots failed: %s", error)
                failed = True
                for request in gathered:
                    request.slots.set_exception(error)
                continue
            with self._lock:
                for endpoint_id, (_, last) in slots.sent_back.items():
                    self._lines[endpoint_id] = last
            for request in gathered:
                request.slots.set_result(slots.of(request.deliveries))
        connection.close()

    def _gather(self) -> "tuple[list[_SlotRequest], bool]":
        """The requests waiting, and whether the thread is to close after them. While every
        request so far is for endpoints with a line, also those that come within
        GATHER_SECONDS, and before the first of those lines ends: those that `take` holds
        for it, and those that come on the queue (any other request ends the gathering)."""
        first = self._requests.get()
        if first is None:
            return [], True
        gathered, closing = [first], False
        now = timezone.now()
        with self._lock:
            self._lines = {pk: end for pk, end in self._lines.items() if end > now}
            until = self._gather_until(first, now)
            self._gathering = until if until > now else None
        while True:
            wait = (until - timezone.now()).total_seconds()
            try:
                request = self._requests.get(block=wait > 0, timeout=max(wait, 0.0))
            except queue.Empty:
                break
            if request is None:
                closing = True
                break
            gathered.append(request)
            until = min(until, self._gather_until(request, now))
        with self._lock:
            gathered += self._held
            self._gathering, self._held = None, []
        return gathered, closing

    def _gather_until(self, request: "_SlotRequest", now: datetime) -> datetime:
        """Until when this request may wait to be taken with others: while its endpoints'
        lines last, up to GATHER_SECONDS; not at all for one without a line, or due again from
        one, whose slots may be free now."""
        if not self._behind_lines(request, now):
            return now
        ends = [self._lines[d.endpoint_id] for d in request.deliveries]
        return min(now + timedelta(seconds=GATHER_SECONDS), *ends)

    def _behind_lines(self, request: "_SlotRequest", until: datetime) -> bool:
        """Whether each of the request's deliveries only goes behind its endpoint's line: the
        line lasts until `until`, and the delivery is not one of the line's own due again
        (`returning`), which takes the slots that free up now."""
        return all(
            not d.returning and (end := self._lines.get(d.endpoint_id)) is not None and end >= until
            for d in request.deliveries
        )


@dataclass(slots=True)
class _SlotRequest:
    deliveries: list[Claimed]
    token: uuid.UUID
    slots: "Future[Slots]"


@dataclass(frozen=True)
class _Taking:
    """One endpoint's slots asked for: `count` of them (the first `returning` of them due
    again after waiting), `step` apart, at `now`.

    While deliveries the lane sent back are still to come due (its `deferred_until` is
    ahead), only returning ones take slots, and new ones go behind the line: taking the slots
    as they free up, a stream of new deliveries at the limit would keep a backlog waiting for
    as long as it lasts, and send each of it back again every time it came due.

    The first is the lane's next slot, or now if that has gone by."""

    count: int
    returning: int
    step: timedelta
    lead: timedelta
    now: datetime
    refilled: bool  # those sent back are marked enqueued for the process's refills

    @property
    def end(self) -> datetime:
        return self.now + timedelta(seconds=horizon())

    def tail(self, first: datetime, taken: int, deferred: datetime | None) -> datetime:
        """When the first of those not taken is due again: `lead` before its expected slot,
        and after those the lane sent back before (due until `deferred`)."""
        return max(deferred or self.now, first + taken * self.step - self.lead)


# The lane's row is locked, read and moved on in one statement, committed at once: the lock
# is held for the statement alone. Held across a transaction's round trips in a busy worker
# (each waiting for the interpreter between them), it kept every other batch with a delivery
# to the endpoint waiting behind it, and those batches' other deliveries with them.
#
# The same statement sends back the deliveries given no slot, due again at _Taking.tail a step
# apart (a postponing UPDATE of its own was half of a backlogged endpoint's statements). An
# unordered endpoint's are this process's to take back as they come due (Engine.refill_at):
# they are marked enqueued for then, as a task on the broker marks its own, and the sweep
# leaves them unless that is lost. Left to the sweep as well, each came due into a race
# between the refill and a task queued for it, whose loser claimed nothing
# (docs/delivery-control.md). Slots go only to deliveries still held by the token: a retry
# after a lost answer cannot start one the first run sent back; it leaves a gap of idle slots
# at most. One not attempted yet, of an endpoint whose ordering was turned on since it was
# claimed (ordering.ordering_changed leaves a claimed delivery alone), is parked instead:
# its lane releases it in turn, where due later it would have gone out beside the head.
_TAKE = """
WITH lane AS (
    SELECT endpoint_id, deferred_until, GREATEST(next_slot_at, %(now)s) AS first
    FROM {lane} WHERE endpoint_id = %(endpoint)s FOR UPDATE
), held AS (
    SELECT count(*) AS held
    FROM {delivery} JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS h(id, token)
        ON {delivery}.id = h.id AND {delivery}.claim_token = h.token
    WHERE {delivery}.event_id = ANY(%(events)s::bigint[])
), granted AS (
    SELECT endpoint_id, deferred_until, first, CASE WHEN first <= %(end)s THEN LEAST(
        CASE WHEN deferred_until > %(now)s THEN %(returning)s ELSE %(count)s END,
        floor(extract(epoch FROM %(end)s - first) / %(step)s)::integer + 1,
        held
    ) ELSE 0 END AS taken
    FROM lane, held
), line AS (
    SELECT *, GREATEST(
        COALESCE(deferred_until, %(now)s),
        first + (taken * %(step)s - %(lead)s) * interval '1 second'
    ) AS tail
    FROM granted
), moved AS (
    UPDATE {lane} SET
        next_slot_at = line.first + line.taken * %(step)s * interval '1 second',
        deferred_until = CASE WHEN line.taken < %(count)s
            THEN line.tail + (%(count)s - line.taken) * %(step)s * interval '1 second'
            ELSE line.deferred_until END
    FROM line WHERE {lane}.endpoint_id = line.endpoint_id
), turned AS (
    -- refilled: claimed as an unordered endpoint's (Engine.refill_at takes those back)
    SELECT delivery_order = {ORDERED} AND %(refilled)s AS ordered
    FROM {endpoint} WHERE id = %(endpoint)s
), back AS (
    UPDATE {delivery} SET claimed_until = NULL, claim_token = NULL,
        next_attempt_at = CASE WHEN parks AND {delivery}.attempt_count = 0 THEN NULL ELSE b.at END,
        enqueued_at = CASE
            WHEN %(refilled)s AND NOT (parks AND {delivery}.attempt_count = 0) THEN b.at END
    FROM (
        SELECT w.id, w.token, turned.ordered AS parks,
            line.tail + (w.position - line.taken - 1) * %(step)s * interval '1 second' AS at
        FROM line, turned, unnest(%(ids)s::bigint[], %(tokens)s::uuid[])
            WITH ORDINALITY AS w(id, token, position)
        WHERE w.position > line.taken
    ) AS b
    WHERE {delivery}.id = b.id AND {delivery}.event_id = ANY(%(events)s::bigint[])
        AND {delivery}.claim_token = b.token
)
SELECT first, taken, tail FROM line
"""


def _take_in_one_statement(
    endpoint_id: int, taking: _Taking, waiting: list[tuple[Claimed, uuid.UUID]]
) -> tuple[datetime, int, datetime]:
    """PostgreSQL: the first slot, how many were taken, and when the first of those sent
    back is due again (_Taking.tail); the lane made if need be."""
    params: dict[str, Any] = {
        "endpoint": endpoint_id,
        "now": taking.now,
        "end": taking.end,
        "count": taking.count,
        "returning": taking.returning,
        "step": taking.step.total_seconds(),
        "lead": taking.lead.total_seconds(),
        "ids": [d.pk for d, _ in waiting],
        "tokens": [token for _, token in waiting],
        "events": sorted({d.event_id for d, _ in waiting}),
        "refilled": taking.refilled,
    }
    statement = sql.statement(_TAKE)
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(statement, params)
            row = cursor.fetchone()
            if row is not None:
                first, taken, tail = row
                return first, taken, tail
            lanes_make([endpoint_id])
    raise Lane.DoesNotExist(f"no lane for endpoint {endpoint_id}")  # its endpoint is gone


def _take_locked(
    endpoint_id: int, taking: _Taking, waiting: list[tuple[Claimed, uuid.UUID]]
) -> tuple[datetime, int, datetime]:
    """The same as _TAKE, in a transaction: SQLite (bin/dev) has one writer at a time."""
    with transaction.atomic():
        lane = lanes_locked([endpoint_id])[endpoint_id]
        first = max(lane.next_slot_at or taking.now, taking.now)
        room = math.floor((taking.end - first) / taking.step) + 1 if first <= taking.end else 0
        deferred = lane.deferred_until
        line = taking.returning if deferred and deferred > taking.now else taking.count
        taken = max(0, min(room, line))
        lane.next_slot_at = first + taken * taking.step
        tail = taking.tail(first, taken, deferred)
        if taken < taking.count:
            lane.deferred_until = tail + (taking.count - taken) * taking.step
            back: defaultdict[uuid.UUID, dict[int, datetime]] = defaultdict(dict)
            for j, (delivery, token) in enumerate(waiting[taken:]):
                back[token][delivery.pk] = tail + j * taking.step
            for token, when in back.items():
                postpone(when, token, refilled=taking.refilled)
        lane.save(update_fields=["next_slot_at", "deferred_until"])
    return first, taken, tail


def lines_let_go(*, endpoint_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """The lines these endpoints' rate limits made, let go, in the caller's transaction: the
    deliveries sent back to the database to wait for later slots (marked enqueued for then,
    `_TAKE`) are due now, marked enqueued now for the caller to queue (delivery: its event),
    and the lanes have no line for new deliveries to go behind. For a limit changed (to
    another, or none), so that what waited goes at the new pace, not the old one's; and for
    an endpoint stopped, whose line was cancelled, so that after it is enabled again new
    events wait for none. Slots already given (up to HORIZON_SECONDS) keep their times.
    An ordered endpoint's sent back are not marked (its lane's head, due again at its slot's
    time): they keep that time."""
    now = now or timezone.now()
    Lane.objects.filter(endpoint_id__in=endpoint_ids).update(deferred_until=None)
    waiting = (
        Delivery.objects.filter(
            endpoint_id__in=endpoint_ids,
            status=Delivery.Status.PENDING,
            next_attempt_at__gt=now,
            enqueued_at=F("next_attempt_at"),
        )
        .filter(unclaimed(now))
        .order_by()
        # Skipped, never waited for, as endpoint_deliveries_cancel does: a row a worker holds
        # locked is being claimed, and the caller holds the endpoint's row a recording wants.
        .select_for_update(skip_locked=True, of=("self",))
    )
    due = dict(waiting.values_list("id", "event_id"))
    if due:
        events = set(due.values())
        Delivery.objects.filter(id__in=list(due), event_id__in=events).update(
            next_attempt_at=now, enqueued_at=now
        )
    return due


def slot_kept(slot: float) -> bool:
    """Sleeps until `slot` (seconds since the epoch), and says whether the request may start
    now: not if this comes more than LATE_SECONDS after the slot (see the module's doc)."""
    delay = slot - time.time()
    if delay > 0:
        time.sleep(delay)
    return time.time() - slot <= LATE_SECONDS
