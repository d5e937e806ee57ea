"""Sending a batch of deliveries: claim, sign, send concurrently, record.

A batch costs a handful of statements whatever its size: one UPDATE claims it (rows another
worker is claiming are skipped, not waited for), one SELECT loads what sending needs, one loads
the signing secrets, one INSERT records the attempts and one UPDATE per outcome records the
results, guarded by the claim token so a worker whose lease ran out (and whose deliveries
another worker took over) changes nothing. HTTP happens outside any transaction, on a pool of
threads shared by the worker process.

This is the hottest code in the service, so its statements are written out rather than built by
the ORM (which cost more CPU than the HTTP requests did). They stay portable: the same SQL runs
on PostgreSQL and on the SQLite file `bin/dev` uses, with SKIP LOCKED where the database has it.
Rare paths (failures, cancellations, endpoint health) keep the ORM.
"""

import logging
import math
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from celery.signals import worker_shutting_down
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from accounts.models import Environment
from core import encryption
from deliveries import metrics, schedule, signature, sql, transient, transport
from deliveries.models import Delivery
from deliveries.services import endpoint_deliveries_cancel
from webhooks.models import WebhookEndpoint

logger = logging.getLogger(__name__)

# Results finished within this long are recorded together by the task; slower ones by the
# process's recorder thread, as they end.
FIRST_WAVE_SECONDS = 0.5
# The recorder thread writes at most this many results in one transaction.
ROUND_LIMIT = 500
# How often the recorder thread looks up the deliveries waiting for a slot, to drop those
# cancelled meanwhile: "disabling takes effect at once" holds within this long.
WAITING_CHECK_SECONDS = 0.25
# A delivery that found its endpoint at the in-flight limit, and too many waiting for it in
# the process (_InFlight), is postponed by about this long.
BUSY_ENDPOINT_DELAY = timedelta(seconds=2)
# Deliveries waiting in a process for an endpoint's slots: at most this many times its limit.
MAX_WAITING_ROUNDS = 4


@dataclass(slots=True)
class Claimed:
    """A claimed delivery, with what sending and recording it need (one row of the load)."""

    pk: int
    public_id: str
    attempt_count: int
    endpoint_id: int
    event_public_id: str
    event_type: str
    body: bytes
    event_created_at: datetime
    url: str
    endpoint_enabled: bool
    endpoint_deleted: bool
    endpoint_failing: bool
    production: bool


@dataclass(slots=True)
class Sent:
    delivery: Claimed
    started_at: datetime
    outcome: transport.Outcome


@cache
def _executor() -> ThreadPoolExecutor:
    # Per process (created lazily, so after any fork).
    return ThreadPoolExecutor(
        max_workers=settings.WEBHOOKS_SEND_THREADS, thread_name_prefix="webhook-send"
    )


class NotAttempted(Exception):
    """A delivery that waited for its endpoint's slot was never attempted: nothing to record.
    Either the worker is shutting down (its claim lapses and the sweep sends it again) or it
    was cancelled meanwhile (its endpoint disabled or deleted: nothing is sent to it)."""


@dataclass(slots=True)
class _Waiting:
    """A delivery waiting in this process for a slot of its endpoint, and where its result goes."""

    delivery: Claimed
    secrets: list[str]
    result: Future[Sent]


