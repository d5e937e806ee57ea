"""Sending a batch of deliveries: claim, admit, send concurrently, record.

The delivery engine's rooms, in the order a batch goes through them:
- deliveries.claiming: one UPDATE claims the batch, one SELECT loads what sending needs;
- deliveries.admission: per-endpoint slots in this process, and the line waiting for them;
- deliveries.sending: the signing secrets, and one signed attempt;
- deliveries.recording: every outcome in one transaction, and the recorder thread for the
  attempts that outlive their task;
- deliveries.health: failure streaks and automatic disables, as the attempts tell them.
This module wires them: a task calls `deliveries_send`, and the process's `Engine` holds the
sending threads, the admission and the recorder, made at first use (so after any fork).
"""

import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from functools import cache, partial
from typing import Any

from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.utils import timezone

from deliveries import claiming, recording, sending, services, transient
from deliveries.admission import InFlight, Waiting
from deliveries.claiming import Claimed
from deliveries.recording import LateRecorder
from deliveries.sending import Sent

# Results finished within this long are recorded together by the task; slower ones by the
# process's recorder thread, as they end.
FIRST_WAVE_SECONDS = 0.5
# How often the recorder thread looks up the deliveries waiting for a slot, to drop those
# cancelled meanwhile: "disabling takes effect at once" holds within this long.
WAITING_CHECK_SECONDS = 0.25
# A delivery that found its endpoint at the in-flight limit, and too many waiting for it in
# the process (admission.InFlight), is postponed by about this long.
BUSY_ENDPOINT_DELAY = timedelta(seconds=2)


class Engine:
    """One per worker process: its sending threads, its admission per endpoint, and its
    recorder thread (which also drops, every WAITING_CHECK_SECONDS, the waiting deliveries
    cancelled meanwhile: nothing queued is sent to a disabled endpoint, here as in the
    database)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=settings.WEBHOOKS_SEND_THREADS, thread_name_prefix="webhook-send"
        )
        self.in_flight: InFlight[Sent] = InFlight()
        self.recorder = LateRecorder()
        self.recorder.every(WAITING_CHECK_SECONDS, self._drop_cancelled_waiting)
        worker_shutting_down.connect(self.in_flight.close, weak=False)

    def admit(self, delivery: Claimed, secrets: list[str]) -> "Future[Sent] | None":
        """The future of the delivery's attempt, started now or when a slot frees; None when
        its endpoint has its fill of both (the caller postpones it)."""
        waiting: Waiting[Sent] = Waiting(delivery, secrets, Future())
        admitted = self.in_flight.admit(waiting, settings.WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT)
        if admitted is None:
            return None
        if admitted:
            self.executor.submit(self._send, waiting)
        return waiting.result

    def _send(self, waiting: Waiting[Sent] | None) -> None:
        """On a sending thread holding a slot of the delivery's endpoint: attempts it, then the
        deliveries waiting for that endpoint's slot, one after the other, until none waits."""
        while waiting is not None:
            try:
                waiting.result.set_result(sending.attempt(waiting.delivery, waiting.secrets))
            finally:
                waiting = self.in_flight.release(waiting.delivery.endpoint_id)

    def _drop_cancelled_waiting(self) -> None:
        waiting = self.in_flight.waiting_ids()
        if waiting:
            self.in_flight.drop(
                transient.retrying(
                    partial(claiming.cancelled, waiting), "checking waiting deliveries"
                )
            )


@cache
def engine() -> Engine:
    return Engine()


@worker_ready.connect
def sweep_in_every_worker(**_: Any) -> None:
    """Retries and lost tasks do not wait on beat, or on any one process: every worker process
    sweeps on its recorder thread (one sweep at a time: services.deliveries_sweep)."""
    process = engine()
    process.recorder.every(float(settings.WEBHOOKS_SWEEP_INTERVAL), _sweep)
    process.recorder.start()


def _sweep() -> None:
    transient.retrying(services.deliveries_sweep, "sweeping for due deliveries")


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
    deliveries = claiming.claim(delivery_ids, max(room, 0), now, token, held=held_with is not None)
    if not deliveries:
        return
    live = [d for d in deliveries if d.endpoint_enabled]
    gone = [d for d in deliveries if not d.endpoint_enabled]
    if gone:
        transient.retrying(
            partial(claiming.cancel_for_gone_endpoints, gone, token), "cancelling deliveries"
        )
    secrets = transient.retrying(
        partial(sending.signing_secrets, {d.endpoint_id for d in live}, now),
        "loading signing secrets",
    )
    process = engine()
    futures: list[Future[Sent]] = []
    busy: list[Claimed] = []
    for delivery in live:
        if not secrets.get(delivery.endpoint_id):
            continue
        future = process.admit(delivery, secrets[delivery.endpoint_id])
        if future is None:
            busy.append(delivery)
        else:
            futures.append(future)
    try:
        if busy:
            transient.retrying(
                partial(claiming.postpone, busy, token, now + BUSY_ENDPOINT_DELAY),
                "postponing deliveries",
            )
    finally:  # what was sent is recorded whatever happened to the postponing
        done, pending = wait(futures, timeout=None if wait_for_all else FIRST_WAVE_SECONDS)
        if pending:
            process.recorder.watch(pending, token)
        results = recording.attempted(done)
        if results:
            transient.retrying(
                partial(recording.record, {token: results}), "recording delivery attempts"
            )
