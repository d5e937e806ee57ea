"""Sending a batch of deliveries: claim, admit, send concurrently, record.

The delivery engine's rooms, in the order a batch goes through them:
- deliveries.claiming: one UPDATE claims the batch, one SELECT loads what sending needs;
- deliveries.admission: per-endpoint slots in this process, and the line waiting for them;
- deliveries.sending: the signing secrets, and one signed attempt;
- deliveries.chain: an ordered endpoint's next delivery, sent the moment its head succeeds;
- deliveries.recording: every outcome in one transaction, and the recorder thread for the
  attempts that outlive their task;
- deliveries.health: failure streaks and automatic disables, as the attempts tell them.
This module wires them: a task calls `deliveries_send`, and the process's `Engine` holds the
sending threads, the admission and the recorder, made at first use (so after any fork).
"""

import heapq
import logging
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any, NamedTuple

from celery.signals import worker_process_shutdown, worker_ready, worker_shutting_down
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from core import tracing
from deliveries import (
    claiming,
    partitions,
    rates,
    recording,
    recovery,
    sending,
    services,
    sql,
    transient,
)
from deliveries.admission import (
    Handed,
    InFlight,
    NotAttempted,
    Then,
    Timetable,
    Waiting,
    late_admission_seconds,
    unattempted,
)
from deliveries.chain import Ahead, look_ahead
from deliveries.claiming import Claimed
from deliveries.recording import LateRecorder
from deliveries.sending import Sent

logger = logging.getLogger(__name__)


# Results finished within this long are recorded together by the task; slower ones by the
# process's recorder thread, as they end.
FIRST_WAVE_SECONDS = 0.5
# How often the recorder thread looks for deliveries this process sent back to the database
# for their rate-limit slots that have come due (Engine.refill_at).
REFILL_CHECK_SECONDS = 0.1
# How long a worker shutting down waits for its slot thread to take the slots asked of it.
SLOTS_CLOSE_SECONDS = 2.0
# How long a prefork pool's process about to exit waits, past WEBHOOKS_DELIVERY_TIMEOUT, for its
# attempts still in flight to be recorded.
RECORDING_GRACE_SECONDS = 2.0
# A delivery that found its endpoint at the in-flight limit, and too many waiting for it in
# the process (admission.InFlight), joins the line as it drains during its task's first wave;
# one that still finds no room is postponed by about this long.
BUSY_ENDPOINT_DELAY = timedelta(seconds=2)
# How often a task looks for room in the lines of the endpoints it has deliveries left for.
ROOM_POLL_SECONDS = 0.01
# How long a task goes on sending the deliveries ordered endpoints release as their heads end,
# before it leaves the rest to the broker: a busy ordered endpoint does not keep a task slot.
CHAIN_SECONDS = 5.0


class Admitted(NamedTuple):
    future: "Future[Sent]"
    waits: bool  # for its endpoint's slot or its rate-limit slot, rather than started now


