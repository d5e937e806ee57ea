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


def _pacer_recording_turns(api, monkeypatch) -> tuple[int, rates.Pacer, list[float]]:
    """A rate-limited endpoint's id, a pacer, and the turns it gives, as given rather than as
    the sleeping threads woke: a wake may be up to LATE_SECONDS after its turn by design."""
    created = api.create_endpoint("http://127.0.0.1:9/limited", rate_limit=RATE)
    endpoint_id = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"]).pk
    pacer = rates.Pacer()
    given_turns: list[float] = []
    take_turn = pacer._turn

    def recorded(turn: "rates._Turn") -> float:
        start = take_turn(turn)
        given_turns.append(start)
        return start

    monkeypatch.setattr(pacer, "_turn", recorded)
    return endpoint_id, pacer, given_turns


@pytest.mark.django_db(transaction=True)
def test_turns_keep_their_step_as_the_database_goes_away_and_comes_back(api, settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    # Time enough for the pacer's thread to connect anew on a loaded machine, so that the last
    # turn is the database's; the failed statement hands over at once, whatever this is.
    monkeypatch.setattr(rates, "TURN_TIMEOUT", 15.0)
    endpoint_id, pacer, given_turns = _pacer_recording_turns(api, monkeypatch)

    def next_start() -> float:
        return Pace.objects.get(endpoint_id=endpoint_id).next_start

    def turn(_: object = None) -> None:
        pacer.wait_turn(endpoint_id, RATE)

    try:
        turn()  # from the database
        given = next_start()
        _terminate_the_others()
        # Two sending threads ask at once: at least the first is given its turn alone.
        with ThreadPoolExecutor(2) as threads:
            list(threads.map(turn, range(2)))
        turn()  # from the database again
        assert next_start() > given
    finally:
        _terminate_the_others()  # the daemon thread's connection: the test database is dropped

    apart = rates.step(RATE)
    assert len(given_turns) >= 4, given_turns
    starts = sorted(given_turns)
    assert all(b - a >= apart - 1e-6 for a, b in pairwise(starts)), (apart, starts)


@pytest.mark.django_db(transaction=True)
def test_a_request_handed_over_before_its_slot_takes_its_turn_at_the_slot(
    api, settings, monkeypatch
):
    """A delivery goes to a sending thread a few steps before its slot (rates.handover_seconds),
    so that a thread held up in the sending threads' queue still finds its turn ahead of it.
    Its turn comes no earlier than its slot, and the next request's a step after that, however
    early that one asks."""
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint_id, pacer, given_turns = _pacer_recording_turns(api, monkeypatch)
    slot = time.time() + 0.5
    try:
        pacer.wait_turn(endpoint_id, RATE, slot)
        started = time.time()
        pacer.wait_turn(endpoint_id, RATE)
    finally:
        _terminate_the_others()  # the daemon thread's connection: the test database is dropped

    assert given_turns[0] >= slot
    assert started >= slot
    assert given_turns[1] >= given_turns[0] + rates.step(RATE) - 1e-6
