"""The rate limit's cost to the other endpoints, measured in phases of one run.

The rate workload's runs (bench.control.measure_rate) compare whole runs a minute apart, and
this host's speed moves by a third and more between them: two runs of the same work have
differed by 80% (docs/delivery-control.md). Here the comparison is inside one run, phase
against the phases on either side of it, seconds apart:

- the 10 unlimited endpoints are kept saturated all along: a feeder thread keeps BACKLOG of
  their deliveries outstanding, made in bulk as fan-outs leave them (an event, a pending
  delivery due now for each endpoint), so that no publisher shares the machine unevenly;
- the run goes off, limited, off, same, off, limited, ... for `cycles` cycles, each phase about
  `seconds` long. A limited phase gives the rate-limited endpoint `seconds` x its rate
  deliveries due at once (more than its limit lets through, as the rate runs' backlog); a same
  phase gives an unlimited 12th endpoint as many, due one of the limit's steps apart, so that
  it sends as much at the same pace without the limit's machinery. The next off phase starts
  once the chunk is recorded.

Each limited or same phase lasts from the first to the last receipt of its chunk; each off phase
from the last receipt of the chunk before it to the first of the one after it, less TRIM_SECONDS
at either end, where the work of the phase beside it (claims, slots, recordings) still runs, so
that work counts against the limit rather than for it. The unlimited endpoints' receipts per
second in a phase, against the geometric mean of the off phases either side of it, is its ratio;
consecutive off phases against each other are the measure's own noise here.
"""

import bisect
import itertools
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.config import BenchError
from bench.deliveries import DeliveryStack, fanned_out_events, free_port, make_endpoints

UNLIMITED_ENDPOINTS = 10
# Unlimited deliveries kept outstanding (pending: due, claimed or in flight): a few seconds of
# this machine's work, so the workers never wait for the feeder, and no more, since a claim's
# top-up reads past the due rows that are claimed already.
BACKLOG = 3000
FEED_EVERY = 0.2
WARM_SECONDS = 4.0
TRIM_SECONDS = 1.0
EVENT_TYPE = "judgment.created"


@dataclass
class Window:
    kind: str  # "off", "limited" or "same"
    start: float
    end: float
    per_s: float = 0.0  # the unlimited endpoints' receipts per second within it


def due_deliveries(
    environment: Any,
    endpoint_ids: list[int],
    count: int,
    due: Callable[[int], datetime] | None = None,
) -> set[str]:
    """`count` events, each with a pending delivery to every one of `endpoint_ids`, made in
    bulk as a fan-out leaves them, due now (or the i-th event's at `due(i)`); their public ids.
    The workers' sweeps find them (nothing is queued for them here)."""
    from django.db import transaction
    from django.utils import timezone

    from deliveries.models import Delivery

    now = timezone.now()
    with transaction.atomic():
        events = fanned_out_events(environment, [now] * count, EVENT_TYPE)
        Delivery.objects.bulk_create(
            Delivery(
                event=event,
                endpoint_id=endpoint_id,
                created_at=now,
                next_attempt_at=due(i) if due else now,
            )
            for i, event in enumerate(events)
            for endpoint_id in endpoint_ids
        )
    return {event.public_id for event in events}


class Feeder(threading.Thread):
    """Keeps `backlog` deliveries to `endpoint_ids` outstanding until stopped."""

    def __init__(self, environment: Any, endpoint_ids: list[int], backlog: int) -> None:
        super().__init__(name="phases-feeder", daemon=True)
        self.environment = environment
        self.endpoint_ids = endpoint_ids
        self.backlog = backlog
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from django.db import connection

        from deliveries.models import Delivery

        pending = Delivery.objects.filter(
            endpoint_id__in=self.endpoint_ids, status=Delivery.Status.PENDING
        )
        try:
            while not self.stopping.is_set():
                short = self.backlog - pending.count()
                if short > 0:
                    events = math.ceil(short / len(self.endpoint_ids))
                    due_deliveries(self.environment, self.endpoint_ids, events)
                self.stopping.wait(FEED_EVERY)
        except BaseException as error:  # raised again by stop(), on the bench's thread
            self.error = error
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise BenchError(f"the feeder failed: {self.error!r}") from self.error


def wait_succeeded(endpoint_id: int, count: int, timeout: float) -> None:
    """Waits until `count` deliveries to the endpoint are recorded as succeeded."""
    from deliveries.models import Delivery

    deadline = time.monotonic() + timeout
    done = Delivery.objects.filter(endpoint_id=endpoint_id, status=Delivery.Status.SUCCEEDED)
    while done.count() < count:
        if time.monotonic() > deadline:
            raise BenchError(f"fewer than {count} deliveries succeeded after {timeout:.0f} s")
        time.sleep(0.1)


def windows(
    busy: list[tuple[str, list[float]]], started: float, ended: float, unlimited: list[float]
) -> list[Window]:
    """The phases, in order, from each busy phase's receipt times (its kind and its chunk's
    receipts) and the run's start and end; each with the unlimited receipts' rate in it."""
    phases: list[Window] = []
    after = started
    for kind, times in busy:
        phases.append(Window("off", after + TRIM_SECONDS, min(times) - TRIM_SECONDS))
        phases.append(Window(kind, min(times), max(times)))
        after = max(times)
    phases.append(Window("off", after + TRIM_SECONDS, ended - TRIM_SECONDS))
    ordered = sorted(unlimited)
    for window in phases:
        if window.end - window.start < TRIM_SECONDS:
            raise BenchError(f"a {window.kind} phase of {window.end - window.start:.2f} s")
        inside = _count_between(ordered, window.start, window.end)
        window.per_s = inside / (window.end - window.start)
    return phases


