"""Sending a batch of deliveries: claim, sign, send concurrently, record.

A batch costs a handful of queries whatever its size: one UPDATE claims it, one SELECT loads
deliveries with their events and endpoints, one loads the signing secrets, one INSERT records
the attempts and one UPDATE per outcome records the results, guarded by the claim token so a
worker whose lease ran out (and whose deliveries another worker took over) changes nothing.
HTTP happens outside any transaction, on a pool of threads shared by the worker process.
"""

import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from api import metrics
from deliveries import schedule, signature, transport
from deliveries.models import Delivery, DeliveryAttempt
from deliveries.selectors import deliveries_due
from deliveries.services import endpoint_deliveries_cancel
from webhooks import encryption
from webhooks.models import EndpointSecret, WebhookEndpoint

logger = logging.getLogger(__name__)

# Results finished within this long are recorded together by the task; slower ones by a
# recorder thread, a group at a time as they end.
FIRST_WAVE_SECONDS = 0.5
# A delivery that found its endpoint at the in-flight limit waits about this long.
BUSY_ENDPOINT_DELAY = timedelta(seconds=2)


@dataclass
class Sent:
    delivery: Delivery
    started_at: datetime
    outcome: transport.Outcome


@cache
def _executor() -> ThreadPoolExecutor:
    # Per process (created lazily, so after any fork).
    return ThreadPoolExecutor(
        max_workers=settings.WEBHOOKS_SEND_THREADS, thread_name_prefix="webhook-send"
    )


