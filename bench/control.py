"""Delivery control workloads on the real stack (the contract's "Delivery control").

    python -m bench.control [--quick] [--workers N] [--only ordered,rate,phases,recovery,burst]
        [--rounds N]
        [--docs | --no-docs]

- ordered: ORDERED_EVENTS events, one after another, to one ordered endpoint whose receiver
  answers in RECEIVER_DELAY seconds; deliveries/s against the ceiling of one request at a time
  (1 / the round trip, measured by a bare loop of one request at a time to the same receiver),
  and whether every event was first received in publication order. Beside it, reported, the
  same ratio from the last publish on: while the events are published, the publisher and their
  fan-outs share the machine with the chain.
- rate: a RATE_LIMIT/s endpoint beside 10 unlimited ones, against the same 10 without it: the
  limited endpoint's rate (its recorded starts, with a backlog of BACKLOG_SECONDS of its own
  events published first, so that it always has more than its limit lets through), and the
  unlimited ones' deliveries/s in both runs; then against the same 10 beside an 11th endpoint
  without a limit and without the backlog, which gets the run's deliveries: what the limit costs
  the others apart from the work of sending to it. `--rounds N` runs those two N times, each
  between two runs of the 10 alone (`measure_rate`), and judges each against the two. Also how
  many requests the 11th endpoint got within the window (up to the last unlimited receipt),
  limited and not: the limited one's grows with the window, 50/s for as long as the machine takes
  over the others' deliveries. Each round also runs, between two runs of the 10 alone, the 11th
  through the limit's path without its wait (a limit of PATH_LIMIT/s it never reaches, no
  backlog): the same sends as the unlimited 11th's, each given a slot, so that the
  path's own cost per send shows apart from waiting and from the limited endpoint's fewer sends.
  Consecutive runs of the 10 alone, against each other, are the measure's own noise (the same work
  twice, a minute apart), which a ratio within it cannot be told from. Beside those, PostgreSQL's
  own counters over each whole run, which the machine's speed does not move: transactions per
  delivery sent, and the limited endpoint's slot statements per request it sent. Then the
  steady comparison: the 10 unlimited endpoints at STEADY_RATE events/s (a load this machine
  carries) beside the limited endpoint at its limit, against the same load without it: their
  deliveries/s and publish-to-receipt p50 and p99, whether the limit holds them up apart from
  the CPU its own sends take.
- phases: the rate limit's cost to the others within one run, each phase beside the limited
  endpoint (or an unlimited one sending as much at its pace) against the phases without it on
  either side, seconds apart, while the others saturate the machine (bench/phases.py):
  PHASE_CYCLES cycles of PHASE_SECONDS phases.
- recovery: RECOVERY_DELIVERIES failed deliveries of one endpoint (made in bulk, as the product
  leaves them after the last retry) sent again by a recovery, seconds from asking for it to
  the last receipt, against as many fresh deliveries to one endpoint from the first publish;
  then live deliveries' p99 (LIVE_RATE events/s x 10 endpoints) while a recovery runs,
  against the same live load alone.
- burst: BURST_DELIVERIES failed deliveries made due again at once, as retries come due
  together after an outage: all of one endpoint, against as many spread over BURST_SPREAD
  endpoints; deliveries/s of each to its last receipt, their ratio, and PostgreSQL
  transactions per delivery (a busy endpoint's deliveries postponed and claimed again show
  there). Reported, without a target: it measures a limit of the admission per process.
Prints a table and, last, one JSON object; a full-size run of all four (or `--docs`) also
writes the figures against the issue's targets in docs/benchmarks.md's "Delivery control"
section, which `python -m bench` keeps when it rewrites the rest.
"""

import argparse
import itertools
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import requests

from bench import report
from bench.config import BenchError, add_docs_flags, command_line
from bench.deliveries import (
    ENDPOINTS_PER_EVENT,
    PRODUCERS,
    DeliveryStack,
    Receiver,
    fanned_out_events,
    free_port,
    make_endpoints,
    on_a_stack,
    percentile,
    publish,
    publish_concurrently,
    wait_recorded,
)
from bench.phases import measure_phases
from bench.scaling import postgres_counters

WORKLOADS = ("ordered", "rate", "phases", "recovery", "burst")

