"""Recording: what each attempt came to, in as few statements as a batch allows.

Every attempt in one INSERT, the successes in one UPDATE per status code, the failures in one
UPDATE with their next attempt, each delivery guarded by the token it was claimed with (a worker
whose lease ran out changes nothing), and the endpoints' health, all in one transaction. What
outlives a task's first wave is recorded by the process's `LateRecorder`, as it ends.
"""

import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Field, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from deliveries import (
    claiming,
    health,
    metrics,
    operational,
    ordering,
    queue,
    schedule,
    sql,
    transient,
)
from deliveries.admission import NotAttempted
from deliveries.claiming import Claimed
from deliveries.models import Delivery
from deliveries.sending import Sent

logger = logging.getLogger(__name__)

# The recorder thread writes at most this many results in one transaction.
ROUND_LIMIT = 500
# Its rounds of recording start at least this far apart: attempts that end one at a time (a
# rate-limited endpoint's, 50 a second) are recorded a few to a transaction, rather than each
# in one of its own. Nothing waits on a late attempt's recording but its claim, which holds
# for the attempt's timeout and a margin.
ROUND_GAP_SECONDS = 0.1
# An attempt watched as unhurried (an unordered rate-limited endpoint's: nothing follows from
# its recording) waits up to this long for a round: a 50/s endpoint's attempts are then
# recorded a dozen to a transaction in each process rather than two or three, 4% of the
# workers' interpreter time in the rate runs rather than 6% (docs/delivery-control.md).
UNHURRIED_SECONDS = 0.5

_SUCCEEDED = """
UPDATE {delivery} SET status = {SUCCEEDED}, attempt_count = attempt_count + 1,
    last_attempt_at = %s, last_status_code = %s, last_error = '', completed_at = %s,
    next_attempt_at = NULL, claimed_until = NULL, claim_token = NULL
WHERE {held}
"""
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "event_id",
    "number",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "succeeded",
    "response_body",
)
_ATTEMPTS = f"""
INSERT INTO {{attempt}} ({", ".join(_ATTEMPT_COLUMNS)})
VALUES {{rows}}
ON CONFLICT (delivery_id, number, started_at, event_id) DO NOTHING
RETURNING delivery_id, number, started_at
"""  # noqa: S608  the code's own column names; values are parameters


def attempted(futures: Collection["Future[Sent]"]) -> list[Sent]:
    """The attempts these ended futures made (those NotAttempted made none)."""
    return [f.result() for f in futures if f.exception() is None]


def unattempted_release(ended: dict[uuid.UUID, list["Future[Sent]"]]) -> None:
    """Lets go of the claims (token: its ended futures) of the deliveries never attempted: a
    worker shutting down dropped them from its waits, or they came to their rate-limit slots
    too late. Postponed to now, unmarked, another
    worker's sweep queues them at once; one cancelled meanwhile stays as it is."""
    now = timezone.now()
    for token, futures in ended.items():
        held = [e.delivery for f in futures if isinstance(e := f.exception(), NotAttempted)]
        if not held:
            continue
        when = {d.pk: now for d in held}
        events = {d.event_id for d in held}
        try:
            postponing = partial(claiming.postpone, when, token, events)
            transient.retrying(postponing, "releasing unattempted deliveries")
        except DatabaseError as error:  # they wait for their claims to lapse, as before
            logger.warning("releasing unattempted deliveries failed: %s", error)


@dataclass(frozen=True)
class Chain:
    """A claim for the deliveries an ordered endpoint's lane releases as its head ends: the
    caller sends them itself, without a trip through the broker."""

    token: uuid.UUID
    until: datetime