class _InFlight:
    """Requests in flight per endpoint in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()

    def try_acquire(self, endpoint_id: int, limit: int) -> bool:
        with self._lock:
            if self._counts[endpoint_id] >= limit:
                return False
            self._counts[endpoint_id] += 1
            return True

    def release(self, endpoint_id: int) -> None:
        with self._lock:
            self._counts[endpoint_id] -= 1
            if self._counts[endpoint_id] <= 0:
                del self._counts[endpoint_id]


in_flight = _InFlight()


def lease_seconds() -> float:
    return float(settings.WEBHOOKS_DELIVERY_TIMEOUT) + float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)


def deliveries_send(
    *, delivery_ids: list[int], top_up: bool = True, wait_for_all: bool = False
) -> None:
    """Attempts every delivery in `delivery_ids` that is due and not held by another worker.

    With `top_up`, a batch smaller than WEBHOOKS_DELIVERY_BATCH_SIZE is filled with other due
    deliveries, oldest first: under load, tasks then carry full batches (a batch costs about
    the same few queries whatever its size), and the tasks of deliveries taken this way find
    nothing left to claim. At rest it changes nothing.

    Attempts still running after FIRST_WAVE_SECONDS are recorded by a recorder thread as they
    end, and this returns: a task never waits on a slow endpoint, so a dead endpoint
    cannot hold the worker's task slots. `wait_for_all` waits for them instead (for a caller
    that reports the outcome).
    """
    token = uuid.uuid4()
    now = timezone.now()
    candidates = list(delivery_ids)
    room = settings.WEBHOOKS_DELIVERY_BATCH_SIZE - len(candidates)
    if top_up and room > 0:
        candidates += list(
            deliveries_due(now)
            .exclude(id__in=candidates)
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:room]
        )
    claimed = (
        deliveries_due(now)
        .filter(id__in=candidates)
        .update(claimed_until=now + timedelta(seconds=lease_seconds()), claim_token=token)
    )
    if not claimed:
        return
    deliveries = list(
        Delivery.objects.filter(id__in=candidates, claim_token=token).select_related(
            "event", "endpoint__environment"
        )
    )
    live = [d for d in deliveries if d.endpoint.is_enabled]
    _cancel_for_gone_endpoints([d for d in deliveries if not d.endpoint.is_enabled], token)
    secrets = _signing_secrets({d.endpoint_id for d in live}, now)
    sendable = [d for d in live if secrets.get(d.endpoint_id)]

    limit = settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT
    admitted, busy = [], []
    for delivery in sendable:
        (admitted if in_flight.try_acquire(delivery.endpoint_id, limit) else busy).append(delivery)
    _postpone(busy, token, now + BUSY_ENDPOINT_DELAY)

    futures = [_executor().submit(_attempt, d, secrets[d.endpoint_id]) for d in admitted]
    done, pending = wait(futures, timeout=None if wait_for_all else FIRST_WAVE_SECONDS)
    _record([f.result() for f in done], token)
    if pending:
        _late_recorder().submit(_record_when_done, pending, token)


@cache
def _late_recorder() -> ThreadPoolExecutor:
    # Waits for attempts that outlived the first wave, so that the task does not.
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-record")


def _record_when_done(pending: set[Future[Sent]], token: uuid.UUID) -> None:
    """Records slow attempts as they end, a group at a time, on its own database connection
    (looked after as a request's would be)."""
    close_old_connections()
    try:
        while pending:
            done, pending = wait(pending, timeout=FIRST_WAVE_SECONDS)
            _record([f.result() for f in done], token)
    except Exception:  # the claims' lease runs out and the sweep retries them
        logger.exception("recording late delivery attempts failed")
    finally:
        close_old_connections()


def _attempt(delivery: Delivery, secrets: list[str]) -> Sent:
    try:
        with _endpoint_slot(delivery.endpoint_id):
            body = delivery.event.body.encode("utf-8")
            started_at = timezone.now()
            outcome = transport.post(
                delivery.endpoint.url,
                body,
                {
                    "Content-Type": "application/json",
                    signature.HEADER: signature.sign(body, secrets),
                    "MD-Event-Id": delivery.event.public_id,
                    "MD-Event-Type": delivery.event.type,
                    "MD-Delivery-Id": delivery.public_id,
                },
                allow_private=_allows_private(delivery.endpoint),
                timeout=float(settings.WEBHOOKS_DELIVERY_TIMEOUT),
            )
    except Exception:  # a bug here must still release the delivery, as a failed attempt
        logger.exception("delivery %s: attempt crashed", delivery.public_id)
        started_at = timezone.now()
        outcome = transport.Outcome(None, "internal_error", "", 0)
    return Sent(delivery=delivery, started_at=started_at, outcome=outcome)


@contextmanager
def _endpoint_slot(endpoint_id: int) -> Iterator[None]:
    try:
        yield
    finally:
        in_flight.release(endpoint_id)


def _allows_private(endpoint: WebhookEndpoint) -> bool:
    # The URL policy's rule, applied again at connect time.
    return not endpoint.environment.is_production and bool(
        settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS
    )


def _signing_secrets(endpoint_ids: set[int], now: datetime) -> dict[int, list[str]]:
    """Every endpoint's valid secrets, decrypted, newest first."""
    secrets: dict[int, list[str]] = defaultdict(list)
    for endpoint_id, ciphertext in (
        EndpointSecret.objects.signing(now)
        .filter(endpoint_id__in=endpoint_ids)
        .values_list("endpoint_id", "ciphertext")
    ):
        secrets[endpoint_id].append(encryption.decrypt(ciphertext))
    return secrets


def _cancel_for_gone_endpoints(deliveries: list[Delivery], token: uuid.UUID) -> None:
    if not deliveries:
        return
    now = timezone.now()
    for reason, group in (
        ("endpoint deleted", [d for d in deliveries if d.endpoint.deleted_at is not None]),
        ("endpoint disabled", [d for d in deliveries if d.endpoint.deleted_at is None]),
    ):
        metrics.DELIVERIES_CANCELLED.inc(len(group))
        Delivery.objects.filter(id__in=[d.pk for d in group], claim_token=token).update(
            status=Delivery.Status.CANCELLED,
            completed_at=now,
            next_attempt_at=None,
            claimed_until=None,
            last_error=reason,
        )


def _postpone(deliveries: list[Delivery], token: uuid.UUID, when: datetime) -> None:
    """Back to the queue, not attempted: the endpoint has its fill of requests in flight."""
    if deliveries:
        Delivery.objects.filter(id__in=[d.pk for d in deliveries], claim_token=token).update(
            next_attempt_at=when, claimed_until=None, claim_token=None, enqueued_at=None
        )


def _record(results: list[Sent], token: uuid.UUID) -> None:
    if not results:
        return
    now = timezone.now()
    successes = [r for r in results if r.outcome.succeeded]
    failures = [r for r in results if not r.outcome.succeeded]
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=r.delivery.pk,
                    number=r.delivery.attempt_count + 1,
                    started_at=r.started_at,
                    duration_ms=r.outcome.duration_ms,
                    status_code=r.outcome.status_code,
                    error=r.outcome.error[:200],
                    succeeded=r.outcome.succeeded,
                    response_body=r.outcome.response_body,
                )
                for r in results
            ]
        )
        if successes:
            Delivery.objects.filter(
                id__in=[r.delivery.pk for r in successes], claim_token=token
            ).update(
                status=Delivery.Status.SUCCEEDED,
                attempt_count=F("attempt_count") + 1,
                last_attempt_at=now,
                last_status_code=_per_delivery(
                    successes, "last_status_code", lambda r: r.outcome.status_code
                ),
                last_error="",
                completed_at=now,
                next_attempt_at=None,
                claimed_until=None,
                claim_token=None,
            )
        gone = {r.delivery.endpoint_id for r in failures if r.outcome.status_code == 410}
        next_at = _record_failures(failures, token, now, gone) if failures else {}
        _update_endpoint_health(successes, failures, gone, now)
    _observe(successes, failures, next_at, now)