RECEIVER_DELAY = 0.010
ORDERED_EVENTS = 1000
RATE_LIMIT = 50
# A limit the 11th endpoint never reaches: its deliveries take the rate limit's path (slots,
# the timetable, their own threads) with no backlog and no wait.
PATH_LIMIT = 5000
UNLIMITED_ENDPOINTS = 10
RATE_EVENTS = 1000
# The limited endpoint's own backlog, in seconds of its limit, and the type of its events.
BACKLOG_SECONDS = 20
BACKLOG_TYPE = "judgment.updated"
# The steady comparison's load, events/s to the 10 unlimited endpoints (LIVE_RATE's reasoning),
# and its events (20 s of it).
PHASE_CYCLES = 4
PHASE_SECONDS = 8.0
STEADY_RATE = 25.0
STEADY_EVENTS = 500
RECOVERY_DELIVERIES = 100_000
# Events/s x 10 endpoints: half of bench.deliveries' latency run. Its 500 deliveries/s are this
# machine's whole capacity on a slow minute, where live traffic alone queues for seconds and
# nothing is left for a recovery to use; at 250/s a recovery has room, and whether it takes
# that room from live traffic is what the figure shows (docs/delivery-control.md).
LIVE_RATE = 25.0
BURST_DELIVERIES = 10_000
BURST_SPREAD = 10
# Rows per INSERT when making the failed deliveries.
INSERT_CHUNK = 5000
# PostgreSQL's backends report their counts up to a second after a transaction ends.
STATS_FLUSH_SECONDS = 1.2


def round_trip(url: str, requests_made: int = 300) -> float:
    """Seconds per request, one at a time, to `url` (the ceiling of an ordered endpoint)."""
    body = json.dumps({"id": "evt_x", "data": {"i": 0}}).encode()
    with requests.Session() as session:
        for _ in range(20):
            session.post(url, data=body, timeout=5)
        started = time.perf_counter()
        for _ in range(requests_made):
            session.post(url, data=body, timeout=5)
        return (time.perf_counter() - started) / requests_made


def measure_ordered(stack: DeliveryStack, events: int) -> dict[str, float]:
    stack.celery()
    environment = stack.environment("ordered")
    port = free_port()
    secrets = make_endpoints(environment, port, 1, "o", delivery_order="ordered")
    delays = {"/o0": RECEIVER_DELAY, "/rtt": RECEIVER_DELAY}
    receiver = stack.start_receiver(secrets, [], port, delays=delays)
    # The ceiling, on a path of its own on the same receiver (unverified receipts there).
    rtt = round_trip(f"{receiver.url}/rtt")
    published = publish(environment, events)
    wait_recorded(environment, events, 600)
    got = [r for r in receiver.finish()["received"] if r[1] == "/o0"]
    firsts: dict[str, float] = {}
    for event_id, _, at in sorted(got, key=lambda r: r[2]):
        firsts.setdefault(event_id, at)
    in_order = list(firsts) == list(published)
    times = sorted(firsts.values())
    per_s = (len(times) - 1) / (times[-1] - times[0])
    # The chain alone, once the last publish has returned: while the events are published,
    # the publisher and their fan-outs share the two cores with it.
    after = [t for t in times if t >= max(published.values())]
    alone = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else math.nan
    return {
        "ordered_per_s": per_s,
        "ordered_ceiling_per_s": 1 / rtt,
        "ordered_ratio": per_s * rtt,
        "ordered_in_publication_order": float(in_order),
        "ordered_after_publishing_ratio": alone * rtt,
        "ordered_after_publishing_share": len(after) / len(times),
    }


def _rate_setup(
    stack: DeliveryStack, name: str, eleventh: int | None
) -> tuple[Any, Receiver, int, int]:
    """An environment with the 10 unlimited endpoints, and an 11th (`eleventh`: its rate limit,
    0 for none, None for no 11th) taking every event; with a rate limit under PATH_LIMIT, the
    11th's own backlog published and fanned out. Returns the environment, the receiver, how
    many endpoints, and how many deliveries the backlog made."""
    environment = stack.environment(name)
    port = free_port()
    secrets = make_endpoints(
        environment, port, UNLIMITED_ENDPOINTS, "u", enabled_events=["judgment.created"]
    )
    if eleventh is not None:
        secrets |= make_endpoints(
            environment, port, 1, "l", rate_limit=eleventh or None, enabled_events=["*"]
        )
    receiver = stack.start_receiver(secrets, [], port)
    backlog = 0
    if eleventh and eleventh < PATH_LIMIT:
        # Its own backlog first (events only it gets), so that it has more to send than its
        # limit lets through all along, whatever the fan-out's pace on this machine; fanned out
        # before the window opens, whose work it is not.
        backlog = BACKLOG_SECONDS * eleventh
        publish_concurrently(environment, backlog, PRODUCERS, event_type=BACKLOG_TYPE)
        wait_made(environment, backlog, 120)
    history_vacuumed()
    return environment, receiver, len(secrets), backlog