def record(
    claims: dict[uuid.UUID, list[Sent]],
    chain: Chain | None = None,
    sent: dict[int, tuple[int, int]] | None = None,
) -> list[int]:
    """Records the attempts made under one claim or several (token: its results) in one
    transaction. The recorder thread writes all that has ended since its last round this way:
    a statement costs it a wait for the GIL on each round trip, so a statement per claim fell
    behind under load.

    Safe to run again after a COMMIT whose answer was lost with the connection
    (transient.retrying): what is on record already is not recorded, nor counted, twice.

    An ordered endpoint whose head ended here has its next delivery released in the same
    transaction (deliveries.ordering): the one the caller `sent` already (endpoint: (delivery,
    event)) if it did. Returns the ids released under `chain`, for the caller to send; without one
    they are queued after the commit."""
    if not any(claims.values()):
        return []
    now = timezone.now()
    given = [r for held in claims.values() for r in held]
    with transaction.atomic(), connection.cursor() as cursor:
        claims = _insert_attempts(cursor, claims)
        results = [r for held in claims.values() for r in held]
        successes = [r for r in results if r.outcome.succeeded]
        failures = [r for r in results if not r.outcome.succeeded]
        _record_successes(cursor, claims, now)
        gone = health.gone(failures)
        for token, held in claims.items():
            failed = [r for r in held if not r.outcome.succeeded]
            if failed:
                _record_failures(failed, token, now, gone)
        operational.deliveries_exhausted([r for r in failures if retry_delay(r, gone) is None], now)
        health.endpoint_health_update(successes, failures, gone, now)
        ended = [
            r.delivery
            for r in results
            if r.delivery.ordered and (r.outcome.succeeded or retry_delay(r, gone) is None)
        ]
        released = ordering.lanes_release(
            endpoint_ids={d.endpoint_id for d in ended},
            now=now,
            ended={d.pk for d in ended},
            known=ordering.lanes_known(ended),
            sent=sent,
            claim_token=None if chain is None else chain.token,
            claimed_until=None if chain is None else chain.until,
        )
        if released and chain is None:
            transaction.on_commit(
                partial(queue.deliveries_queue, list(released), released), robust=True
            )
    ended_lanes = {d.endpoint_id for d in ended}
    if len(released) < len(ended_lanes):
        # A lane that had nothing to release: a fan-out that looked before this COMMIT found
        # its head in hand and left its delivery to this one (services.event_fan_out), which
        # may have missed it. Looked for again, now that both are committed.
        again = ordering.lanes_release(endpoint_ids=ordering.lanes_stalled(ended_lanes), now=now)
        if again:  # at once, outside a transaction: a broker that is down is only logged
            transaction.on_commit(partial(queue.deliveries_queue, list(again), again), robust=True)
    # The metrics, though, count everything this run was given, recorded now or found on
    # record: they are counted after the COMMIT, which a run whose COMMIT's answer was lost
    # never got past (tests/test_lost_commit.py).
    _observe(given, now)
    return list(released) if chain is not None else []


def _insert_attempts(
    cursor: Any, claims: dict[uuid.UUID, list[Sent]]
) -> dict[uuid.UUID, list[Sent]]:
    """Inserts the attempts not recorded yet; returns the claims' results that were."""
    results = [r for held in claims.values() for r in held]
    row = f"({sql.marks(_ATTEMPT_COLUMNS)})"
    params: list[object] = []
    for r in results:
        params += [
            r.delivery.pk,
            r.delivery.event_id,
            r.delivery.attempt_count + 1,
            sql.db_time(r.started_at),
            r.outcome.duration_ms,
            r.outcome.status_code,
            r.outcome.error[:200],
            r.outcome.succeeded,
            r.outcome.response_body,
        ]
    cursor.execute(sql.statement(_ATTEMPTS, rows=sql.rows(row, len(results))), params)
    inserted = {(pk, number, sql.from_db_time(at)) for pk, number, at in cursor.fetchall()}
    return {
        token: [
            r
            for r in held
            if (r.delivery.pk, r.delivery.attempt_count + 1, r.started_at) in inserted
        ]
        for token, held in claims.items()
    }


def _record_successes(cursor: Any, claims: dict[uuid.UUID, list[Sent]], now: datetime) -> None:
    """One UPDATE per status code, each delivery guarded by its claim's token."""
    by_status: defaultdict[int | None, defaultdict[uuid.UUID, list[Claimed]]]
    by_status = defaultdict(lambda: defaultdict(list))
    for token, results in claims.items():
        for r in results:
            if r.outcome.succeeded:
                by_status[r.outcome.status_code][token].append(r.delivery)
    for status_code, by_token in by_status.items():
        # The event ids let PostgreSQL look in their partitions only (deliveries.partitions).
        guard = " OR ".join(
            f"(claim_token = %s AND id IN ({sql.marks(ds)}) AND event_id IN ({sql.marks(ds)}))"
            for ds in by_token.values()
        )
        params: list[object] = [sql.db_time(now), status_code, sql.db_time(now)]
        for token, ds in by_token.items():
            params += [sql.db_uuid(token), *[d.pk for d in ds], *[d.event_id for d in ds]]
        cursor.execute(sql.statement(_SUCCEEDED, held=guard), params)