class _InFlight:
    """Requests in flight per endpoint in this process, and the deliveries waiting for a slot.

    An endpoint has at most `limit` requests in flight from a process, so a slow endpoint
    cannot take every sending thread. More deliveries wait here for a slot, without a
    thread: the attempt that ends hands its slot (and its thread) to the first of them. Only
    past that are deliveries postponed through the database (BUSY_ENDPOINT_DELAY): a burst of
    events to one fast endpoint was otherwise postponed by 2 s for a tenth of its deliveries,
    each at the cost of an UPDATE, a sweep and a new task (issue 7).

    How many may wait is bounded by the claim's lease: the slots end an attempt each within
    WEBHOOKS_DELIVERY_TIMEOUT, so the waiting delivery at position p starts within
    (p // limit + 1) timeouts of its claim and ends one timeout later, and the lease is a
    timeout plus WEBHOOKS_CLAIM_LEASE_MARGIN. `rounds` x `limit` wait, rounds being the most
    whole timeouts strictly within the margin (3 with the defaults, 15 s and 60 s; none when
    the timeout is as long as the margin), at most MAX_WAITING_ROUNDS.

    A waiting delivery cancelled meanwhile (its endpoint disabled or deleted) is dropped by the
    recorder thread, which looks them up every WAITING_CHECK_SECONDS: nothing queued is sent
    to a disabled endpoint, here as in the database.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._waiting: dict[int, deque[_Waiting]] = {}
        self.closing = False  # set when the worker begins to shut down

    def close(self, **_: Any) -> None:
        """From the worker's warm shutdown on, what waits for a slot is not sent: it would
        hold the worker up to another timeout per slot."""
        self.closing = True

    def admit(self, waiting: _Waiting, limit: int) -> bool | None:
        """True: a slot is taken, send it now. False: it waits for a slot here. None: the
        endpoint has its fill of both, postpone it."""
        endpoint_id = waiting.delivery.endpoint_id
        with self._lock:
            if self._counts[endpoint_id] < limit:
                self._counts[endpoint_id] += 1
                return True
            if len(self._waiting.get(endpoint_id, ())) < self.waiting_limit(limit):
                self._waiting.setdefault(endpoint_id, deque()).append(waiting)
                return False
            return None

    @staticmethod
    def waiting_limit(limit: int) -> int:
        timeout = float(settings.WEBHOOKS_DELIVERY_TIMEOUT)
        margin = float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)
        rounds = math.ceil(margin / timeout) - 1 if timeout > 0 else 0
        return limit * max(0, min(rounds, MAX_WAITING_ROUNDS))

    def release(self, endpoint_id: int) -> _Waiting | None:
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

    def waiting_ids(self) -> list[int]:
        with self._lock:
            return [w.delivery.pk for queue in self._waiting.values() for w in queue]

    def drop(self, delivery_ids: Collection[int]) -> None:
        """Takes these deliveries out of the wait: they are not attempted."""
        if not delivery_ids:
            return
        dropped: list[_Waiting] = []
        with self._lock:
            for endpoint_id, queue in list(self._waiting.items()):
                dropped += [w for w in queue if w.delivery.pk in delivery_ids]
                kept = deque(w for w in queue if w.delivery.pk not in delivery_ids)
                if kept:
                    self._waiting[endpoint_id] = kept
                else:
                    del self._waiting[endpoint_id]
        _not_attempted(dropped)


def _not_attempted(dropped: Collection[_Waiting]) -> None:
    for waiting in dropped:
        waiting.result.set_exception(NotAttempted())


def _cancelled(delivery_ids: list[int]) -> set[int]:
    """Those of these deliveries cancelled since they were claimed (their endpoint disabled
    or deleted: endpoint_deliveries_cancel)."""
    cancelled = Delivery.objects.filter(id__in=delivery_ids, status=Delivery.Status.CANCELLED)
    return set(cancelled.values_list("id", flat=True))


in_flight = _InFlight()
worker_shutting_down.connect(in_flight.close, weak=False)


def lease_seconds() -> float:
    return float(settings.WEBHOOKS_DELIVERY_TIMEOUT) + float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)


def deliveries_send(
    *,
    delivery_ids: list[int],
    top_up: bool = True,
    wait_for_all: bool = False,
    held_with: uuid.UUID | None = None,
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

    Each database step goes through a transient error (PostgreSQL restarting or out of
    connection slots) by trying again (`transient.retrying`): what is claimed here is held by
    this token until the lease runs out, and what is sent here is sent, so giving up would
    leave the claims to lapse and the attempts to be made twice.
    """
    token = held_with or uuid.uuid4()
    now = timezone.now()
    room = settings.WEBHOOKS_DELIVERY_BATCH_SIZE - len(delivery_ids) if top_up else 0
    deliveries = _claim(delivery_ids, max(room, 0), now, token, held=held_with is not None)
    if not deliveries:
        return
    live = [d for d in deliveries if d.endpoint_enabled]
    gone = [d for d in deliveries if not d.endpoint_enabled]
    if gone:
        transient.retrying(
            partial(_cancel_for_gone_endpoints, gone, token), "cancelling deliveries"
        )
    secrets = transient.retrying(
        partial(_signing_secrets, {d.endpoint_id for d in live}, now), "loading signing secrets"
    )
    sendable = [d for d in live if secrets.get(d.endpoint_id)]

    limit = settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT
    futures: list[Future[Sent]] = []
    busy: list[Claimed] = []
    for delivery in sendable:
        waiting = _Waiting(delivery, secrets[delivery.endpoint_id], Future())
        admitted = in_flight.admit(waiting, limit)
        if admitted is None:
            busy.append(delivery)
            continue
        if admitted:
            _executor().submit(_send, waiting)
        futures.append(waiting.result)
    try:
        if busy:
            transient.retrying(
                partial(_postpone, busy, token, now + BUSY_ENDPOINT_DELAY), "postponing deliveries"
            )
    finally:  # what was sent is recorded whatever happened to the postponing
        done, pending = wait(futures, timeout=None if wait_for_all else FIRST_WAVE_SECONDS)
        if pending:
            late_recorder.watch(pending, token)
        results = _attempted(done)
        if results:
            transient.retrying(partial(_record, {token: results}), "recording delivery attempts")


