"""One round of `python -m bench.volume` on one database (Django set up for it): delivery
throughput and p99, the sweep and the claim, and what the round's reads need (timed by
bench.volume_reads, the two databases side by side); and the retention pass. The hot paths are
the product's own functions and views, and the SQL they ran is captured (Django's
`execute_wrapper`) for EXPLAIN ANALYZE."""

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from bench import volume_fill
from bench.deliveries import (
    Broker,
    DeliveryStack,
    measure_latency,
    measure_throughput,
    new_environment,
    percentile,
)
from bench.volume_config import (
    DUE_ROWS,
    FULL_RATE,
    LATENCY_EVENTS,
    LATENCY_RATE,
    QUERY_REPETITIONS,
    THROUGHPUT_EVENTS,
)


@dataclass
class Captured:
    """The statements Django ran while capturing, each with its parameters and seconds."""

    statements: list[tuple[str, Any, float]] = field(default_factory=list)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 context: dict[str, Any]) -> Any:  # fmt: skip
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.statements.append((sql, params, time.perf_counter() - started))

    def slowest(self) -> tuple[str, Any, float]:
        """The slowest query on the history tables (not a session's or a user's)."""
        history = [s for s in self.statements if explainable(s[0]) and "deliveries_" in s[0]]
        return max(history, key=lambda s: s[2])


@contextmanager
def capturing() -> Iterator[Captured]:
    captured = Captured()
    with connection.execute_wrapper(captured):
        yield captured


def explainable(statement: str) -> bool:
    """A query of the code's (not a savepoint, a lock or a setting)."""
    start = statement.lstrip()[:20].upper()
    return start.startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")) and not (
        start.startswith(("SELECT PG_", "SELECT SET_CONFIG"))
    )


