"""The rate limit's turns (deliveries.rates.Pacer) as the database goes away and comes back.

A turn taken in the process alone comes a step after the last one the database gave it, and
the first the database gives once it is back comes a step after the last taken alone. Without
that, each hand-over let two requests out together: 6 starts in one second at 4/s, seen in a
full run of tests/test_endpoint_rate_limit.py (its PostgreSQL stopped mid-stream).

The database goes away for the pacer's thread alone: its backend is terminated, so its next
statement fails at once, as when PostgreSQL stops. (Its connection is looked after at most every
TEND_SECONDS, and the turn after the termination comes within that; the failed round has it
look again, and the next turn connects anew.)
"""

import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import pytest
from django.db import connection

from deliveries import rates
from deliveries.models import Pace
from webhooks.models import WebhookEndpoint

RATE = 4


def _terminate_the_others() -> None:
    """Ends every other session on the test database: here, the pacer thread's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.mark.django_db(transaction=True)
def test_turns_keep_their_step_as_the_database_goes_away_and_comes_back(api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    created = api.create_endpoint("http://127.0.0.1:9/limited", rate_limit=RATE)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    pacer = rates.Pacer()

    def next_start() -> float:
        return Pace.objects.get(endpoint_id=endpoint_id).next_start

    def turn(_: object = None) -> float:
        """When a sending thread's turn came (its sleep ended)."""
        pacer.wait_turn(endpoint_id, RATE)
        return time.time()

    try:
        starts = [turn()]  # from the database
        given = next_start()
        _terminate_the_others()
        # Two sending threads ask at once: at least the first is given its turn alone.
        with ThreadPoolExecutor(2) as threads:
            starts += threads.map(turn, range(2))
        starts.append(turn())  # from the database again
        assert next_start() > given
    finally:
        _terminate_the_others()  # the daemon thread's connection: the test database is dropped

    apart = rates.step(RATE)
    # Each start is measured as its sleep ends, which may overrun its turn by a few ms.
    starts.sort()
    assert all(b - a >= apart - 0.02 for a, b in pairwise(starts)), (apart, starts)