# Due: selectors.deliveries_due, written out (pending, next attempt now or past, held by no
# live claim; parameters: now, now). SKIP LOCKED: rows another worker is claiming at this
# instant are theirs; waiting for them gains nothing.
_DUE = (
    "status = 'pending' AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s)"
)
# Other due deliveries, oldest first, to top a batch up (parameters: now, now, the batch's
# ids, how many).
_EXTRA = """extra AS (
    SELECT id FROM {delivery} WHERE {due} AND id NOT IN ({batch})
    ORDER BY next_attempt_at LIMIT %s{lock}
)"""
# The asked deliveries that are due, topped up.
_CLAIM = """
WITH asked AS (SELECT id FROM {delivery} WHERE id IN ({batch}) AND {due}{lock}), {extra}
UPDATE {delivery} SET claimed_until = %s, claim_token = %s
WHERE id IN (SELECT id FROM asked UNION ALL SELECT id FROM extra)
RETURNING id
""".replace("{extra}", _EXTRA).replace("{due}", _DUE)
# The top-up alone, for a batch its caller holds already.
_TOP_UP = """
WITH {extra}
UPDATE {delivery} SET claimed_until = %s, claim_token = %s
WHERE id IN (SELECT id FROM extra)
RETURNING id
""".replace("{extra}", _EXTRA).replace("{due}", _DUE)
_LOAD = """
SELECT d.id, d.public_id, d.attempt_count, d.endpoint_id, e.public_id, e.type, e.body,
       e.created_at, w.url, w.status, w.deleted_at IS NOT NULL, w.failing_since IS NOT NULL,
       env.name
FROM {delivery} d
JOIN {event} e ON e.id = d.event_id
JOIN {endpoint} w ON w.id = d.endpoint_id
JOIN {environment} env ON env.id = w.environment_id
WHERE d.id IN ({ids}) AND d.claim_token = %s
"""
# EndpointSecret.objects.signing(): unexpired, newest first.
_SECRETS = """
SELECT endpoint_id, ciphertext FROM {secret}
WHERE endpoint_id IN ({ids}) AND (expires_at IS NULL OR expires_at > %s)
ORDER BY endpoint_id, created_at DESC, id DESC
"""
_SUCCEEDED = """
UPDATE {delivery} SET status = 'succeeded', attempt_count = attempt_count + 1,
    last_attempt_at = %s, last_status_code = %s, last_error = '', completed_at = %s,
    next_attempt_at = NULL, claimed_until = NULL, claim_token = NULL
WHERE {held}
"""
_ATTEMPTS = """
INSERT INTO {attempt}
    (delivery_id, number, started_at, duration_ms, status_code, error, succeeded, response_body)
VALUES {rows}
ON CONFLICT (delivery_id, number, started_at) DO NOTHING
RETURNING delivery_id, number, started_at
"""


