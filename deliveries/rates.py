"""Per-endpoint rate limits, enforced across every worker process.

A rate-limited endpoint's `Lane` holds its next free slot (GCRA's "theoretical arrival time"):
a delivery may start at that slot, and taking it moves the slot on by 1/rate seconds (a little
more: SPACING). A batch takes its deliveries' slots in one transaction under the lanes' row
locks, so however many workers claim an endpoint's deliveries, their starts are that far apart
and no second holds more than `rate` + 1 of them. Slots are taken at most HORIZON_SECONDS
ahead: a delivery whose turn is later goes back to the database, due shortly before its turn,
with no attempt counted; one whose turn is near waits in its worker for it, without a sending
thread (admission.Timetable).

PostgreSQL rather than Redis holds the slots: it is already where every worker decides what is
due, under the same transactions; the broker may be another server (or none, in `bin/dev`),
and a Redis flush would forget the slots and let a burst through. The cost is one row lock per
rate-limited endpoint per batch, paid only by rate-limited endpoints.
"""

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries.claiming import Claimed
from deliveries.ordering import lanes_locked

# How far ahead a worker takes slots: within the claim's lease by a wide margin.
HORIZON_SECONDS = 5.0
# Starts are spaced this much wider than 1/rate, so that at 18/s and more any one second holds
# at most rate - 1 of them on time (at 20/s: 19 starts span 0.95 s, 20 span 1.007 s), and two a
# busy worker delays (the GIL, a burst of sending beside them) still keep it to rate + 1. At
# 3% wider, two late starts put rate + 2 into one second on a quiet machine (22 at 20/s). The
# price: a limited endpoint gets ~94% of its rate.
SPACING = 1.06
# A delivery sent back to the database is due this long before its expected turn, so that a
# worker has it in hand when its slot comes.
LEAD_SECONDS = 1.0


@dataclass
class Slots:
    starts: dict[int, datetime] = field(default_factory=dict)  # delivery: when it may start
    later: dict[int, datetime] = field(default_factory=dict)  # delivery: when it is due again


def horizon() -> float:
    return min(HORIZON_SECONDS, float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN) / 2)


def slots_take(deliveries: list[Claimed]) -> Slots:
    """The start time of each of these deliveries to rate-limited endpoints whose slot falls
    within the horizon, and when the others are due again; in its own transaction."""
    by_endpoint: defaultdict[int, list[Claimed]] = defaultdict(list)
    for delivery in deliveries:
        if delivery.rate_limit:
            by_endpoint[delivery.endpoint_id].append(delivery)
    slots = Slots()
    if not by_endpoint:
        return slots
    with transaction.atomic():
        lanes = lanes_locked(list(by_endpoint))
        # The time once the lanes are ours, not the batch's start: an idle lane's first slot
        # is now, and one taken from a time before the claim would start late, next to the
        # second.
        now = timezone.now()
        end = now + timedelta(seconds=horizon())
        for lane in lanes.values():
            waiting = by_endpoint[lane.endpoint_id]
            step = timedelta(seconds=SPACING / waiting[0].rate_limit)  # type: ignore[operator]
            first = max(lane.next_slot_at or now, now)
            room = math.floor((end - first) / step) + 1 if first <= end else 0
            taken = max(0, min(room, len(waiting)))
            for i, delivery in enumerate(waiting[:taken]):
                slots.starts[delivery.pk] = first + i * step
            lane.next_slot_at = first + taken * step
            lead = timedelta(seconds=min(LEAD_SECONDS, horizon() / 2))
            # Behind those sent back before: a backlog comes due a slot apart, not all at once.
            tail = max(lane.deferred_until or now, lane.next_slot_at - lead)
            for j, delivery in enumerate(waiting[taken:]):
                slots.later[delivery.pk] = tail + j * step
            if len(waiting) > taken:
                lane.deferred_until = tail + (len(waiting) - taken) * step
            lane.save(update_fields=["next_slot_at", "deferred_until"])
    return slots


class Spacing:
    """The last line of the limit, in each worker process: two starts to one rate-limited
    endpoint are at least 1/rate apart, however late the first came. The slots are 6% wider,
    so a start delayed on its way (the timetable's thread or a sending thread waiting for the
    interpreter behind busy ones) pushes the next ones back a little rather than sending two
    together; the slack brings them back on time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, float] = {}

    def wait_turn(self, endpoint_id: int, rate: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._last.get(endpoint_id, now) + 1 / rate)
            self._last[endpoint_id] = start
        if start > now:
            time.sleep(start - now)
