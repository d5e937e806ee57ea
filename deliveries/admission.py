"""Admission: how many requests each endpoint has in flight from this worker process, and the
line of deliveries waiting for one of its slots.

An endpoint has at most `limit` requests in flight from a process, so a slow endpoint cannot
take every sending thread. More deliveries wait here for a slot, without a thread: the attempt
that ends hands its slot (and its thread) to the first of them. Past that, a task's delivery
joins the line as it drains, until the task's first wave ends (`late_admission_seconds` bounds
how late), and only then is postponed through the database (dispatch.BUSY_ENDPOINT_DELAY):
postponing every delivery of a burst to one fast endpoint cost an UPDATE, a sweep and a new
task each (docs/scaling.md, docs/delivery-control.md).

How many may wait is bounded by the claim's lease: the slots end an attempt each within
WEBHOOKS_DELIVERY_TIMEOUT, so the waiting delivery at position p starts within
(p // limit + 1) timeouts of its claim and ends one timeout later, and the lease is a timeout
plus WEBHOOKS_CLAIM_LEASE_MARGIN. `rounds` x `limit` wait, rounds being the most whole timeouts
strictly within the margin (3 with the defaults, 15 s and 60 s; none when the timeout is as long
as the margin), at most MAX_WAITING_ROUNDS.
"""

import heapq
import itertools
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.conf import settings

from deliveries.claiming import Claimed

if TYPE_CHECKING:
    from opentelemetry.context import Context

# Deliveries waiting in a process for an endpoint's slots: at most this many times its limit.
MAX_WAITING_ROUNDS = 4

R = TypeVar("R")


class NotAttempted(Exception):
    """A delivery that waited for its endpoint's slot or its rate-limit slot was never
    attempted: nothing to record. Either the worker is shutting down, or it came to its
    rate-limit slot too late (deliveries.rates.slot_kept): its claim is released, and a sweep
    sends it (recording.unattempted_release). Or it was cancelled meanwhile (its endpoint
    disabled or deleted: nothing is sent to it)."""

    def __init__(self, delivery: Claimed) -> None:
        super().__init__(delivery.pk)
        self.delivery = delivery


@dataclass(slots=True)
class Waiting(Generic[R]):
    """A delivery admitted to this process, what signs it, and where its result goes."""

    delivery: Claimed
    secrets: list[str]
    result: "Future[R]"
    # A rate-limited delivery's slot (seconds since the epoch): it starts no earlier.
    slot: float = 0.0
    # The claim a delivery to an unordered rate-limited endpoint is held under: one that comes
    # to its slot too late takes another under it (dispatch.Engine._slot_again).
    claim: "uuid.UUID | None" = None
    # Called on the sending thread as the attempt ends, before its result is set: the delivery
    # to send next on this thread with the endpoint's slot, if any (an ordered endpoint's next
    # one, when its head succeeded: deliveries.chain.Ahead). It must not raise.
    then: "Then[R] | None" = None
    # While tracing is on, the trace of the task that admitted it: its attempt, on a sending
    # thread, is a span of that trace (core.tracing).
    trace: "Context | None" = None


Then = Callable[[Waiting[R], R], "Waiting[R] | None"]