def explain(statement: str, params: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a statement, run in a savepoint rolled back after."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


# --- a round -----------------------------------------------------------------------------------


class RoundStack(DeliveryStack):
    """The delivery stack of one round: its organizations' slugs unique across the rounds
    (each a process of its own) on one database."""

    def environment(self, name: str) -> Any:
        return new_environment(f"{name}-{uuid.uuid4().hex[:12]}")


def measure(workdir: Path, broker: Broker, workers: int, explain_plans: bool) -> dict[str, Any]:
    """This database's figures of a round: the stack's first, then the sweep's and the claim's
    with the workers stopped (nothing else runs on the database meanwhile); and what the
    round's reads need (bench.volume_reads times them, the two databases side by side)."""
    from bench import report

    filled = volume_fill.stored()
    figures: dict[str, float] = {}
    plans: dict[str, str] = {}
    with closing(RoundStack(workdir, broker, workers)) as deliveries:
        throughput = measure_throughput(deliveries, THROUGHPUT_EVENTS)
        figures["deliveries_per_s"] = throughput.per_s
        latencies = measure_latency(deliveries, "latency", LATENCY_EVENTS, LATENCY_RATE)
        figures["delivery_p99_ms"] = percentile(latencies, 0.99)
        deliveries.stop_celery()
        console = _console_client()
        reads = prepare_reads(filled, console)
        if explain_plans:
            admin_plans(reads["info"], console, plans)
        figures |= engine_figures(plans if explain_plans else None)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        machine = report.machine_info(cursor.fetchone()[0], "")
    machine.pop("wrk", None)
    return {"figures": figures, "info": reads["info"], "reads": reads, "plans": plans,
            "machine": machine}  # fmt: skip


def _console_client() -> Any:
    """Django's test client logged in as a new superuser: its session is in the database, so
    gunicorn reads it too."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser(
        username=f"volume-{uuid.uuid4().hex[:8]}", email="volume@example.com", password=None
    )
    client = Client()
    client.force_login(user)
    return client


def prepare_reads(filled: volume_fill.Filled, console: Any) -> dict[str, Any]:
    """The rows the reads ask for, an API key that may read them, and the console's session:
    what bench.volume_reads sends to this database's gunicorn."""
    from bench.seed import Tenant

    tenant = Tenant(environment=_environment(filled), raw_key=_read_key(filled))
    cookie = settings.SESSION_COOKIE_NAME
    return {"info": _shapes(filled), "api_headers": tenant.headers, "session_cookie": cookie,
            "session": console.cookies[cookie].value}  # fmt: skip


def _environment(filled: volume_fill.Filled) -> Any:
    from accounts.models import Environment

    return Environment.objects.get(pk=filled.environment_id)


def _read_key(filled: volume_fill.Filled) -> str:
    from accounts import scopes
    from accounts.services import api_key_create

    _, raw = api_key_create(
        environment=_environment(filled),
        scopes=[scopes.EVENTS_READ, scopes.WEBHOOK_ENDPOINTS_READ],
        name="bench.volume",
    )
    return raw


def _shapes(filled: volume_fill.Filled) -> dict[str, Any]:
    """The rows the reads ask for: the first huge endpoint, a delivery of it from the middle
    of the month (the deep page's cursor), and the event with FAN_OUT deliveries."""
    from deliveries.models import Delivery, Event
    from webhooks.models import WebhookEndpoint

    huge = filled.huge_endpoint_ids[0]
    middle_event = filled.day_ids[len(filled.day_ids) // 2][0]
    return {
        "rows": volume_fill.row_counts(),
        "schema": "partitioned" if volume_fill.partitioned() else "plain",
        "fill_seconds": filled.fill_seconds,
        "scale": filled.scale,
        "huge_endpoint": WebhookEndpoint.objects.get(pk=huge).public_id,
        "deep_cursor": Delivery.objects.get(endpoint_id=huge, event_id=middle_event).public_id,
        "deep_cursor_depth": filled.events // 2,
        "fan_event": Event.objects.get(pk=filled.fan_event_id).public_id,
    }


def admin_plans(info: dict[str, Any], console: Any, plans: dict[str, str]) -> None:
    """EXPLAIN ANALYZE of the slowest statement of each console list the reads time, each page
    rendered once through the logged-in test client (the same code gunicorn runs)."""
    from bench.volume_reads import admin_paths

    for name, url in admin_paths(info).items():
        with capturing() as captured:
            response = console.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
        statement, params, seconds = captured.slowest()
        heading = f"-- slowest of {len(captured.statements)} statements: {seconds * 1000:.1f} ms"
        plans[name] = f"{heading}\n{statement}\n\n{explain(statement, params)}"


def engine_figures(plans: dict[str, str] | None) -> dict[str, float]:
    """The sweep (`deliveries_sweep`) and a claim (`claiming.claim`, a batch of DUE_ROWS / 2
    asked for and as many more topped up) with DUE_ROWS deliveries due, each time in a
    transaction rolled back after; the plans of the statements they ran, each explained in
    the state before its call."""
    from deliveries import claiming
    from deliveries.services import deliveries_sweep

    def sweep(due: dict[int, int], now: datetime) -> None:
        deliveries_sweep(now=now)

    def claim(due: dict[int, int], now: datetime) -> None:
        # As a task the sweep queued: its deliveries, with their events.
        asked = list(due)[: len(due) // 2]
        events = {due[pk] for pk in asked}
        room = len(due) - len(asked)
        claiming.claim(asked, room, now, uuid.uuid4(), held=False, event_ids=events)

    calls = {"sweep_ms": sweep, "claim_ms": claim}
    times: dict[str, list[float]] = {name: [] for name in calls}
    captured: dict[str, Captured] = {}
    for repetition in range(QUERY_REPETITIONS + 1):
        for name, call in calls.items():
            with transaction.atomic():
                due = _make_due()
                with capturing() as captured[name]:
                    started = time.perf_counter()
                    call(due, timezone.now())
                    elapsed = (time.perf_counter() - started) * 1000
                if repetition:  # the first is a warm-up
                    times[name].append(elapsed)
                transaction.set_rollback(True)
    for name in calls:
        if plans is None:
            break
        with transaction.atomic():
            _make_due()
            plans[name] = "\n\n".join(
                f"-- {seconds * 1000:.2f} ms\n{statement}\n{explain(statement, params)}"
                for statement, params, seconds in captured[name].statements
                if explainable(statement)
            )
            transaction.set_rollback(True)
    return {name: statistics.median(values) for name, values in times.items()}


def _make_due() -> dict[int, int]:
    """The newest DUE_ROWS deliveries (delivery: event) made pending and due a minute ago, as a
    retry leaves them (inside the caller's transaction, which rolls them back)."""
    from deliveries.models import Delivery

    newest = dict(Delivery.objects.order_by("-id").values_list("id", "event_id")[:DUE_ROWS])
    ids = list(newest)
    Delivery.objects.filter(id__in=ids).update(
        status=Delivery.Status.PENDING,
        next_attempt_at=timezone.now() - timedelta(minutes=1),
        enqueued_at=None,
        claimed_until=None,
        claim_token=None,
        completed_at=None,
    )
    return newest


# --- retention -------------------------------------------------------------------------------


def retention() -> dict[str, Any]:
    """One `retention_prune` pass with a `now` that makes exactly the oldest day expire, timed,
    then rolled back (the database stays as filled, for the next --measure-only)."""
    from deliveries.retention import retention_prune

    filled = volume_fill.stored()
    lo, hi = filled.day_ids[0]
    now = volume_fill.first_day(filled) + timedelta(days=settings.WEBHOOKS_RETENTION_DAYS + 1)
    before = _day_rows(lo, hi)
    with transaction.atomic():
        with capturing() as captured:
            started = time.perf_counter()
            pruned = retention_prune(now=now)
            seconds = time.perf_counter() - started
        after = _day_rows(lo, hi)
        profile = _profile(captured)
        first_batch = next(s for s in captured.statements if explainable(s[0]))
        plan = f"{first_batch[0]}\n\n{explain(first_batch[0], first_batch[1])}"
        transaction.set_rollback(True)
    removed = {name: before[name] - after[name] for name in before}
    rows = sum(removed.values())
    write_seconds = before["deliveries"] / FULL_RATE
    # The day: 86.4 M deliveries and as many attempts, and their events.
    full_day_rows = FULL_RATE * 86_400 * (1 + removed["attempts"] / max(1, removed["deliveries"]))
    figures = {
        "seconds": seconds,
        "events_pruned": pruned["events"],
        "rows_removed": rows,
        "rows_per_s": rows / seconds,
        "day_write_seconds_at_full_rate": write_seconds,
        "ratio_to_write_time": seconds / write_seconds,
        "full_day_prune_seconds_at_this_rate": full_day_rows / (rows / seconds),
        "events_left_in_day": after["events"],
    }
    return {"figures": figures, "before": before, "after": after, "profile": profile,
            "first_batch_plan": plan, "now": now.isoformat(),
            "retention_days": settings.WEBHOOKS_RETENTION_DAYS}  # fmt: skip


def _day_rows(lo: int, hi: int) -> dict[str, int]:
    from deliveries.models import Delivery, DeliveryAttempt, Event

    return {
        "events": Event.objects.filter(id__range=(lo, hi)).count(),
        "deliveries": Delivery.objects.filter(event__gte=lo, event__lte=hi).count(),
        "attempts": DeliveryAttempt.objects.filter(
            delivery__event__gte=lo, delivery__event__lte=hi
        ).count(),
    }


def _profile(captured: Captured) -> list[dict[str, Any]]:
    """The statements of a pass grouped by their start: how many, and their seconds."""
    groups: dict[str, list[float]] = {}
    for statement, _, seconds in captured.statements:
        groups.setdefault(" ".join(statement.split())[:90], []).append(seconds)
    return sorted(
        ({"statement": k, "count": len(v), "seconds": round(sum(v), 3)} for k, v in groups.items()),
        key=lambda g: -g["seconds"],
    )
