"""Recovery: an endpoint's failed and cancelled deliveries of a time window, sent again.

`recovery_create` makes the row and queues a task, nothing more: a window of 100,000 deliveries
must not hold a request. `recovery_step` then works it one batch per transaction
(WEBHOOKS_RECOVERY_BATCH_SIZE), and every worker process queues a step for each running
recovery as often as it sweeps (`recoveries_continue`), so a step lost with its worker is only
a later batch:

- The walk follows the endpoint's deliveries in (created_at, id) order on delivery_endpoint_idx,
  from `Recovery.cursor`, the last delivery requeued, saved with each batch: every row of the
  window is read once however many batches it takes, and a recovery whose worker died goes on
  where its last committed batch ended.
- A delivery is sent again when its event was created in [since, until) and it was failed or
  cancelled when the recovery was asked for (completed before the recovery's `created_at`): one
  this recovery sent again and that failed once more is not sent a third time, whatever a step
  repeats.
- Sent again means further attempts of the same delivery (same delivery and event ids): pending
  and due, its attempt count kept, so attempts go on numbering. One that had failed after its
  last retry is past the retry schedule, so its new attempt is one more try, not a new schedule
  (failing, it is failed again); one cancelled before its retries ran out has the rest of them.
- Live traffic first: the requeued come due a part at a time, at WEBHOOKS_RECOVERY_RATE per
  second (`_parts`), from now on, not at their old times, so the claims' top-up, which takes
  the oldest due first, neither puts them before retries already waiting nor takes a whole
  batch of one endpoint at once. Each part has a send task of its own, which a worker holds
  until the part comes due; a part is no more than a process takes in at once for one endpoint
  (admission.admitted_at_once), so none of it is postponed for want of room. The sweep takes a
  part only if its task is lost. A step requeues the next batch once the last one comes due
  within PACE_AHEAD and the workers keep up (no live event waiting over LIVE_LAG to be fanned
  out, less than a batch of deliveries due over LIVE_LAG ago), and at least one batch a minute
  whatever they do.
- Ordered endpoints: the requeued are parked, and their lane releases them one at a time in
  event order (deliveries.ordering).
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, Q, QuerySet, Value, When
from django.utils import timezone

from core.errors import InvalidInput
from core.times import api_datetime
from deliveries import admission, ordering, queue
from deliveries.models import Delivery, Recovery
from deliveries.selectors import deliveries_due, events_not_fanned_out, unclaimed
from webhooks.models import WebhookEndpoint

RECOVERABLE = [Delivery.Status.FAILED, Delivery.Status.CANCELLED]
# A delivery is made within this long of its event (fan-out runs within seconds; the sweep runs
# a lost fan-out again within WEBHOOKS_REENQUEUE_AFTER), give or take the hosts' clocks. It bounds
# the walk's start before `since`, and how far past a batch an ordered endpoint's batch reaches.
FAN_OUT_LAG = timedelta(minutes=10)
# A recovery requeues its next batch once what it requeued before comes due within this long.
PACE_AHEAD = timedelta(seconds=2)
# Live events waiting longer than this to be fanned out hold a recovery's next batch back.
LIVE_LAG = timedelta(seconds=1)
# However far behind the workers are, a recovery requeues at least a batch this often.
SLOWEST_PACE = timedelta(minutes=1)
# Recoveries worked at once, the oldest first; the others wait their turn.
RUNNING_AT_ONCE = 100
# A part's task reaches a worker this long after the part comes due: the worker's timer, on
# its own monotonic clock, must not run it a hair before its claim finds the part due.
PART_ETA_MARGIN = timedelta(milliseconds=10)

Part = tuple[datetime, list[int]]  # when a part of a batch comes due, and its deliveries


def recovery_create(
    *, endpoint: WebhookEndpoint, since: datetime, until: datetime | None = None
) -> Recovery:
    """Asks for the endpoint's failed and cancelled deliveries of events created in
    [since, until) (until: now, by default) to be sent again, in the background; in the
    caller's transaction, with the first step queued after its commit."""
    now = timezone.now()
    if not endpoint.is_enabled:
        raise InvalidInput(
            None, "This webhook endpoint is disabled: enable it before recovering its deliveries."
        )
    oldest = now - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    if since < oldest:
        raise InvalidInput(
            "since",
            f"since is older than the retention window ({settings.WEBHOOKS_RETENTION_DAYS} days): "
            f"it must be after {api_datetime(oldest)}.",
        )
    if until is None:
        if since >= now:
            raise InvalidInput("since", "since must be in the past.")
        until = now
    elif since >= until:
        raise InvalidInput("until", "until must be later than since.")
    recovery = Recovery.objects.create(endpoint=endpoint, since=since, until=until, created_at=now)
    recovery_id = recovery.pk
    # robust: the broker being away must not undo a recovery that committed; the sweep queues
    # the steps of every running recovery.
    transaction.on_commit(lambda: queue.recoveries_queue([recovery_id]), robust=True)
    return recovery