class Engine:
    """One per worker process: its sending threads (and the rate-limited deliveries' own,
    `paced`), its admission per endpoint, its timetable of deliveries waiting for a rate-limit
    slot, and its recorder thread. That thread also drops, every
    WEBHOOKS_WAITING_CHECK_INTERVAL, the waiting deliveries cancelled meanwhile, those handed
    to a sending thread and not started yet too (nothing queued is sent to a disabled endpoint,
    here as in the database), and takes back the rate-limited deliveries it sent to the
    database as they come due (`refill_at`)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=settings.WEBHOOKS_SEND_THREADS, thread_name_prefix="webhook-send"
        )
        # Rate-limited deliveries whose slots have come, on threads of their own: queued behind
        # other endpoints' deliveries, they reach a thread after their slots have gone by
        # (docs/delivery-control.md).
        self.paced = ThreadPoolExecutor(
            max_workers=settings.WEBHOOKS_SEND_THREADS, thread_name_prefix="webhook-paced"
        )
        self.in_flight: InFlight[Sent] = InFlight()
        self.timetable: Timetable[Sent] = Timetable(self._slot_came)
        self.handed = Handed()
        self.slots = rates.SlotTaker()
        self.keys = sending.SigningKeys()
        self.recorder = LateRecorder()
        self.recorder.every(
            float(settings.WEBHOOKS_WAITING_CHECK_INTERVAL), self._drop_cancelled_waiting
        )
        self.recorder.every(float(settings.WEBHOOKS_WAITING_CHECK_INTERVAL), self.keys.refresh)
        # What this process sent back for its rate-limit slots: (due again, delivery, event).
        self._refills: list[tuple[datetime, int, int]] = []
        self._refill_after = timezone.now()
        self._refills_lock = threading.Lock()
        self.recorder.every(REFILL_CHECK_SECONDS, self._refill)
        worker_shutting_down.connect(self.in_flight.close, weak=False)
        worker_shutting_down.connect(self.timetable.close, weak=False)
        worker_shutting_down.connect(self._shutting_down, weak=False)
        worker_process_shutdown.connect(self._pool_process_exiting, weak=False)

    def admit(
        self,
        delivery: Claimed,
        secrets: list[str],
        start_at: datetime | None = None,
        then: "Then[Sent] | None" = None,
        claim: uuid.UUID | None = None,
    ) -> "Admitted | None":
        """The future of the delivery's attempt, started now, or waiting for its rate-limit
        slot (`start_at`) or for a slot of its endpoint; None when its endpoint has its fill of
        both (the caller postpones it). `then` and `claim` are the attempt's Waiting.then and
        Waiting.claim."""
        trace = tracing.current() if tracing.enabled else None
        waiting: Waiting[Sent] = Waiting(
            delivery, secrets, Future(), then=then, trace=trace, claim=claim
        )
        if start_at is not None:
            self._wait_for_slot(waiting, start_at)
            return Admitted(waiting.result, waits=True)
        admitted = self.in_flight.admit(waiting, settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT)
        if admitted is None:
            return None
        if admitted:
            self._hand_over(waiting)
        return Admitted(waiting.result, waits=not admitted)

    def admit_now(
        self, delivery: Claimed, secrets: list[str], then: "Then[Sent]"
    ) -> "Future[Sent] | None":
        """`admit`'s future alone (chain.Admit)."""
        admitted = self.admit(delivery, secrets, then=then)
        return None if admitted is None else admitted.future

    def slots_for(
        self, deliveries: list[Claimed], secrets: dict[int, list[str]], token: uuid.UUID
    ) -> None:
        """Hands these deliveries to unordered rate-limited endpoints to the slot thread: each
        waits in the timetable for its slot, recorded by the recorder thread as it ends, or is
        sent back to the database (and taken back here as it comes due)."""
        future = self.slots.take(deliveries, token)
        # Admitted in the batch's trace, as the attempts of the batch's other deliveries are.
        came = tracing.continued(partial(self._slots_came, deliveries, secrets, token, future))
        future.add_done_callback(lambda _: came())

    def _slots_came(
        self,
        deliveries: list[Claimed],
        secrets: dict[int, list[str]],
        token: uuid.UUID,
        future: "Future[rates.Slots]",
    ) -> None:
        if future.exception() is not None:  # said by the slot thread (closed, or failing)
            # Released by the recorder thread, as what a worker shutting down drops from its
            # waits (recording.unattempted_release); if the database is down, the claims lapse.
            self.recorder.watch([unattempted(d) for d in deliveries], token)
            return
        slots = future.result()
        self.refill_at(slots.later, deliveries)
        for delivery in deliveries:
            start = slots.starts.get(delivery.pk)
            if start is not None:
                admitted = self.admit(delivery, secrets[delivery.endpoint_id], start, claim=token)
                assert admitted is not None  # one given a start always waits for it
                self.recorder.watch([admitted.future], token, unhurried=True)

    def _wait_for_slot(self, waiting: Waiting[Sent], start_at: datetime) -> None:
        """In the timetable until a little before its slot (rates.handover_seconds)."""
        waiting.slot = start_at.timestamp()
        rate = waiting.delivery.rate_limit
        early = rates.handover_seconds(rate) if rate else 0.0
        self.timetable.at((start_at - timezone.now()).total_seconds() - early, waiting)

    def _slot_again(self, waiting: Waiting[Sent]) -> None:
        """A delivery that came to its rate-limit slot too late (rates.slot_kept). Held under a
        claim of its own (an unordered endpoint's), it takes another slot under that claim from
        the slot thread, first in its endpoint's line (it was due before the deliveries made
        since), and waits for it in the timetable again, its attempt's future the one its
        batch's recording already follows; sent back to the database instead, this process
        takes it back as it comes due (`refill_at`). An ordered endpoint's is let go
        (NotAttempted), due at once, and its lane's next claim takes it."""
        if waiting.claim is None:
            waiting.result.set_exception(NotAttempted(waiting.delivery))
            return
        waiting.delivery = replace(waiting.delivery, returning=True)
        self.handed.add(waiting.delivery)  # followed by the cancel check meanwhile
        future = self.slots.take([waiting.delivery], waiting.claim)
        future.add_done_callback(partial(self._slot_again_came, waiting))

    def _slot_again_came(self, waiting: Waiting[Sent], future: "Future[rates.Slots]") -> None:
        delivery = waiting.delivery
        slots = future.result() if future.exception() is None else rates.Slots()
        start = slots.starts.get(delivery.pk)
        if not self.handed.starts(delivery):  # cancelled while it took its slot
            waiting.result.set_exception(NotAttempted(delivery))
            return
        if start is not None:
            self._wait_for_slot(waiting, start)
            return
        self.refill_at(slots.later, [delivery])
        # Its claim let go: by the slot statement if it sent it back (this release then finds
        # nothing held), else here, as for a worker shutting down (the slot thread closed).
        waiting.result.set_exception(NotAttempted(delivery))

    def _slot_came(self, waiting: Waiting[Sent]) -> None:
        self.handed.add(waiting.delivery)
        self.paced.submit(self._at_slot_send, waiting)

    def _at_slot_send(self, waiting: Waiting[Sent]) -> None:
        """A rate-limited delivery handed over a little before its slot sleeps until it, and
        only then takes a place among its endpoint's requests in flight: places held by
        sleepers would keep the endpoint's next deliveries from theirs. One that comes to its
        slot too late (rates.slot_kept) takes another (`_slot_again`). With no place free, it
        waits for one, and is sent then only if its slot has not gone by meanwhile (`_send`)."""
        delivery = waiting.delivery
        on_time = rates.slot_kept(waiting.slot)
        if not self.handed.starts(delivery):  # cancelled while it waited for its slot
            waiting.result.set_exception(NotAttempted(delivery))
            return
        if not on_time:
            self._slot_again(waiting)
            return
        # Waiting for a place, it is among InFlight's waiting, which the cancel check reads.
        places = rates.places(delivery.rate_limit or 0)
        if self.in_flight.admit(waiting, places, must_wait=True):
            self.handed.add(delivery)
            self._send(waiting, at_slot=True)

    def _hand_over(self, waiting: Waiting[Sent]) -> None:
        """To the sending threads. It may wait there for a free thread: the cancel check
        follows it until it starts (Handed)."""
        self.handed.add(waiting.delivery)
        self.executor.submit(self._send, waiting)

    def _send(self, waiting: Waiting[Sent] | None, *, at_slot: bool = False) -> None:
        """On a sending thread holding a slot of the delivery's endpoint: attempts it, then the
        deliveries waiting for that endpoint's slot, one after the other, until none waits.
        `at_slot`: the first one's rate-limit slot was found kept just now. A rate-limited
        delivery that waited here for its endpoint's place past its slot takes another
        (`_slot_again`)."""
        while waiting is not None:
            following = None
            try:
                delivery = waiting.delivery
                late = bool(delivery.rate_limit) and not at_slot
                late = late and not rates.slot_kept(waiting.slot)
                at_slot = False
                if not self.handed.starts(delivery):  # cancelled while it waited
                    waiting.result.set_exception(NotAttempted(delivery))
                    continue
                if late:
                    self._slot_again(waiting)
                    continue
                secrets = self.keys.current(delivery.endpoint_id, waiting.secrets)
                result = sending.attempt(delivery, secrets, waiting.trace)
                if waiting.then is not None and not self.in_flight.closing:
                    following = waiting.then(waiting, result)
                waiting.result.set_result(result)
            finally:
                # The slot goes on with this thread: to what `then` chose, or to the first
                # delivery waiting for it.
                endpoint_id = waiting.delivery.endpoint_id
                waiting = following or self.in_flight.release(endpoint_id)
                if waiting is not None:
                    self.handed.add(waiting.delivery)  # passed on to this thread

    def refill_at(self, later: dict[int, datetime], deliveries: list[Claimed]) -> None:
        """Those of these deliveries (to unordered rate-limited endpoints) in `later` were sent
        back to the database from here, each due again at its time: this process claims them
        itself as they come due, rather than leave them to the sweep and a task queued behind
        everything else in the broker, which starved a backlogged endpoint of its rate. It
        claims them by id, in their events' partitions: a scan for the endpoint's due
        deliveries read past every other delivery due (docs/delivery-control.md). Another
        process's sweep taking some first is no harm: a claim is taken once."""
        if not later:
            return
        events = {d.pk: d.event_id for d in deliveries if d.pk in later}
        with self._refills_lock:
            for pk, event_id in events.items():
                heapq.heappush(self._refills, (later[pk], pk, event_id))

    def _shutting_down(self, **_: Any) -> None:
        """The slot thread takes the slots asked for so far (up to SLOTS_CLOSE_SECONDS), and
        what this process was to take back as it comes due goes to the other workers' sweeps
        (claiming.refills_release). If the database does not answer, the sweeps take it
        WEBHOOKS_REENQUEUE_AFTER after it came due."""
        self.slots.close(wait=SLOTS_CLOSE_SECONDS)
        with self._refills_lock:
            refills, self._refills = self._refills, []
        if not refills:
            return
        try:
            claiming.refills_release({pk: event_id for _, pk, event_id in refills})
        except DatabaseError as error:
            logger.warning("leaving deliveries due again to the sweeps failed: %s", error)

    def _pool_process_exiting(self, **_: Any) -> None:
        """A prefork pool's process (CELERY_WORKER_POOL=prefork) about to exit: Celery tells
        only the main process that the worker shuts down (worker_shutting_down), and the pool
        ends this one with os._exit, which waits for no thread. It closes as a worker shutting
        down does, and waits for the recorder thread to record its attempts still in flight,
        rather than leave them claimed and unrecorded, to be sent again once the claims lapse."""
        self.in_flight.close()
        self.timetable.close()
        self._shutting_down()
        timeout = float(settings.WEBHOOKS_DELIVERY_TIMEOUT) + RECORDING_GRACE_SECONDS
        if not self.recorder.wait_recorded(timeout):
            logger.warning("exiting with delivery attempts not recorded: their claims lapse")

    def _refill(self) -> None:
        now = timezone.now()
        due: dict[int, int] = {}
        with self._refills_lock:
            if now < self._refill_after:
                return
            while self._refills and self._refills[0][0] <= now:
                _, pk, event_id = heapq.heappop(self._refills)
                due[pk] = event_id
            if due:
                # What comes due meanwhile waits for the next round: sent back due LEAD_SECONDS
                # before its slot, it loses nothing, and taken back as each came due (a slot
                # apart) it cost a claim, a load and a slot statement per delivery or two.
                self._refill_after = now + timedelta(seconds=rates.lead_seconds() / 2)
        size = settings.WEBHOOKS_DELIVERY_BATCH_SIZE
        for batch, events in sql.batches(list(due), size, due):
            deliveries_send(delivery_ids=batch, top_up=False, event_ids=events)

    def _drop_cancelled_waiting(self) -> None:
        waiting = self.in_flight.waiting() | self.timetable.waiting() | self.handed.waiting()
        if waiting:
            cancelled = transient.retrying(
                partial(claiming.cancelled, waiting), "checking waiting deliveries"
            )
            self.in_flight.drop(cancelled)
            self.timetable.drop(cancelled)
            self.handed.drop(cancelled)