def _claim(
    delivery_ids: list[int], room: int, now: datetime, token: uuid.UUID, held: bool
) -> list[Claimed]:
    """Claims the due ones among `delivery_ids` (unless the caller `held` them already) and up
    to `room` other due deliveries (oldest first) in one UPDATE, and loads what this token
    holds of them, with their events and endpoints, in one SELECT.

    Each statement is tried again on its own after a transient error: the load of rows this
    token holds must not be lost for want of a connection."""
    if not delivery_ids:
        return []
    claimed = list(delivery_ids) if held else []
    if room or not held:
        claimed += transient.retrying(
            partial(_claim_rows, delivery_ids, room, now, token, held), "claiming deliveries"
        )
    if not claimed:
        return []
    return transient.retrying(partial(_load, claimed, token), "loading claimed deliveries")


def _claim_rows(
    delivery_ids: list[int], room: int, now: datetime, token: uuid.UUID, held: bool
) -> list[int]:
    """The claiming UPDATE (or, for a batch the caller `held`, the top-up alone); the ids this
    token now holds by it."""
    features = connection.features
    lock = " FOR UPDATE SKIP LOCKED" if features.has_select_for_update_skip_locked else ""
    t_now = sql.db_time(now)
    lease_until = sql.db_time(now + timedelta(seconds=lease_seconds()))
    claim = sql.db_uuid(token)
    with connection.cursor() as cursor:
        if held:
            cursor.execute(
                sql.statement(_TOP_UP, batch=sql.marks(delivery_ids), lock=lock),
                [t_now, t_now, *delivery_ids, room, lease_until, claim],
            )
        else:
            asked = [*delivery_ids, t_now, t_now]
            extra = [t_now, t_now, *delivery_ids, room]
            cursor.execute(
                sql.statement(_CLAIM, batch=sql.marks(delivery_ids), lock=lock),
                [*asked, *extra, lease_until, claim],
            )
        return [row[0] for row in cursor.fetchall()]


def _load(claimed: list[int], token: uuid.UUID) -> list[Claimed]:
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_LOAD, ids=sql.marks(claimed)), [*claimed, sql.db_uuid(token)])
        return [_claimed(row) for row in cursor.fetchall()]


def _claimed(row: tuple) -> Claimed:
    (pk, public_id, attempts, endpoint_id, event_id, event_type, body, created_at,
     url, status, deleted, failing, environment) = row  # fmt: skip
    return Claimed(
        pk=pk,
        public_id=public_id,
        attempt_count=attempts,
        endpoint_id=endpoint_id,
        event_public_id=event_id,
        event_type=event_type,
        body=body.encode("utf-8"),
        event_created_at=sql.from_db_time(created_at),
        url=url,
        endpoint_enabled=status == WebhookEndpoint.Status.ENABLED and not deleted,
        endpoint_deleted=bool(deleted),
        endpoint_failing=bool(failing),
        production=environment == Environment.Name.PRODUCTION,
    )


