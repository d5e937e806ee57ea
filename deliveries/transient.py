"""Transient database errors, and going through them instead of dropping the work.

PostgreSQL refusing a connection (restarting, or out of connection slots: "sorry, too many
clients already") or a connection lost mid-statement passes within seconds. A worker step that
meets one tries again on a fresh connection, with backoff, for up to
WEBHOOKS_DATABASE_RETRY_SECONDS; a task whose step still fails is retried by Celery (see
deliveries.tasks). Neither is needed for correctness, which the sweep provides, but the sweep
only queues again what has waited WEBHOOKS_REENQUEUE_AFTER (a lost fan-out or send task), or
what a lapsed claim released (an attempt sent but not recorded: sent a second time).
"""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

logger = logging.getLogger(__name__)

# What a lost, refused or broken connection raises (Django wraps psycopg's errors in these).
# OperationalError also covers a deadlock, a serialization failure or a cancelled statement:
# the transaction was rolled back, so trying again is as safe.
ERRORS = (OperationalError, InterfaceError)

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
# How often a thread that works in rounds on one connection has it looked after (Tending).
TEND_SECONDS = 1.0

T = TypeVar("T")


def retrying(step: Callable[[], T], what: str, again: Callable[[], T] | None = None) -> T:
    """`step()`, tried again while it raises a transient database error, for up to
    WEBHOOKS_DATABASE_RETRY_SECONDS (then the error propagates); `again()` instead on the
    tries after the first, if given: what a step must also look for when a try it made may
    have committed and lost its answer.

    `step` must be safe to run again after a failure: its own transaction, or one statement in
    autocommit. Inside a transaction the caller opened nothing can be retried (the transaction
    is lost with the connection), so the error propagates at once.
    """
    deadline = time.monotonic() + float(settings.WEBHOOKS_DATABASE_RETRY_SECONDS)
    delay = FIRST_DELAY
    while True:
        try:
            return step()
        except ERRORS as exc:
            step = again or step
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: database error, trying again in %.2f s: %s", what, delay, exc)
        # A broken connection is dropped, so the next try opens a new one; a healthy one (the
        # error was a deadlock, say) is kept.
        connection.close_if_unusable_or_obsolete()
        # Jittered: the threads that failed together do not all come back at once.
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, MAX_DELAY)


class Tending:
    """A long-lived thread's connection looked after as a request's would be
    (close_old_connections: dropped if broken or past CONN_MAX_AGE), before its rounds of
    work: at most every TEND_SECONDS, and after any round that failed. Never raises: a
    connection that cannot even be closed is met by the round's first statement.

    Each look makes the connection's next statement a health check (CONN_HEALTH_CHECKS), one
    more round trip. The recorder and the rate limit's slot thread take a round every few
    milliseconds while a limited endpoint sends: looked after every round, they added a
    `SELECT 1` to each (docs/delivery-control.md)."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, *, failed: bool = False) -> None:
        now = time.monotonic()
        if failed or now >= self._next:
            self._next = now + TEND_SECONDS
            try:
                close_old_connections()
            except Exception:  # the round's first statement meets it and says so
                logger.debug("closing a thread's database connection failed", exc_info=True)