@cache
def engine() -> Engine:
    return Engine()


@worker_ready.connect
def sweep_in_every_worker(**_: Any) -> None:
    """Retries and lost tasks do not wait on beat, or on any one process: every worker process
    sweeps on its recorder thread (one sweep at a time: services.deliveries_sweep), and makes
    the history's partitions ahead of need (deliveries.partitions)."""
    process = engine()
    process.recorder.every(float(settings.WEBHOOKS_SWEEP_INTERVAL), _sweep)
    process.recorder.every(float(settings.WEBHOOKS_SWEEP_INTERVAL), _recoveries)
    process.recorder.every(partitions.MAINTAIN_EVERY, _partitions)
    process.recorder.start()


def _sweep() -> None:
    transient.retrying(services.deliveries_sweep, "sweeping for due deliveries")


def _recoveries() -> None:
    transient.retrying(recovery.recoveries_continue, "continuing recoveries")


def _partitions() -> None:
    transient.retrying(partitions.partitions_maintain, "making history partitions")


def deliveries_send(
    *,
    delivery_ids: list[int],
    top_up: bool = True,
    wait_for_all: bool = False,
    held_with: uuid.UUID | None = None,
    event_ids: list[int] | None = None,
) -> None:
    """Attempts every delivery in `delivery_ids` that is due and not held by another worker,
    or, with `held_with`, those of them the caller already claimed with that token (fan-out
    makes its first batch claimed: it needs no claiming UPDATE).

    With `top_up`, a batch smaller than WEBHOOKS_DELIVERY_BATCH_SIZE is filled with other due
    deliveries, oldest first: under load, tasks then carry full batches (a batch costs about
    the same few queries whatever its size), and the tasks of deliveries taken this way find
    nothing left to claim. At rest it changes nothing.

    Attempts still running after FIRST_WAVE_SECONDS are recorded by the process's recorder
    thread as they end, and this returns: a task never waits on a slow endpoint, so a dead
    endpoint cannot hold the worker's task slots. `wait_for_all` waits for them instead (for a
    caller that reports the outcome).

    `event_ids`, when the caller knows them, are the deliveries' events: the claim then looks in
    their days' partitions only (claiming.claim).

    Each database step goes through a transient error (PostgreSQL restarting or out of
    connection slots) by trying again (`transient.retrying`): what is claimed here is held by
    this token until the lease runs out, and what is sent here is sent, so giving up would
    leave the claims to lapse and the attempts to be made twice.
    """
    token = held_with or uuid.uuid4()
    chain_ends = time.monotonic() + CHAIN_SECONDS
    process = engine()
    ahead = Ahead(process.handed)
    try:
        while delivery_ids:
            chain = None
            # A worker shutting down sends no more of a line: what its last round released is
            # not admitted (InFlight.admit), and goes back unsent, due at once.
            if time.monotonic() < chain_ends and not process.in_flight.closing:
                lease = timedelta(seconds=claiming.lease_seconds())
                chain = recording.Chain(token=uuid.uuid4(), until=timezone.now() + lease)
            released = _send_batch(
                delivery_ids,
                top_up=top_up,
                wait_for_all=wait_for_all,
                held=held_with is not None,
                event_ids=event_ids,
                token=token,
                chain=chain,
                ahead=ahead,
            )
            if chain is None:
                return
            # An ordered endpoint's next delivery, released as its head ended: sent from here.
            delivery_ids, held_with, token, top_up = released, chain.token, chain.token, False
            event_ids = None
    finally:
        if ahead.started:  # sent as a head succeeded, and not released to this task after all
            process.recorder.watch(list(ahead.started.values()), token)