def _count_between(ordered: list[float], start: float, end: float) -> int:
    return bisect.bisect_right(ordered, end) - bisect.bisect_left(ordered, start)


def ratios(phases: list[Window], kind: str) -> list[float]:
    """Each `kind` phase's rate against the geometric mean of the off phases either side."""
    return [
        phase.per_s / math.sqrt(phases[i - 1].per_s * phases[i + 1].per_s)
        for i, phase in enumerate(phases)
        if phase.kind == kind
    ]


def repeats(phases: list[Window]) -> list[float]:
    """Consecutive off phases' rates, each against the one before: the same work twice."""
    off = [phase.per_s for phase in phases if phase.kind == "off"]
    return [b / a for a, b in itertools.pairwise(off)]


def starts_per_s(endpoint_id: int, chunks: list[set[str]]) -> list[float]:
    """The endpoint's first attempts per second within each chunk, by their recorded starts."""
    from deliveries.models import DeliveryAttempt

    started = dict(
        DeliveryAttempt.objects.filter(delivery__endpoint_id=endpoint_id, number=1).values_list(
            "delivery__event__public_id", "started_at"
        )
    )
    rates = []
    for chunk in chunks:
        starts = sorted(started[event] for event in chunk)
        rates.append((len(starts) - 1) / (starts[-1] - starts[0]).total_seconds())
    return rates


def measure_phases(
    stack: DeliveryStack, rate: int, cycles: int, seconds: float
) -> dict[str, float]:
    """The unlimited endpoints' rate in phases beside the rate-limited endpoint, and beside an
    unlimited one sending as much, each against the phases without either on both sides."""
    from django.utils import timezone

    from deliveries import rates
    from webhooks.models import WebhookEndpoint
    from webhooks.services import endpoint_update

    stack.celery()
    environment = stack.environment("phases")
    port = free_port()
    secrets = make_endpoints(
        environment, port, UNLIMITED_ENDPOINTS, "u", enabled_events=[EVENT_TYPE]
    )
    secrets |= make_endpoints(
        environment, port, 1, "l", rate_limit=rate, enabled_events=[EVENT_TYPE]
    )
    secrets |= make_endpoints(environment, port, 1, "s", enabled_events=[EVENT_TYPE])
    receiver = stack.start_receiver(secrets, [], port)
    made = {
        e.url.rsplit("/", 1)[1]: e for e in WebhookEndpoint.objects.filter(environment=environment)
    }
    unlimited = [made[f"u{i}"].pk for i in range(UNLIMITED_ENDPOINTS)]
    limited, same = made["l0"].pk, made["s0"].pk
    count = round(rate * seconds)
    step = timedelta(seconds=rates.step(rate))
    feeder = Feeder(environment, unlimited, BACKLOG)
    chunks: list[tuple[str, set[str]]] = []
    feeder.start()
    try:
        time.sleep(WARM_SECONDS)
        started = time.time()
        for _ in range(cycles):
            for kind, endpoint_id in (("limited", limited), ("same", same)):
                time.sleep(seconds)
                at = timezone.now()
                due = None if kind == "limited" else (lambda i, at=at: at + i * step)
                chunks.append((kind, due_deliveries(environment, [endpoint_id], count, due)))
                done = sum(1 for k, _ in chunks if k == kind) * count
                wait_succeeded(endpoint_id, done, max(120.0, 10 * seconds))
        time.sleep(seconds)
        ended = time.time()
    finally:
        feeder.stop()
        # What is left of the backlog cancelled, as disabling does, before the receiver goes:
        # the next workload's run is not to send it.
        for endpoint in WebhookEndpoint.objects.filter(environment=environment):
            endpoint_update(endpoint=endpoint, status=WebhookEndpoint.Status.DISABLED)
        time.sleep(2.0)  # what is in flight answered
    got = receiver.finish()["received"]
    by_event: dict[str, float] = {event: t for event, path, t in got if path in ("/l0", "/s0")}
    busy = [(kind, [by_event[event] for event in chunk]) for kind, chunk in chunks]
    free = [t for _, path, t in got if path.startswith("/u")]
    phases = windows(busy, started, ended, free)
    off_noise = repeats(phases)
    return {
        "phased_cycles": cycles,
        "phased_unlimited_per_s_off": statistics.median(p.per_s for p in phases if p.kind == "off"),
        "phased_limited_per_s": statistics.median(
            starts_per_s(limited, [chunk for kind, chunk in chunks if kind == "limited"])
        ),
        "phased_unlimited_ratio": statistics.median(ratios(phases, "limited")),
        "phased_unlimited_ratio_same_work": statistics.median(ratios(phases, "same")),
        "phased_repeat": statistics.median(off_noise),
        "phased_repeat_worst": max(off_noise, key=lambda ratio: abs(ratio - 1)),
    }