def _unlimited_run(stack: DeliveryStack, events: int, eleventh: int | None) -> dict[str, float]:
    """The unlimited endpoints' deliveries/s, beside nothing (`eleventh` None) or an 11th
    endpoint with that rate limit (0: none), whose rate is measured too."""
    environment, receiver, endpoint_count, backlog = _rate_setup(stack, f"rate{eleventh}", eleventh)
    limited = eleventh is not None
    counted = database_counts()
    started = time.time()  # also when the counts were read
    # Concurrently, as the throughput run: one thread publishing set the pace of both figures
    # on a slow machine (~35 events/s, short of the limit).
    publish_concurrently(environment, events, PRODUCERS)
    wait_recorded(environment, events * endpoint_count + backlog, 900)
    got = receiver.finish()["received"]
    counts = {k: v - counted[k] for k, v in database_counts().items()}
    free = sorted(t for _, path, t in got if path.startswith("/u"))
    # What was sent from the counts on, to the end of the run (the backlog's part of it too).
    sent = [path for _, path, t in got if t >= started]
    result = {
        "unlimited_per_s": len(free) / (free[-1] - started),
        "commits_per_send": counts["commits"] / len(sent),
    }
    if eleventh:
        limited_sent = sum(1 for path in sent if path.startswith("/l"))
        result["slot_statements_per_limited_send"] = counts["lane"] / limited_sent
    if limited:
        result["limited_per_s"] = starts_per_s(environment)
        # The 11th endpoint's share of the window's sends: the limited one sends its rate for
        # as long as the window lasts, so on a slower machine it does more of the window's work.
        # Its backlog's sends before the window (while the history was vacuumed) are not.
        result["eleventh_in_window"] = sum(
            1 for _, path, t in got if path.startswith("/l") and started <= t <= free[-1]
        )
    return result


def _steady_run(stack: DeliveryStack, events: int, limited: bool) -> dict[str, float]:
    """The unlimited endpoints at STEADY_RATE events/s, beside the limited endpoint (at its
    limit all along, its backlog first) or nothing: their deliveries/s and publish-to-receipt
    percentiles (ms)."""
    eleventh = RATE_LIMIT if limited else None
    environment, receiver, endpoint_count, backlog = _rate_setup(
        stack, f"steady{eleventh}", eleventh
    )
    published = publish(environment, events, rate=STEADY_RATE)
    wait_recorded(environment, events * endpoint_count + backlog, 900)
    got = [(e, t) for e, path, t in receiver.finish()["received"] if path.startswith("/u")]
    waits = [(t - published[e]) * 1000 for e, t in got if e in published]
    return {
        "per_s": len(got) / (max(t for _, t in got) - min(published.values())),
        "p50_ms": percentile(waits, 0.50),
        "p99_ms": percentile(waits, 0.99),
    }


def measure_steady(stack: DeliveryStack, events: int) -> dict[str, float]:
    """The unlimited endpoints at a load this machine carries (STEADY_RATE events/s to 10
    endpoints) beside the limited endpoint, against the same load without it: whether the
    limit holds the others up, apart from the CPU its own work takes from them (what the
    rate runs' saturated windows measure)."""
    stack.celery()
    without = _steady_run(stack, events, limited=False)
    beside = _steady_run(stack, events, limited=True)
    return {
        "steady_rate": STEADY_RATE * UNLIMITED_ENDPOINTS,
        "steady_per_s_without": without["per_s"],
        "steady_per_s_with": beside["per_s"],
        "steady_ratio": beside["per_s"] / without["per_s"],
        "steady_p50_ms_without": without["p50_ms"],
        "steady_p50_ms_with": beside["p50_ms"],
        "steady_p99_ms_without": without["p99_ms"],
        "steady_p99_ms_with": beside["p99_ms"],
        "steady_p99_ratio": beside["p99_ms"] / without["p99_ms"],
    }