class _LateRecorder:
    """Records the attempts that outlived their task's first wave, as they end, on one thread
    per process, and so on one database connection, however many tasks left attempts behind.

    (A thread per task's stragglers, each with its own connection, held up to 32 connections
    per worker process besides the task threads' own: four processes ran a PostgreSQL with
    max_connections = 100 out of slots, and the tasks and records refused a connection were
    left to the sweep, a minute later.) A worker process thus holds at most
    CELERY_WORKER_CONCURRENCY + 1 connections.

    What has ended is recorded together, in one transaction whatever the claims it belongs
    to: while one round is being written, the next gathers. The thread is not a daemon: a
    worker shutting down records what its attempts still in flight bring back, then exits.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._ended: list[tuple[uuid.UUID, Future[Sent]]] = []
        self._outstanding = 0  # attempts watched and not yet recorded
        self._thread: threading.Thread | None = None
        self._checked = 0.0  # when the waiting deliveries were last looked up

    def watch(self, pending: Collection[Future[Sent]], token: uuid.UUID) -> None:
        with self._wake:
            self._outstanding += len(pending)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-record")
                self._thread.start()
        for future in pending:
            future.add_done_callback(partial(self._ended_one, token))

    def _ended_one(self, token: uuid.UUID, future: Future[Sent]) -> None:
        with self._wake:
            self._ended.append((token, future))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._ended:
                    if not self._outstanding and not threading.main_thread().is_alive():
                        return  # the interpreter is exiting and nothing is left in flight
                    self._wake.wait(timeout=WAITING_CHECK_SECONDS)
                ended, self._ended = self._ended[:ROUND_LIMIT], self._ended[ROUND_LIMIT:]
            try:
                self._round(ended)
            except Exception:  # the claims' lease runs out and the sweep retries them
                logger.exception("recording late delivery attempts failed")
            finally:
                with self._wake:
                    self._outstanding -= len(ended)

    def _round(self, ended: list[tuple[uuid.UUID, Future[Sent]]]) -> None:
        """Records what has ended, and takes the deliveries cancelled meanwhile (their endpoint
        disabled or deleted) out of the wait for a slot, at most every WAITING_CHECK_SECONDS."""
        due = time.monotonic() - self._checked >= WAITING_CHECK_SECONDS
        waiting = in_flight.waiting_ids() if due else []
        if not ended and not waiting:
            return
        # The connection is looked after as a request's would be.
        close_old_connections()
        try:
            if waiting:
                self._checked = time.monotonic()
                in_flight.drop(
                    transient.retrying(partial(_cancelled, waiting), "checking waiting deliveries")
                )
            if ended:
                claims: dict[uuid.UUID, list[Sent]] = defaultdict(list)
                for token, future in ended:
                    claims[token] += _attempted([future])
                transient.retrying(partial(_record, claims), "recording late delivery attempts")
        finally:
            close_old_connections()


# One per process; its thread starts with the first attempt it is given (so after any fork).
late_recorder = _LateRecorder()


def _attempted(futures: Collection[Future[Sent]]) -> list[Sent]:
    """The attempts these ended futures made (those NotAttempted made none)."""
    return [f.result() for f in futures if f.exception() is None]


def _send(waiting: _Waiting | None) -> None:
    """On a sending thread holding a slot of the delivery's endpoint: attempts it, then the
    deliveries waiting for that endpoint's slot, one after the other, until none waits."""
    while waiting is not None:
        try:
            waiting.result.set_result(_attempt(waiting.delivery, waiting.secrets))
        finally:
            waiting = in_flight.release(waiting.delivery.endpoint_id)


def _attempt(delivery: Claimed, secrets: list[str]) -> Sent:
    try:
        started_at = timezone.now()
        outcome = transport.post(
            delivery.url,
            delivery.body,
            {
                "Content-Type": "application/json",
                signature.HEADER: signature.sign(delivery.body, secrets),
                "MD-Event-Id": delivery.event_public_id,
                "MD-Event-Type": delivery.event_type,
                "MD-Delivery-Id": delivery.public_id,
            },
            allow_private=_allows_private(delivery),
            timeout=float(settings.WEBHOOKS_DELIVERY_TIMEOUT),
        )
    except Exception:  # a bug here must still end the delivery's attempt, as a failed one
        logger.exception("delivery %s: attempt crashed", delivery.public_id)
        started_at = timezone.now()
        outcome = transport.Outcome(None, "internal_error", "", 0)
    return Sent(delivery=delivery, started_at=started_at, outcome=outcome)


def _allows_private(delivery: Claimed) -> bool:
    # The URL policy's rule, applied again at connect time.
    return not delivery.production and bool(settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS)


def _signing_secrets(endpoint_ids: set[int], now: datetime) -> dict[int, list[str]]:
    """Every endpoint's valid secrets, decrypted, newest first (EndpointSecret's `signing`)."""
    secrets: dict[int, list[str]] = defaultdict(list)
    if not endpoint_ids:
        return secrets
    ids = sorted(endpoint_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_SECRETS, ids=sql.marks(ids)), [*ids, sql.db_time(now)])
        for endpoint_id, ciphertext in cursor.fetchall():
            secrets[endpoint_id].append(encryption.decrypt(ciphertext))
    return secrets