def recoveries_stop(*, endpoint_ids: list[int], now: datetime | None = None) -> int:
    """Ends the running recoveries of endpoints that stopped receiving (disabled or deleted), in
    the caller's transaction: enabling the endpoint again resumes new events only, not what a
    recovery had left to requeue. One a step is working at this moment is left to that step,
    which waits for the caller's commit on the endpoint's row and then ends it
    (recovery_step). Returns how many ended here."""
    now = now or timezone.now()
    running = Recovery.objects.select_for_update(skip_locked=True).filter(
        endpoint_id__in=endpoint_ids, status=Recovery.Status.RUNNING
    )
    ids = list(running.values_list("id", flat=True))
    return Recovery.objects.filter(id__in=ids).update(
        status=Recovery.Status.COMPLETED, completed_at=now
    )


def recoveries_continue() -> None:
    """Queues the next step of each running recovery. A statement of its own, outside the
    sweep's transaction: holding no other table's lock while it reads this one, it cannot
    deadlock with a statement that locks whole tables (a migration, a TRUNCATE)."""
    running = Recovery.objects.filter(status=Recovery.Status.RUNNING).order_by("id")
    queue.recoveries_queue(list(running.values_list("id", flat=True)[:RUNNING_AT_ONCE]))


def recovery_step(*, recovery_id: int, now: datetime | None = None) -> None:
    """Requeues the recovery's next batch if the workers have room for it, and completes the
    recovery when nothing is left. One transaction; a step that finds another one working the
    same recovery does nothing."""
    now = now or timezone.now()
    size = settings.WEBHOOKS_RECOVERY_BATCH_SIZE
    with transaction.atomic():
        recovery = (
            Recovery.objects.select_for_update(skip_locked=True)
            .filter(pk=recovery_id, status=Recovery.Status.RUNNING)
            .first()
        )
        if recovery is None:
            return
        # The endpoint's row is held until this step commits: a disable or a change of its
        # ordering made meanwhile waits, and then cancels or releases what this step requeued
        # (which, uncommitted, it would not see); one committed first is read here.
        endpoint = (
            WebhookEndpoint.objects.select_for_update(no_key=True)
            .filter(pk=recovery.endpoint_id)
            .first()
        )
        if endpoint is None or not endpoint.is_enabled:
            # Nothing is sent to a disabled or deleted endpoint, and enabling it again resumes
            # new events only: the recovery ends with what it requeued so far.
            _complete(recovery, now)
            return
        ahead = recovery.paced_until is not None and recovery.paced_until > now + PACE_AHEAD
        if (ahead or _workers_behind(now, size)) and not _behind_pace(recovery, now, size):
            return
        batch, finished = _next_batch(recovery, size, now)
        ids = [row[0] for row in batch]
        if endpoint.is_ordered and batch and not finished:
            ids += _stragglers(recovery, batch)
        parts = [] if endpoint.is_ordered else _parts(ids, recovery, now)
        requeued = _requeue(ids, recovery, parts, now)
        recovery.deliveries_requeued += requeued
        if batch:
            recovery.cursor = batch[-1][0]
        if finished:
            _complete(recovery, now)
        else:
            recovery.save(update_fields=["deliveries_requeued", "cursor", "paced_until"])
        if endpoint.is_ordered:  # what its lane releases
            released = {}
            if requeued:
                released = ordering.lanes_release(endpoint_ids=[endpoint.pk], now=now)
            transaction.on_commit(
                lambda: queue.deliveries_queue(list(released), released), robust=True
            )
        else:
            event_of = {row[0]: row[2] for row in batch}
            transaction.on_commit(lambda: _queue_parts(parts, event_of), robust=True)


Row = tuple[int, datetime, int, Any]  # a delivery's id, created_at, event_id, claimed_until


def _next_batch(recovery: Recovery, size: int, now: datetime) -> tuple[list[Row], bool]:
    """Up to `size` deliveries to send again, in the walk's order from the cursor, and whether
    the walk ends with them."""
    found = list(
        _after_cursor(_recoverable(recovery), recovery)
        .order_by("created_at", "id")
        .values_list("id", "created_at", "event_id", "claimed_until")[:size]
    )
    # A cancelled delivery whose attempt is still in flight is being recorded: the batch ends
    # before it, and a later step takes it up once its claim is over.
    held = [i for i, row in enumerate(found) if row[3] is not None and row[3] >= now]
    if held:
        return found[: held[0]], False
    return found, len(found) < size


def _recoverable(recovery: Recovery) -> QuerySet[Delivery]:
    return Delivery.objects.filter(
        _completed_before(recovery),
        endpoint_id=recovery.endpoint_id,
        status__in=RECOVERABLE,
        event__created_at__gte=recovery.since,
        event__created_at__lt=recovery.until,
        # Where the walk starts on delivery_endpoint_idx: a delivery is made after its event.
        created_at__gte=recovery.since - FAN_OUT_LAG,
    )


def _completed_before(recovery: Recovery) -> Q:
    """Failed or cancelled already when the recovery was asked for."""
    return Q(completed_at__isnull=True) | Q(completed_at__lt=recovery.created_at)