def wait_made(environment: Any, count: int, timeout: float) -> None:
    """Waits until the environment's events have made `count` deliveries."""
    from deliveries.models import Delivery

    deadline = time.monotonic() + timeout
    while Delivery.objects.filter(endpoint__environment=environment).count() < count:
        if time.monotonic() > deadline:
            raise BenchError(f"fewer than {count} deliveries made after {timeout:.0f} s")
        time.sleep(0.1)


def history_vacuumed() -> None:
    """VACUUM (ANALYZE) of the delivery history, as autovacuum keeps it in production: this
    machine's PostgreSQL runs without autovacuum, and each run's dead rows and index entries
    made the next run's claims read more (the top-up's scan of the due index cost 0.3 ms in a
    round's first run, 9 ms in its third), so that a run's figure depended on its place in
    the round (docs/delivery-control.md)."""
    from django.db import connection

    from deliveries.models import Delivery, DeliveryAttempt, Event, Lane

    with connection.cursor() as cursor:
        for model in (Event, Delivery, DeliveryAttempt, Lane):
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(model._meta.db_table)}")


def database_counts() -> dict[str, int]:
    """PostgreSQL's counts for the bench database: transactions committed (the bench's own
    few included), and the rows written to the lanes (the slot statements: one lane row each).
    Counters, so the same work counts the same on a fast minute and a slow one, where the
    throughput ratio strays by a tenth."""
    from django.db import connection

    from deliveries.models import Lane

    time.sleep(STATS_FLUSH_SECONDS)
    commits = postgres_counters()["xact_commit"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = %s",
            [Lane._meta.db_table],
        )
        row = cursor.fetchone()
    return {"commits": commits, "lane": row[0] if row else 0}


def starts_per_s(environment: Any) -> float:
    """The 11th endpoint's first attempts per second, from their recorded starts (the
    worker's own clock: what the limit governs, before the receiver's queue)."""
    from deliveries.models import DeliveryAttempt

    starts = sorted(
        DeliveryAttempt.objects.filter(
            delivery__endpoint__environment=environment,
            delivery__endpoint__url__endswith="/l0",
            number=1,
        ).values_list("started_at", flat=True)
    )
    return (len(starts) - 1) / (starts[-1] - starts[0]).total_seconds()


def own_sends_ratio(
    without: list[dict[str, float]], limited: list[dict[str, float]], same: list[dict[str, float]]
) -> float:
    """The ratio the limited endpoint's own sends alone would give the unlimited endpoints, were
    each as costly as one of the unlimited 11th endpoint's in the same round: (1 - that run's
    ratio to the runs alone around it, `without`) for each of its sends in the window, times
    the limited endpoint's sends there. The median of the rounds'. Under `unlimited_ratio` by
    what the limit's machinery costs beyond its sends; under 0.95, no limiter meets the target
    on these saturated cores. An estimate: it prices a send at the 11th's, made and sent alike."""
    return statistics.median(
        1
        - (1 - s["unlimited_per_s"] / w["unlimited_per_s"])
        * lim["eleventh_in_window"]
        / s["eleventh_in_window"]
        for w, lim, s in zip(without, limited, same, strict=True)
    )


def bracket(before: dict[str, float], after: dict[str, float]) -> float:
    """The unlimited endpoints' deliveries/s alone around a run: the geometric mean of the runs
    without the 11th endpoint just before and just after it."""
    return math.sqrt(before["unlimited_per_s"] * after["unlimited_per_s"])