def _observe(results: list[Sent], now: datetime) -> None:
    gone = health.gone(results)
    for r in results:
        metrics.ATTEMPT_DURATION.observe(r.outcome.duration_ms / 1000)
        if r.outcome.succeeded:
            metrics.DELIVERY_ATTEMPTS.labels("succeeded").inc()
            metrics.DELIVERY_LATENCY.observe((now - r.delivery.event_created_at).total_seconds())
            metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)
            continue
        exhausted = retry_delay(r, gone) is None
        metrics.DELIVERY_ATTEMPTS.labels("exhausted" if exhausted else "failed").inc()
        if exhausted:
            metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)


def retry_delay(failed: Sent, gone: set[int]) -> float | None:
    """Seconds until a failed delivery's next attempt; None when it has had its last."""
    if failed.delivery.endpoint_id in gone:
        return None
    retry_after = None
    if failed.outcome.status_code in (429, 503):
        retry_after = schedule.parse_retry_after(failed.outcome.retry_after)
    return schedule.next_delay(failed.delivery.attempt_count + 1, retry_after)


def _record_failures(failures: list[Sent], token: uuid.UUID, now: datetime, gone: set[int]) -> None:
    next_at: dict[int, datetime | None] = {}
    for r in failures:
        delay = retry_delay(r, gone)
        next_at[r.delivery.pk] = None if delay is None else now + timedelta(seconds=delay)
    event_ids = {r.delivery.event_id for r in failures}  # see _record_successes
    Delivery.objects.filter(id__in=list(next_at), event_id__in=event_ids, claim_token=token).update(
        status=_unless_cancelled(
            _per_delivery(
                failures,
                "status",
                lambda r: (
                    Delivery.Status.FAILED
                    if next_at[r.delivery.pk] is None
                    else Delivery.Status.PENDING
                ),
            )
        ),
        next_attempt_at=_unless_cancelled(
            _per_delivery(failures, "next_attempt_at", lambda r: next_at[r.delivery.pk])
        ),
        completed_at=_unless_cancelled(
            _per_delivery(
                failures, "completed_at", lambda r: now if next_at[r.delivery.pk] is None else None
            )
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


def _unless_cancelled(value: Case) -> Case:
    """A delivery cancelled while its attempt was in flight (its endpoint was disabled or
    deleted) keeps its state: the failed attempt is recorded, the retry it would lead to is not.
    (A success is recorded as one: the receiver did get the event.)"""
    return Case(
        When(status=Delivery.Status.CANCELLED, then=F(value.output_field.name)),
        default=value,
        output_field=value.output_field,
    )


def _per_delivery(results: list[Sent], field: str, value: Callable[[Sent], object]) -> Case:
    """One UPDATE setting `field` to a different value per delivery."""
    output = Delivery._meta.get_field(field)
    assert isinstance(output, Field)  # a column of the delivery's own

    def typed(v: object) -> Value | Cast:
        # A bare NULL in a CASE is text to PostgreSQL; give it the column's type.
        return Value(v, output_field=output) if v is not None else Cast(Value(None), output)

    return Case(
        *[When(id=r.delivery.pk, then=typed(value(r))) for r in results],
        output_field=output,
    )


class LateRecorder:
    """Records the attempts that outlived their task's first wave, as they end, on one thread
    per process, and so on one database connection, however many tasks left attempts behind.

    (A thread per task's stragglers, each with its own connection, ran a PostgreSQL with
    max_connections = 100 out of slots with four worker processes.) A worker process thus
    holds at most CELERY_WORKER_CONCURRENCY + 1 connections (+ 1 for the rate limits' slot
    thread, deliveries.rates.SlotTaker, once it sends to a limited endpoint).

    What has ended is recorded together, in one transaction whatever the claims it belongs
    to: while one round is being written, the next gathers. Attempts watched as unhurried
    wait for a round up to UNHURRIED_SECONDS. The thread also runs the process's
    periodic jobs (`every`) on its connection: the dispatcher's look at its waiting line, and
    in a worker the sweep. It starts with the first attempt it is given, or `start()`. It is
    not a daemon: a worker shutting down records what its attempts still in flight bring back,
    then exits (a prefork pool's process, which exits waiting for no thread, waits for it:
    `wait_recorded`).
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._ended: list[tuple[uuid.UUID, Future[Sent]]] = []
        # Unhurried attempts ended, each with when (time.monotonic()): recorded with the next
        # round that records anything, or once the first has waited UNHURRIED_SECONDS.
        self._unhurried: list[tuple[float, uuid.UUID, Future[Sent]]] = []
        self._outstanding = 0  # attempts watched and not yet recorded
        self._thread: threading.Thread | None = None
        self._jobs: list[_Job] = []
        self._tend = transient.Tending()

    def wait_recorded(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds until every attempt watched is recorded (or released);
        says whether they all were. For a process about to exit without waiting for this
        thread (a prefork pool's child: dispatch.Engine)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._outstanding, timeout)

    def every(self, seconds: float, job: Callable[[], None]) -> None:
        """Runs `job` every `seconds` on the thread, once it runs."""
        with self._wake:
            self._jobs.append(_Job(job, seconds))

    def start(self) -> None:
        with self._wake:
            self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="webhook-record")
            self._thread.start()

    def watch(
        self, pending: Collection["Future[Sent]"], token: uuid.UUID, *, unhurried: bool = False
    ) -> None:
        with self._wake:
            self._outstanding += len(pending)
            self._start()
        ended = self._ended_unhurried if unhurried else self._ended_one
        for future in pending:
            future.add_done_callback(partial(ended, token))

    def _ended_one(self, token: uuid.UUID, future: "Future[Sent]") -> None:
        with self._wake:
            self._ended.append((token, future))
            self._wake.notify()

    def _ended_unhurried(self, token: uuid.UUID, future: "Future[Sent]") -> None:
        with self._wake:
            self._unhurried.append((time.monotonic(), token, future))
            if len(self._unhurried) == 1:  # the thread's wait is to end when this one ripens
                self._wake.notify()

    def _ripe_in(self) -> float:
        """Seconds until the unhurried attempts are to be recorded (0: now; inf: none wait)."""
        if not self._unhurried:
            return math.inf
        if len(self._unhurried) >= ROUND_LIMIT:
            return 0.0
        return max(0.0, self._unhurried[0][0] + UNHURRIED_SECONDS - time.monotonic())

    def _run(self) -> None:
        last_round = 0.0
        while True:
            with self._wake:
                if not self._ended and self._ripe_in() > 0:
                    if not self._outstanding and not threading.main_thread().is_alive():
                        return  # the interpreter is exiting and nothing is left in flight
                    every = min((j.every for j in self._jobs), default=1.0)
                    self._wake.wait(timeout=min(every, self._ripe_in()))
            gap = last_round + ROUND_GAP_SECONDS - time.monotonic()
            if gap > 0:
                time.sleep(gap)  # more attempts end meanwhile, to be recorded in this round
            last_round = time.monotonic()
            with self._wake:
                if self._ended or self._ripe_in() == 0:  # the unhurried go with any round's
                    self._ended += [(token, future) for _, token, future in self._unhurried]
                    self._unhurried = []
                ended, self._ended = self._ended[:ROUND_LIMIT], self._ended[ROUND_LIMIT:]
            try:
                self._round(ended)
            except Exception:  # the claims' lease runs out and the sweep retries them
                logger.exception("recording late delivery attempts failed")
            finally:
                with self._wake:
                    self._outstanding -= len(ended)
                    if not self._outstanding:
                        self._wake.notify_all()  # for wait_recorded

    def _round(self, ended: list[tuple[uuid.UUID, "Future[Sent]"]]) -> None:
        now = time.monotonic()
        due = [job for job in self._jobs if now - job.last >= job.every]
        if not ended and not due:
            return
        self._tend()
        failed = False
        try:
            for job in due:
                job.last = now
                try:
                    job.run()
                except Exception:  # the next turn tries again
                    logger.exception("periodic job %s failed", getattr(job.run, "__name__", job))
                    failed = True
            if ended:
                by_token: dict[uuid.UUID, list[Future[Sent]]] = defaultdict(list)
                for token, future in ended:
                    by_token[token].append(future)
                claims = {token: attempted(futures) for token, futures in by_token.items()}
                transient.retrying(partial(record, claims), "recording late delivery attempts")
                unattempted_release(by_token)
        except BaseException:
            failed = True
            raise
        finally:
            if failed:  # a broken connection is dropped before the thread waits again
                self._tend(failed=True)


@dataclass(slots=True)
class _Job:
    run: Callable[[], None]
    every: float
    last: float = 0.0