def _cancel_for_gone_endpoints(deliveries: list[Claimed], token: uuid.UUID) -> None:
    if not deliveries:
        return
    now = timezone.now()
    groups = (
        ("endpoint deleted", [d for d in deliveries if d.endpoint_deleted]),
        ("endpoint disabled", [d for d in deliveries if not d.endpoint_deleted]),
    )
    with transaction.atomic():  # all or nothing: the caller may run it again
        for reason, group in groups:
            if group:
                Delivery.objects.filter(id__in=[d.pk for d in group], claim_token=token).update(
                    status=Delivery.Status.CANCELLED,
                    completed_at=now,
                    next_attempt_at=None,
                    claimed_until=None,
                    last_error=reason,
                )
    for _reason, group in groups:
        metrics.DELIVERIES_CANCELLED.inc(len(group))


def _postpone(deliveries: list[Claimed], token: uuid.UUID, when: datetime) -> None:
    """Back to the queue, not attempted: the endpoint has its fill of requests in flight."""
    if deliveries:
        Delivery.objects.filter(id__in=[d.pk for d in deliveries], claim_token=token).update(
            next_attempt_at=when, claimed_until=None, claim_token=None, enqueued_at=None
        )


def _record(claims: dict[uuid.UUID, list[Sent]]) -> None:
    """Records the attempts made under one claim or several (token: its results) in one
    transaction: every attempt in one INSERT, the successes in one UPDATE per status code,
    each delivery guarded by the token it was claimed with. The recorder thread writes all
    that has ended since its last round this way: a statement costs it a wait for the GIL on
    each round trip, so a statement per claim fell behind under load."""
    if not any(claims.values()):
        return
    now = timezone.now()
    given = [r for held in claims.values() for r in held]
    with transaction.atomic(), connection.cursor() as cursor:
        # Only what is recorded now goes on: run again after a COMMIT that reached the server
        # but whose answer was lost with the connection (transient.retrying), this inserts
        # nothing, and no outcome or failure streak is counted twice.
        claims = _insert_attempts(cursor, claims)
        results = [r for held in claims.values() for r in held]
        successes = [r for r in results if r.outcome.succeeded]
        failures = [r for r in results if not r.outcome.succeeded]
        by_status: defaultdict[int | None, defaultdict[uuid.UUID, list[int]]]
        by_status = defaultdict(lambda: defaultdict(list))
        for token, held in claims.items():
            for r in held:
                if r.outcome.succeeded:
                    by_status[r.outcome.status_code][token].append(r.delivery.pk)
        for status_code, ids_by_token in by_status.items():
            guard = " OR ".join(
                f"(claim_token = %s AND id IN ({sql.marks(ids)}))" for ids in ids_by_token.values()
            )
            params: list[object] = [sql.db_time(now), status_code, sql.db_time(now)]
            for token, ids in ids_by_token.items():
                params += [sql.db_uuid(token), *ids]
            cursor.execute(sql.statement(_SUCCEEDED, held=guard), params)
        gone = _gone(failures)
        for token, held in claims.items():
            failed = [r for r in held if not r.outcome.succeeded]
            if failed:
                _record_failures(failed, token, now, gone)
        _update_endpoint_health(successes, failures, gone, now)
    # The metrics, though, count everything this run was given, recorded now or found on
    # record: they are counted after the COMMIT, which a run whose COMMIT's answer was lost
    # never got past (tests/test_lost_commit.py).
    _observe(given, now)


def _insert_attempts(
    cursor: Any, claims: dict[uuid.UUID, list[Sent]]
) -> dict[uuid.UUID, list[Sent]]:
    """Inserts the attempts not recorded yet; returns the claims' results that were."""
    results = [r for held in claims.values() for r in held]
    row = "(%s, %s, %s, %s, %s, %s, %s, %s)"
    params: list[object] = []
    for r in results:
        params += [
            r.delivery.pk,
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


def _observe(results: list[Sent], now: datetime) -> None:
    gone = _gone(results)
    for r in results:
        metrics.ATTEMPT_DURATION.observe(r.outcome.duration_ms / 1000)
        if r.outcome.succeeded:
            metrics.DELIVERY_ATTEMPTS.labels("succeeded").inc()
            metrics.DELIVERY_LATENCY.observe((now - r.delivery.event_created_at).total_seconds())
            metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)
            continue
        exhausted = _retry_delay(r, gone) is None
        metrics.DELIVERY_ATTEMPTS.labels("exhausted" if exhausted else "failed").inc()
        if exhausted:
            metrics.ATTEMPTS_PER_DELIVERY.observe(r.delivery.attempt_count + 1)