def measure_rate(stack: DeliveryStack, events: int, rounds: int = 1) -> dict[str, float]:
    """The 10 unlimited endpoints alone, then, `rounds` times, beside the limited endpoint and
    beside an unlimited 11th (in turned order from round to round), each followed by the 10
    alone again: W L W S W, then W S W L W, ... Each run beside an 11th is judged against the
    runs alone on either side of it (`bracket`): this machine's speed moves in steps of up to a
    third from one minute to the next, and a run set against one neighbour alone took a step
    between them as the limit's cost (docs/delivery-control.md). Each figure the median of its
    rounds, each ratio the median of the rounds' own. Consecutive runs alone, against each
    other, are the same work twice: how far a ratio strays here with nothing changed.

    Each round also runs the 11th endpoint through the rate limit's path without its wait (a
    limit of PATH_LIMIT, no backlog: the unlimited 11th's sends, each given a slot and a turn),
    followed by the 10 alone: what the limit's machinery costs the others per send, against
    the same sends unlimited, with a signal larger than the limited run's (twice its sends)."""
    stack.celery()
    without = [_unlimited_run(stack, events, None)]
    kinds = (RATE_LIMIT, 0, PATH_LIMIT)
    runs: dict[int, list[dict[str, float]]] = {kind: [] for kind in kinds}
    alone: dict[int, list[dict[str, float]]] = {kind: [] for kind in kinds}  # their brackets
    before: list[float] = []  # the limited run against the run alone just before it
    for r in range(rounds):
        for kind in kinds[r % 3 :] + kinds[: r % 3]:  # each kind first in turn
            runs[kind].append(_unlimited_run(stack, events, kind))
            without.append(_unlimited_run(stack, events, None))
            alone[kind].append({"unlimited_per_s": bracket(without[-2], without[-1])})
            if kind == RATE_LIMIT:
                before.append(runs[kind][-1]["unlimited_per_s"] / without[-2]["unlimited_per_s"])
    limited, same_work, path = runs[RATE_LIMIT], runs[0], runs[PATH_LIMIT]
    repeats = [b["unlimited_per_s"] / a["unlimited_per_s"] for a, b in itertools.pairwise(without)]

    def median_of(key: str, of: list[dict[str, float]]) -> float:
        return statistics.median(run[key] for run in of)

    def median_ratio(beside: list[dict[str, float]], against: list[dict[str, float]]) -> float:
        """The median of the rounds' own ratios: `beside`'s unlimited deliveries/s to
        `against`'s in the same round."""
        pairs = zip(beside, against, strict=True)
        return statistics.median(b["unlimited_per_s"] / a["unlimited_per_s"] for b, a in pairs)

    return {
        "rate_limit": RATE_LIMIT,
        "rate_rounds": rounds,
        "limited_per_s": median_of("limited_per_s", limited),
        "unlimited_per_s_without": median_of("unlimited_per_s", without),
        "unlimited_per_s_with": median_of("unlimited_per_s", limited),
        "unlimited_ratio": median_ratio(limited, alone[RATE_LIMIT]),
        "unlimited_ratio_to_the_run_before": statistics.median(before),
        "unlimited_per_s_beside_unlimited_11th": median_of("unlimited_per_s", same_work),
        "unlimited_ratio_unlimited_11th": median_ratio(same_work, alone[0]),
        "unlimited_ratio_same_work": median_ratio(limited, same_work),
        "limited_sent_in_window": median_of("eleventh_in_window", limited),
        "unlimited_11th_sent_in_window": median_of("eleventh_in_window", same_work),
        "unlimited_ratio_own_sends": own_sends_ratio(alone[0], limited, same_work),
        "unlimited_ratio_limit_path": median_ratio(path, alone[PATH_LIMIT]),
        "unlimited_ratio_limit_path_same_work": median_ratio(path, same_work),
        "limit_path_per_s": median_of("limited_per_s", path),
        "commits_per_send_without": median_of("commits_per_send", without),
        "commits_per_send_limited": median_of("commits_per_send", limited),
        "commits_per_send_same_work": median_of("commits_per_send", same_work),
        "slot_statements_per_limited_send": median_of("slot_statements_per_limited_send", limited),
        "unlimited_ratio_repeat": statistics.median(repeats),
        "unlimited_ratio_repeat_worst": max(repeats, key=lambda ratio: abs(ratio - 1)),
    }