def _after_cursor(rows: QuerySet[Delivery], recovery: Recovery) -> QuerySet[Delivery]:
    if not recovery.cursor:
        return rows
    at = Delivery.objects.filter(pk=recovery.cursor).values_list("created_at", flat=True).first()
    if at is None:
        # Pruned by retention meanwhile: the walk starts again, and what it requeued already
        # no longer qualifies (pending, succeeded, or completed after the recovery began).
        return rows
    return rows.filter(_after(at, recovery.cursor))


def _after(created_at: datetime, pk: int) -> Q:
    """Later in the walk's order than the delivery (created_at, pk). `created_at >=` starts the
    index range there (each batch reads on from the last); the OR only settles ties."""
    return Q(created_at__gte=created_at) & (
        Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=pk)
    )


def _stragglers(recovery: Recovery, batch: list[Row]) -> list[int]:
    """An ordered endpoint's deliveries of events published before the batch's newest but made
    after the batch's last one (their fan-out ran later): parked with the batch, so that its
    lane does not send the newest before them."""
    last_id, last_at = batch[-1][0], batch[-1][1]
    newest_event = max(row[2] for row in batch)
    return list(
        _recoverable(recovery)
        .filter(_after(last_at, last_id))
        .filter(created_at__lte=last_at + FAN_OUT_LAG, event_id__lt=newest_event)
        .values_list("id", flat=True)
    )


def _requeue(ids: list[int], recovery: Recovery, parts: list[Part], now: datetime) -> int:
    """Makes them pending again, as further attempts of the same deliveries: an unordered
    endpoint's due part by part (`parts`), an ordered one's (no parts) parked, with no next
    attempt, for its lane to release. Rows that changed since the batch was read (retried by
    hand, say) no longer match and are left as they are."""
    due: Case | None = None
    if parts:
        whens = [When(id__in=chunk, then=Value(at)) for at, chunk in parts]
        due = Case(*whens, output_field=DateTimeField())
    return (
        Delivery.objects.filter(_completed_before(recovery), id__in=ids, status__in=RECOVERABLE)
        .filter(unclaimed(now))
        .update(
            status=Delivery.Status.PENDING,
            next_attempt_at=due,
            # Each part's own task is queued with it: the sweep takes them if it is lost.
            enqueued_at=now if parts else None,
            completed_at=None,
            claimed_until=None,
            claim_token=None,
        )
    )


def _parts(ids: list[int], recovery: Recovery, now: datetime) -> list[Part]:
    """When each of these comes due: a part at a time, at WEBHOOKS_RECOVERY_RATE, after what
    the recovery requeued before. Due all at once, a batch of 1,000 to one endpoint went into
    every task's top-up (oldest due first), beyond what the endpoint's slots take in, and live
    deliveries waited behind the tasks it held up; due a second's worth at a time for the
    sweep, most of each were postponed for want of room in the processes
    (docs/delivery-control.md)."""
    size = min(
        settings.WEBHOOKS_DELIVERY_BATCH_SIZE,
        admission.admitted_at_once(settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT),
    )
    step = timedelta(seconds=size / settings.WEBHOOKS_RECOVERY_RATE)
    start = max(now, recovery.paced_until or now)
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    recovery.paced_until = start + len(chunks) * step
    return [(start + k * step, chunk) for k, chunk in enumerate(chunks)]


def _queue_parts(parts: list[Part], event_of: dict[int, int]) -> None:
    """Each part's send task, for a worker to run once the part comes due."""
    for at, chunk in parts:
        queue.deliveries_queue(chunk, event_of, eta=at + PART_ETA_MARGIN)


def _workers_behind(now: datetime, size: int) -> bool:
    """Live traffic is waiting for the workers: an event published more than LIVE_LAG ago is
    not fanned out yet (its fan-out task still in the broker's line), or a batch of
    deliveries due for more than LIVE_LAG waits for a worker. Another batch would only
    lengthen the line.

    The events first: a live delivery is claimed as it is made, in its event's fan-out, so
    those waiting in the broker's line are never due in the database; with the live load at
    the workers' capacity, the due deliveries alone never said so, and a 100,000-delivery
    recovery took a third of the workers from it (docs/delivery-control.md). The due ones
    only once they have waited: a delivery just come due (a retry, or the recovery's own part)
    waits for its task or the next sweep to reach a worker, and counting those held a
    recovery's batches back from idle workers."""
    if events_not_fanned_out(now - LIVE_LAG).exists():
        return True
    waited = deliveries_due(now).filter(next_attempt_at__lte=now - LIVE_LAG)
    return waited.order_by()[:size].count() >= size


def _behind_pace(recovery: Recovery, now: datetime, size: int) -> bool:
    """Slower than a batch per SLOWEST_PACE: the next step goes ahead whatever the workers'
    line, so a recovery ends even on a fleet that never catches up."""
    return recovery.deliveries_requeued < (now - recovery.created_at) / SLOWEST_PACE * size


def _complete(recovery: Recovery, now: datetime) -> None:
    recovery.status = Recovery.Status.COMPLETED
    recovery.completed_at = now
    recovery.save(
        update_fields=["deliveries_requeued", "cursor", "paced_until", "status", "completed_at"]
    )