def _gone(results: list[Sent]) -> set[int]:
    """The endpoints that answered 410 Gone: no retry, and they are disabled."""
    return {r.delivery.endpoint_id for r in results if r.outcome.status_code == 410}


def _retry_delay(failed: Sent, gone: set[int]) -> float | None:
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
        delay = _retry_delay(r, gone)
        next_at[r.delivery.pk] = None if delay is None else now + timedelta(seconds=delay)
    Delivery.objects.filter(id__in=list(next_at), claim_token=token).update(
        status=_unless_cancelled(
            _per_delivery(
                failures,
                "status",
                lambda r: Delivery.Status.FAILED if next_at[r.delivery.pk] is None else "pending",
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

    def typed(v: object) -> Value | Cast:
        # A bare NULL in a CASE is text to PostgreSQL; give it the column's type.
        return Value(v, output_field=output) if v is not None else Cast(Value(None), output)

    return Case(
        *[When(id=r.delivery.pk, then=typed(value(r))) for r in results],
        output_field=output,
    )


def _disabled(pk: int, reason: str, why: str) -> None:
    logger.warning("endpoint %s disabled automatically: %s", pk, reason)
    metrics.ENDPOINTS_AUTO_DISABLED.labels(why).inc()


def _update_endpoint_health(
    successes: list[Sent], failures: list[Sent], gone: set[int], now: datetime
) -> None:
    """Failure streaks, 410 Gone, and the auto-disable of endpoints failing for too long."""
    healthy = {r.delivery.endpoint_id for r in successes}
    # Only endpoints that were failing when loaded need their streak reset: a healthy batch
    # costs no query here.
    recovering = {r.delivery.endpoint_id for r in successes if r.delivery.endpoint_failing}
    if recovering:
        WebhookEndpoint.objects.filter(id__in=recovering, consecutive_failures__gt=0).update(
            consecutive_failures=0, failing_since=None
        )
    failing = Counter(
        r.delivery.endpoint_id for r in failures if r.delivery.endpoint_id not in healthy
    )
    # In id order, as every writer of several endpoints' rows: two recorders never wait on
    # each other in a circle.
    for endpoint_id, count in sorted(failing.items()):
        WebhookEndpoint.objects.filter(id=endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + count,
            failing_since=Coalesce(F("failing_since"), Value(now)),
        )
    to_disable: dict[int, str] = {pk: "The endpoint answered 410 Gone." for pk in gone}
    cutoff = now - timedelta(seconds=settings.WEBHOOKS_AUTO_DISABLE_AFTER)
    # Asked only when something failed: building this query, even one the ORM then finds
    # empty, cost 5% of a healthy worker's CPU.
    long_failing = (
        WebhookEndpoint.objects.filter(
            id__in=list(failing), failing_since__lte=cutoff, status=WebhookEndpoint.Status.ENABLED
        ).values_list("id", flat=True)
        if failing
        else []
    )
    for pk in long_failing:
        to_disable.setdefault(
            pk,
            "Every delivery attempt failed for "
            f"{settings.WEBHOOKS_AUTO_DISABLE_AFTER // 3600} hours or more.",
        )
    for pk, reason in sorted(to_disable.items()):
        disabled = WebhookEndpoint.objects.filter(
            id=pk, status=WebhookEndpoint.Status.ENABLED
        ).update(status=WebhookEndpoint.Status.DISABLED, disabled_reason=reason, updated_at=now)
        if disabled:
            endpoint_deliveries_cancel(endpoint_ids=[pk], reason="endpoint disabled")
            # Told once it is so: not for a transaction that rolls back (its retry tells).
            transaction.on_commit(
                partial(_disabled, pk, reason, "gone" if pk in gone else "failing")
            )