def failed_deliveries(environment: Any, count: int) -> tuple[Any, datetime]:
    """The environment's one endpoint with `count` deliveries failed for good, of events spread
    over the hour from two hours ago: the rows the product leaves after the last retry
    (status, attempt count, last attempt and its row), inserted in bulk rather than failed
    one by one. Returns the endpoint and the window's start."""
    from django.db import transaction
    from django.utils import timezone

    from deliveries.models import Delivery, DeliveryAttempt
    from deliveries.schedule import max_attempts
    from webhooks.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.get(environment=environment)
    since = timezone.now() - timedelta(hours=2)
    step = timedelta(hours=1) / count
    failed_at = since + timedelta(hours=1, minutes=30)
    attempts = max_attempts()
    with transaction.atomic():
        for first in range(0, count, INSERT_CHUNK):
            chunk = range(first, min(count, first + INSERT_CHUNK))
            events = fanned_out_events(environment, [since + i * step for i in chunk], first=first)
            deliveries = Delivery.objects.bulk_create(
                Delivery(
                    event=event,
                    endpoint=endpoint,
                    status=Delivery.Status.FAILED,
                    attempt_count=attempts,
                    next_attempt_at=None,
                    created_at=event.created_at,
                    last_attempt_at=failed_at,
                    last_status_code=500,
                    completed_at=failed_at,
                )
                for event in events
            )
            DeliveryAttempt.objects.bulk_create(
                DeliveryAttempt(
                    delivery=delivery,
                    event_id=delivery.event_id,  # history is partitioned by event id
                    number=attempts,
                    started_at=failed_at,
                    duration_ms=5,
                    status_code=500,
                )
                for delivery in deliveries
            )
    return endpoint, since


def publish_until(environment: Any, rate: float, stop: threading.Event) -> dict[str, float]:
    """Events at `rate`/s, one per transaction, until `stop` is set; event id -> publish
    time. On a thread of its own: it closes its own connection at the end."""
    from django.db import connection

    published: dict[str, float] = {}
    started = time.monotonic()
    try:
        while not stop.is_set():
            stop.wait(max(0.0, started + len(published) / rate - time.monotonic()))
            published |= publish(environment, 1)
    finally:
        connection.close()
    return published


def recovered(stack: DeliveryStack, count: int, live: threading.Thread | None = None) -> float:
    """Seconds from asking for the recovery of `count` failed deliveries of one endpoint to
    the last receipt of them, with `live` (a thread publishing meanwhile) started first."""
    from deliveries.recovery import recovery_create

    environment = stack.environment("recovery")
    port = free_port()
    secrets = make_endpoints(environment, port, 1, "r")
    receiver = stack.start_receiver(secrets, [], port)
    endpoint, since = failed_deliveries(environment, count)
    if live is not None:
        live.start()
    started = time.time()
    recovery_create(endpoint=endpoint, since=since)
    wait_recorded(environment, count, 3600, progress_every=30)
    got = receiver.finish()["received"]
    seen = len({event for event, _, _ in got})
    if seen < count:
        raise BenchError(f"the recovery's receiver saw {seen} of {count} deliveries")
    return max(t for _, _, t in got) - started


def live_p99(published: dict[str, float], receiver: Receiver) -> float:
    """Publish-to-receipt p99 (ms) of the events in `published`."""
    got = receiver.finish()["received"]
    return percentile([(t - published[e]) * 1000 for e, _, t in got if e in published], 0.99)


def measure_recovery(stack: DeliveryStack, count: int) -> dict[str, float]:
    """The recovery of `count` failed deliveries against `count` fresh ones, and live
    deliveries' p99 while a recovery runs against the same live load alone."""
    stack.celery()
    # Fresh: `count` events to one endpoint, as fast as the producers publish them.
    environment = stack.environment("fresh")
    receiver, _ = stack.receiver(environment, 1, "f")
    started = time.time()
    fresh_published = publish_concurrently(environment, count, PRODUCERS)
    # Beside the result: the last receipt follows the last publish closely when the
    # producers, not the workers, set the pace.
    print(f"    fresh: {count:,} published in {max(fresh_published.values()) - started:.1f} s")
    wait_recorded(environment, count, 3600, progress_every=30)
    fresh = max(t for _, _, t in receiver.finish()["received"]) - started
    recovery = recovered(stack, count)

    # Live traffic during a second recovery as large, then as many live events alone.
    live_environment = stack.environment("live-during")
    live_receiver, _ = stack.receiver(live_environment, ENDPOINTS_PER_EVENT, "v")
    stop = threading.Event()
    published: dict[str, float] = {}
    live = threading.Thread(
        target=lambda: published.update(publish_until(live_environment, LIVE_RATE, stop)),
        name="live-publisher",
    )
    try:
        print(f"    recovery during live traffic: {recovered(stack, count, live):.1f} s")
    finally:
        stop.set()
        if live.ident is not None:
            live.join()
    wait_recorded(live_environment, len(published) * ENDPOINTS_PER_EVENT, 300)
    during = live_p99(published, live_receiver)

    alone_environment = stack.environment("live-alone")
    alone_receiver, _ = stack.receiver(alone_environment, ENDPOINTS_PER_EVENT, "v")
    alone = publish(alone_environment, len(published), rate=LIVE_RATE)
    wait_recorded(alone_environment, len(alone) * ENDPOINTS_PER_EVENT, 300)
    without = live_p99(alone, alone_receiver)
    return {
        "recovery_fresh_seconds": fresh,
        "recovery_seconds": recovery,
        "recovery_ratio": recovery / fresh,
        "live_p99_ms_without_recovery": without,
        "live_p99_ms_during_recovery": during,
        "live_p99_ratio": during / without,
    }