class InFlight(Generic[R]):
    """Requests in flight per endpoint in this process, and the deliveries waiting for a slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._waiting: dict[int, deque[Waiting[R]]] = {}
        self.closing = False  # set when the worker begins to shut down

    def close(self, **_: Any) -> None:
        """From the worker's warm shutdown on, nothing more is started: neither what waits
        for a slot nor what comes for one (an ordered endpoint's next delivery, one that
        waited for room in its endpoint's line), each of which would hold the worker up to
        another timeout."""
        self.closing = True

    def admit(self, waiting: Waiting[R], limit: int, *, must_wait: bool = False) -> bool | None:
        """True: a slot is taken, send it now. False: it waits for a slot here (or, the
        worker shutting down, it is not attempted: its result says NotAttempted already).
        None: the endpoint has its fill of both, postpone it (never when it `must_wait`: a
        delivery whose rate-limit slot has come, which its own rate bounds already)."""
        endpoint_id = waiting.delivery.endpoint_id
        if self.closing:
            _not_attempted([waiting])
            return False
        with self._lock:
            if self._counts[endpoint_id] < limit:
                self._counts[endpoint_id] += 1
                return True
            if must_wait or len(self._waiting.get(endpoint_id, ())) < waiting_limit(limit):
                self._waiting.setdefault(endpoint_id, deque()).append(waiting)
                return False
            return None

    def release(self, endpoint_id: int) -> Waiting[R] | None:
        """Frees a slot of the endpoint, or passes it on: the delivery to send next with it."""
        with self._lock:
            queue = self._waiting.get(endpoint_id)
            if queue and not self.closing:
                waiting = queue.popleft()
                if not queue:
                    del self._waiting[endpoint_id]
                return waiting
            # Shutting down, what still waits is not started.
            dropped = self._waiting.pop(endpoint_id, ())
            self._counts[endpoint_id] -= 1
            if self._counts[endpoint_id] <= 0:
                del self._counts[endpoint_id]
        _not_attempted(dropped)
        return None

    def waiting(self) -> dict[int, int]:
        """The deliveries waiting here, each with its event."""
        with self._lock:
            return {w.delivery.pk: w.delivery.event_id for q in self._waiting.values() for w in q}

    def drop(self, delivery_ids: Collection[int]) -> None:
        """Takes these deliveries out of the wait: they are not attempted."""
        if not delivery_ids:
            return
        dropped: list[Waiting[R]] = []
        with self._lock:
            for endpoint_id, queue in list(self._waiting.items()):
                dropped += [w for w in queue if w.delivery.pk in delivery_ids]
                kept = deque(w for w in queue if w.delivery.pk not in delivery_ids)
                if kept:
                    self._waiting[endpoint_id] = kept
                else:
                    del self._waiting[endpoint_id]
        _not_attempted(dropped)


class Handed:
    """Deliveries handed to a sending thread, until their attempts start: they may wait there
    for a free thread (and, rate-limited, for their slot: rates.slot_kept), and one cancelled
    meanwhile is not attempted either (nothing queued is sent to a disabled endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handed: dict[int, int] = {}  # delivery: its event
        self._dropped: set[int] = set()

    def add(self, delivery: Claimed) -> None:
        with self._lock:
            self._handed[delivery.pk] = delivery.event_id

    def starts(self, delivery: Claimed) -> bool:
        """Whether its attempt may start now: False if it was dropped meanwhile."""
        with self._lock:
            self._handed.pop(delivery.pk, None)
            if delivery.pk in self._dropped:
                self._dropped.remove(delivery.pk)
                return False
            return True

    def waiting(self) -> dict[int, int]:
        """The deliveries handed over and not started yet, each with its event."""
        with self._lock:
            return dict(self._handed)

    def forget(self, delivery_ids: Collection[int]) -> None:
        """These are no longer about to start (loaded to go out next, and not sent after all)."""
        with self._lock:
            for pk in delivery_ids:
                self._handed.pop(pk, None)
                self._dropped.discard(pk)

    def drop(self, delivery_ids: Collection[int]) -> None:
        """These are not attempted: their sending threads find them dropped (`starts`)."""
        with self._lock:
            self._dropped.update(pk for pk in delivery_ids if pk in self._handed)


def _waiting_rounds() -> int:
    timeout = float(settings.WEBHOOKS_DELIVERY_TIMEOUT)
    margin = float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)
    rounds = math.ceil(margin / timeout) - 1 if timeout > 0 else 0
    return max(0, min(rounds, MAX_WAITING_ROUNDS))


def waiting_limit(limit: int) -> int:
    """How many deliveries may wait for an endpoint's `limit` slots (see the module's doc)."""
    return limit * _waiting_rounds()


def late_admission_seconds() -> float:
    """How long after its claim a delivery may still join its endpoint's line: the last place
    ends `rounds` + 1 timeouts after joining, within the lease (a timeout and the margin from
    the claim) only if it joined within the margin less `rounds` timeouts."""
    timeout = float(settings.WEBHOOKS_DELIVERY_TIMEOUT)
    margin = float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)
    return max(0.0, margin - _waiting_rounds() * timeout)


def admitted_at_once(limit: int) -> int:
    """How many deliveries of one endpoint a process takes in at once, in flight and waiting:
    more in one batch wait for the line to drain, or are postponed."""
    return limit + waiting_limit(limit)


def unattempted(delivery: Claimed) -> "Future[Any]":
    """A future saying the delivery was not attempted (NotAttempted), for the recording."""
    future: Future[Any] = Future()
    future.set_exception(NotAttempted(delivery))
    return future


def _not_attempted(dropped: "Collection[Waiting[Any]]") -> None:
    for waiting in dropped:
        waiting.result.set_exception(NotAttempted(waiting.delivery))


class Timetable(Generic[R]):
    """Deliveries waiting in this process for their rate-limit slot (deliveries.rates), handed
    to `start` when it comes, by one thread: a delivery that waits holds no sending thread, so
    a limited endpoint never holds up the others' deliveries."""

    def __init__(self, start: Callable[[Waiting[R]], None]) -> None:
        self._start = start
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Waiting[R]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self.closing = False

    def at(self, seconds_from_now: float, waiting: Waiting[R]) -> None:
        with self._wake:
            if self.closing:
                _not_attempted([waiting])
                return
            due = time.monotonic() + seconds_from_now
            entry = (due, next(self._order), waiting)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                # A daemon: at shutdown `close` empties it, and what it held is not attempted.
                self._thread = threading.Thread(target=self._run, name="webhook-slots", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                # The thread sleeps until the first slot; one after it needs no wake-up, which
                # costs the process's busy threads (docs/delivery-control.md).
                self._wake.notify()

    def close(self, **_: Any) -> None:
        """A worker shutting down starts nothing more: these are released, and another
        worker's sweep sends them (recording.unattempted_release)."""
        with self._wake:
            self.closing = True
            dropped = [w for _, _, w in self._heap]
            self._heap.clear()
        _not_attempted(dropped)

    def waiting(self) -> dict[int, int]:
        """The deliveries waiting here, each with its event."""
        with self._wake:
            return {w.delivery.pk: w.delivery.event_id for _, _, w in self._heap}

    def drop(self, delivery_ids: Collection[int]) -> None:
        if not delivery_ids:
            return
        with self._wake:
            dropped = [w for _, _, w in self._heap if w.delivery.pk in delivery_ids]
            self._heap = [entry for entry in self._heap if entry[2].delivery.pk not in delivery_ids]
            heapq.heapify(self._heap)
        _not_attempted(dropped)

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                while not self._heap or self._heap[0][0] > now:
                    self._wake.wait(timeout=self._heap[0][0] - now if self._heap else None)
                    now = time.monotonic()
                due: list[Waiting[R]] = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for waiting in due:
                self._start(waiting)