def _send_batch(
    delivery_ids: list[int],
    *,
    top_up: bool,
    wait_for_all: bool,
    held: bool,
    event_ids: list[int] | None,
    token: uuid.UUID,
    chain: recording.Chain | None,
    ahead: Ahead,
) -> list[int]:
    """One round of deliveries_send; returns the deliveries released under `chain`."""
    started = time.monotonic()  # before the claim: what the lease runs from, at the latest
    now = timezone.now()
    room = settings.WEBHOOKS_DELIVERY_BATCH_SIZE - len(delivery_ids) if top_up else 0
    # Released to this task's chain, and loaded while their heads were in flight.
    deliveries = (held and not room and ahead.take(delivery_ids)) or claiming.claim(
        delivery_ids, max(room, 0), now, token, held=held, event_ids=event_ids
    )
    if not deliveries:
        return []
    live = [d for d in deliveries if d.endpoint_enabled]
    gone = [d for d in deliveries if not d.endpoint_enabled]
    if gone:
        transient.retrying(
            partial(claiming.cancel_for_gone_endpoints, gone, token), "cancelling deliveries"
        )
    wanted = {d.endpoint_id for d in live}
    secrets = {pk: ahead.secrets[pk] for pk in wanted if pk in ahead.secrets}
    process = engine()
    if len(secrets) < len(wanted):
        secrets = transient.retrying(
            partial(process.keys.load, wanted, now), "loading signing secrets"
        )
    live = [d for d in live if secrets.get(d.endpoint_id)]
    # An unordered endpoint's deliveries wait for their slots apart from the batch, which goes
    # on with the others (Engine.slots_for); an ordered one's go along its task's line.
    handed = [] if wait_for_all else [d for d in live if d.rate_limit and not d.ordered]
    if handed:
        process.slots_for(handed, secrets, token)
        live = [d for d in live if not d.rate_limit or d.ordered]
    slots = rates.Slots()
    if any(d.rate_limit for d in live):
        # What goes back to the database the sweep takes back, not this process: an ordered
        # endpoint's task goes on along its line for up to CHAIN_SECONDS, which the recorder
        # thread has not to spend, and a caller that waits for all (the web process's test
        # event) runs no refills.
        pairs = [(d, token) for d in live]
        taking = partial(rates.slots_take, pairs, refills=False)
        slots = transient.retrying(taking, "taking rate slots")
    futures: list[Future[Sent]] = []
    later: dict[int, datetime] = {}
    no_room: list[Claimed] = []
    for delivery in live:
        if delivery.pk in slots.later:  # back in the database already
            continue
        if delivery.pk in ahead.started:  # sent already, the moment its head succeeded
            futures.append(ahead.started.pop(delivery.pk))
            continue
        relayed = delivery.ordered and not delivery.rate_limit
        admitted = process.admit(
            delivery,
            secrets[delivery.endpoint_id],
            slots.starts.get(delivery.pk),
            then=ahead.relay if relayed else None,
        )
        if admitted is None and delivery.ordered:
            later[delivery.pk] = now + BUSY_ENDPOINT_DELAY
        elif admitted is None:
            no_room.append(delivery)
            process.handed.add(delivery)  # followed by the cancel check while it waits
        elif delivery.pk in slots.starts and admitted.waits and not wait_for_all:
            # Waiting for its rate-limit slot: recorded by the recorder thread as it ends; the
            # task does not wait for it. (One waiting for its endpoint's slot in this process
            # is waited for: handing those to the recorder too cost 15% of the deliveries'
            # throughput, docs/delivery-control.md.)
            process.recorder.watch([admitted.future], token)
        else:
            futures.append(admitted.future)
    if ahead.started:  # sent, and then not released to this task: recorded all the same
        process.recorder.watch(list(ahead.started.values()), token)
        ahead.started = {}
    if chain is not None:
        look_ahead(ahead, live, later, secrets)
    released: list[int] = []
    first_wave_ends = time.monotonic() + FIRST_WAVE_SECONDS
    try:
        if no_room:
            until = min(first_wave_ends, started + late_admission_seconds())
            for delivery in _admitted_as_lines_drain(no_room, secrets, futures, until):
                later[delivery.pk] = now + BUSY_ENDPOINT_DELAY
        if later:
            events = {d.event_id for d in live if d.pk in later}
            transient.retrying(
                partial(claiming.postpone, later, token, events), "postponing deliveries"
            )
    finally:  # what was sent is recorded whatever happened to the postponing
        first_wave = max(0.0, first_wave_ends - time.monotonic())
        done, pending = wait(futures, timeout=None if wait_for_all else first_wave)
        if pending:
            process.recorder.watch(pending, token)
        results = recording.attempted(done)
        sent = ahead.settle(results, process.admit_now)
        if results:
            released = transient.retrying(
                partial(recording.record, {token: results}, chain, sent),
                "recording delivery attempts",
            )
        recording.unattempted_release({token: list(done)})
    return released