def _burst(stack: DeliveryStack, count: int, spread: int) -> dict[str, float]:
    """`count` failed deliveries over `spread` endpoints (one per environment), made due at
    once: deliveries/s to the last receipt, and transactions per delivery."""
    from django.utils import timezone

    from deliveries.models import Delivery

    environments, receivers = [], []
    for k in range(spread):
        environments.append(stack.environment(f"burst-{spread}-{k}"))
        port = free_port()
        secrets = make_endpoints(environments[-1], port, 1, "b")
        receivers.append(stack.start_receiver(secrets, [], port))
        failed_deliveries(environments[-1], count // spread)
    before = database_counts()["commits"]
    started = time.time()
    Delivery.objects.filter(endpoint__environment__in=environments).update(
        status=Delivery.Status.PENDING, next_attempt_at=timezone.now(), completed_at=None
    )
    for environment in environments:
        wait_recorded(environment, count // spread, 3600, progress_every=30)
    last = max(max(t for _, _, t in receiver.finish()["received"]) for receiver in receivers)
    commits = database_counts()["commits"] - before
    return {"per_s": count / (last - started), "commits_per_delivery": commits / count}


def measure_burst(stack: DeliveryStack, count: int) -> dict[str, float]:
    """Retries coming due together for one endpoint, against as many over BURST_SPREAD."""
    stack.celery()
    one = _burst(stack, count, 1)
    spread = _burst(stack, count, BURST_SPREAD)
    return {
        "burst_one_endpoint_per_s": one["per_s"],
        "burst_spread_per_s": spread["per_s"],
        "burst_ratio": one["per_s"] / spread["per_s"],
        "burst_one_endpoint_commits_per_delivery": one["commits_per_delivery"],
        "burst_spread_commits_per_delivery": spread["commits_per_delivery"],
    }


def run(args: argparse.Namespace) -> dict[str, float]:
    scale = 10 if args.quick else 1
    chosen = set(args.only.split(",")) if args.only else set(WORKLOADS)

    def measure(stack: DeliveryStack) -> dict[str, float]:
        results: dict[str, float] = {}
        if "ordered" in chosen:
            results |= measure_ordered(stack, ORDERED_EVENTS // scale)
        if "rate" in chosen:
            results |= measure_rate(stack, RATE_EVENTS // scale, args.rounds)
            results |= measure_steady(stack, STEADY_EVENTS // scale)
        if "phases" in chosen:
            cycles, seconds = (
                (2, PHASE_SECONDS / 2) if args.quick else (PHASE_CYCLES, PHASE_SECONDS)
            )
            results |= measure_phases(stack, RATE_LIMIT, cycles, seconds)
        if "recovery" in chosen:
            results |= measure_recovery(stack, RECOVERY_DELIVERIES // scale)
        if "burst" in chosen:
            results |= measure_burst(stack, BURST_DELIVERIES // scale)
        return results

    return on_a_stack(args.workers, measure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control")
    parser.add_argument("--quick", action="store_true", help="a tenth of every workload's size")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rate: the limited run and the unlimited 11th's this many times each",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="celery worker processes"
    )
    add_docs_flags(
        parser,
        "write the figures in docs/benchmarks.md's delivery control section; by default only "
        "a full-size run of all four workloads does",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        results = run(args)
    except BenchError as exc:
        print(f"bench.control: {exc}", file=sys.stderr)
        return 1
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.2f}")
    write_docs = args.docs if args.docs is not None else not (args.quick or args.only)
    if write_docs:
        command = command_line("bench.control", argv)
        section = report.control_markdown(results, command, time.monotonic() - started)
        print(f"wrote {report.write_control_docs(section)}")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