def _observe(
    successes: list[Sent], failures: list[Sent], next_at: dict[int, datetime | None], now: datetime
) -> None:
    for r in successes + failures:
        metrics.ATTEMPT_DURATION.observe(r.outcome.duration_ms / 1000)
    for r in successes:
        metrics.DELIVERY_ATTEMPTS.labels("succeeded").inc()
        metrics.DELIVERY_LATENCY.observe((now - r.delivery.event.created_at).total_seconds())
        metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)
    for r in failures:
        exhausted = next_at.get(r.delivery.pk) is None
        metrics.DELIVERY_ATTEMPTS.labels("exhausted" if exhausted else "failed").inc()
        if exhausted:
            metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)


def _record_failures(failures: list[Sent], token: uuid.UUID, now: datetime, gone: set[int]) -> None:
    next_at: dict[int, datetime | None] = {}
    for r in failures:
        retry_after = None
        if r.outcome.status_code in (429, 503):
            retry_after = schedule.parse_retry_after(r.outcome.retry_after)
        delay = None
        if r.delivery.endpoint_id not in gone:
            delay = schedule.next_delay(r.delivery.attempt_count + 1, retry_after)
        next_at[r.delivery.pk] = None if delay is None else now + timedelta(seconds=delay)
    Delivery.objects.filter(id__in=list(next_at), claim_token=token).update(
        status=_per_delivery(
            failures,
            "status",
            lambda r: Delivery.Status.FAILED if next_at[r.delivery.pk] is None else "pending",
        ),
        next_attempt_at=_per_delivery(
            failures, "next_attempt_at", lambda r: next_at[r.delivery.pk]
        ),
        completed_at=_per_delivery(
            failures, "completed_at", lambda r: now if next_at[r.delivery.pk] is None else None
        ),
        attempt_count=F("attempt_count") + 1,
        last_attempt_at=now,
        last_status_code=_per_delivery(
            failures, "last_status_code", lambda r: r.outcome.status_code
        ),
        last_error=_per_delivery(failures, "last_error", lambda r: r.outcome.error[:200]),
        claimed_until=None,
        claim_token=None,
        enqueued_at=None,
    )
    return next_at


def _per_delivery(results: list[Sent], field: str, value: Callable[[Sent], object]) -> Case:
    """One UPDATE setting `field` to a different value per delivery."""
    output = Delivery._meta.get_field(field)

    def typed(v: object) -> Value | Cast:
        # A bare NULL in a CASE is text to PostgreSQL; give it the column's type.
        return Value(v, output_field=output) if v is not None else Cast(Value(None), output)

    return Case(
        *[When(id=r.delivery.pk, then=typed(value(r))) for r in results],
        output_field=output,
    )


def _update_endpoint_health(
    successes: list[Sent], failures: list[Sent], gone: set[int], now: datetime
) -> None:
    """Failure streaks, 410 Gone, and the auto-disable of endpoints failing for too long."""
    healthy = {r.delivery.endpoint_id for r in successes}
    # Only endpoints that were failing when loaded need their streak reset: a healthy batch
    # costs no query here.
    recovering = {r.delivery.endpoint_id for r in successes if r.delivery.endpoint.failing_since}
    if recovering:
        WebhookEndpoint.objects.filter(id__in=recovering, consecutive_failures__gt=0).update(
            consecutive_failures=0, failing_since=None
        )
    failing = Counter(
        r.delivery.endpoint_id for r in failures if r.delivery.endpoint_id not in healthy
    )
    for endpoint_id, count in failing.items():
        WebhookEndpoint.objects.filter(id=endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + count,
            failing_since=Coalesce(F("failing_since"), Value(now)),
        )
    to_disable: dict[int, str] = {pk: "The endpoint answered 410 Gone." for pk in gone}
    cutoff = now - timedelta(seconds=settings.WEBHOOKS_AUTO_DISABLE_AFTER)
    for pk in WebhookEndpoint.objects.filter(
        id__in=list(failing), failing_since__lte=cutoff, status=WebhookEndpoint.Status.ENABLED
    ).values_list("id", flat=True):
        to_disable.setdefault(
            pk,
            "Every delivery attempt failed for "
            f"{settings.WEBHOOKS_AUTO_DISABLE_AFTER // 3600} hours or more.",
        )
    for pk, reason in to_disable.items():
        disabled = WebhookEndpoint.objects.filter(
            id=pk, status=WebhookEndpoint.Status.ENABLED
        ).update(status=WebhookEndpoint.Status.DISABLED, disabled_reason=reason, updated_at=now)
        if disabled:
            logger.warning("endpoint %s disabled automatically: %s", pk, reason)
            metrics.ENDPOINTS_AUTO_DISABLED.labels("gone" if pk in gone else "failing").inc()
            endpoint_deliveries_cancel(endpoint_ids=[pk], reason="endpoint disabled")