def _admitted_as_lines_drain(
    no_room: list[Claimed],
    secrets: dict[int, list[str]],
    futures: list["Future[Sent]"],
    until: float,
) -> list[Claimed]:
    """Admits unordered deliveries whose endpoints' lines were full as those lines drain, in
    order, until `until` (monotonic), their futures added to `futures`; returns those still
    without room. A task's batch may hold more of one endpoint than a process takes in at once
    (retries come due together after an outage): postponed at once, the rest came back 2 s and
    a sweep later, and one endpoint's backlog drained at a third of the rate of the same
    backlog over ten endpoints (docs/delivery-control.md).

    While they wait they are followed by the cancel check (Handed): one whose endpoint is
    disabled meanwhile is not attempted, and its claim is released with the task's others."""
    process = engine()

    def left_out(delivery: Claimed) -> bool:
        """Out of the cancel check's sight; True if it was cancelled meanwhile."""
        if process.handed.starts(delivery):
            return False
        futures.append(unattempted(delivery))
        return True

    while no_room and time.monotonic() < until:
        running = [f for f in futures if not f.done()]
        left = min(ROOM_POLL_SECONDS, until - time.monotonic())
        if running:
            wait(running, timeout=max(0.0, left), return_when=FIRST_COMPLETED)
        else:  # the lines are other tasks' to drain
            time.sleep(max(0.0, left))
        full: set[int] = set()
        still: list[Claimed] = []
        for delivery in no_room:
            if delivery.endpoint_id in full:
                still.append(delivery)
            elif not left_out(delivery):
                admitted = process.admit(delivery, secrets[delivery.endpoint_id])
                if admitted is None:
                    process.handed.add(delivery)
                    full.add(delivery.endpoint_id)
                    still.append(delivery)
                else:
                    futures.append(admitted.future)
        no_room = still
    return [delivery for delivery in no_room if not left_out(delivery)]
