"""Partitioned history on PostgreSQL: events, deliveries and attempts split by event id, a
partition a day, so that retention drops a day's history whole (deliveries.retention).

Partition `p<k>` of each table holds the events whose ids are in [k * SPAN, (k + 1) * SPAN),
k a day number since 1970-01-01 (UTC), and those events' deliveries and attempts: the three
partitions of a day are dropped together and leave nothing behind. Event ids come from one
sequence; `partitions_maintain` (every worker process, every minute) makes the partitions of
today and the next AHEAD_DAYS days, then moves the sequence forward to today's first id, never
back. A late run loses nothing: events go on landing in the previous
day's partition. `p0` holds what was there before partitioning, up to the migration day.

SQLite (`bin/dev`) keeps plain tables; everything here does nothing there.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.locks import transaction_lock_timeout, try_transaction_lock
from deliveries.models import Delivery, DeliveryAttempt, Event

SPAN = 10**12  # event ids a day: far more than any day publishes
AHEAD_DAYS = 3
MAINTAIN_EVERY = 60.0  # seconds, in every worker process (deliveries.dispatch)
# Dropping a partition locks its table whole for an instant; a run that waits longer for that
# lock (behind a long transaction, with every query queued behind it) tries again later. Below
# PostgreSQL's deadlock_timeout (1 s by default): should a query and this job each wait for the
# other's table, it is this job's statement that ends, never the query.
LOCK_TIMEOUT_MS = 500

PENDING = Delivery.Status.PENDING.value
_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)")


@dataclass(frozen=True)
class Partition:
    suffix: str  # "p20790": the same in the three tables
    lower: int | None  # None: MINVALUE
    upper: int


def day_number(moment: datetime) -> int:
    return (moment.astimezone(UTC).date() - date(1970, 1, 1)).days


def history_tables() -> tuple[str, str, str]:
    """The partitioned tables, in the order their partitions are dropped."""
    return (DeliveryAttempt._meta.db_table, Delivery._meta.db_table, Event._meta.db_table)


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [Event._meta.db_table]
        )
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partitions() -> list[Partition]:
    """The events table's partitions, oldest first (the other two have the same)."""
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [table],
        )
        found = []
        for name, bound in cursor.fetchall():
            match = _BOUND.search(bound)
            if match is None:
                continue  # not a range partition of ours
            lower, upper = (v.strip("'") for v in match.groups())
            found.append(
                Partition(
                    suffix=name.removeprefix(f"{table}_"),
                    lower=None if lower == "MINVALUE" else int(lower),
                    upper=int(upper),
                )
            )
    return sorted(found, key=lambda p: p.upper)


def next_event_id() -> int:
    """The id the next event will get (none is taken by asking)."""
    sequence = _sequence()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_value + is_called::int FROM {sequence}")  # noqa: S608
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def _sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Event._meta.db_table])
        row = cursor.fetchone()
    assert row is not None and row[0]
    return str(row[0])  # as the catalog names it, quoted where it must be


def partitions_maintain(*, now: datetime | None = None) -> int:
    """Makes the partitions of today and the next AHEAD_DAYS days that are missing, then moves
    the events' id sequence forward to today's first id; returns how many days it made.

    Runs outside any transaction: the sequence is not transactional, and a partition rolled
    back after it moved would leave the next events nowhere to go."""
    if not is_partitioned():
        return 0
    if connection.in_atomic_block:
        raise RuntimeError("partitions_maintain commits its own work; call it outside atomic()")
    today = day_number(now or timezone.now())
    made = 0
    with transaction.atomic():
        if not try_transaction_lock("deliveries:partitions"):
            return 0
        transaction_lock_timeout(LOCK_TIMEOUT_MS)
        existing = partitions()
        with connection.cursor() as cursor:
            for k in range(today, today + AHEAD_DAYS + 1):
                lower, upper = k * SPAN, (k + 1) * SPAN
                if any(_overlaps(p, lower, upper) for p in existing):
                    continue
                for table in reversed(history_tables()):
                    _attach(cursor, table, f"p{k}", f"FROM ({lower}) TO ({upper})")
                made += 1
    first = today * SPAN
    if any(p.lower is not None and p.lower <= first < p.upper for p in partitions()):
        sequence = _sequence()
        with connection.cursor() as cursor:
            # One statement: the sequence only ever moves forward, whatever ran meanwhile.
            cursor.execute(
                f"SELECT setval(%s, %s, false) FROM {sequence}"  # noqa: S608
                " WHERE last_value + is_called::int < %s",
                [sequence, first, first],
            )
    return made


def _overlaps(partition: Partition, lower: int, upper: int) -> bool:
    return (partition.lower is None or partition.lower < upper) and lower < partition.upper


def partitions_prune(*, cutoff: datetime) -> int:
    """Drops, a day at a time, the partitions no event lands in any more whose newest event is
    older than `cutoff`; returns how many days went.

    A day with deliveries still pending (retrying, or waiting behind an ordered endpoint's
    head) keeps those deliveries' events with all their deliveries and attempts: they are
    copied into a day of their own, which takes the old one's place (`_keep_survivors`), and
    which goes in its turn when they have finished."""
    next_id = next_event_id()
    dropped = 0
    for partition in partitions():
        if partition.upper > next_id or not _past(partition, cutoff):
            continue  # events still land in it, or will, or it is recent
        kept = partition.suffix.endswith(KEPT)
        if kept and _pending(partition):
            continue  # its survivors are not done yet
        with transaction.atomic():
            if not try_transaction_lock("deliveries:partitions"):
                return dropped  # another run is at it
            transaction_lock_timeout(LOCK_TIMEOUT_MS)
            with connection.cursor() as cursor:
                # Locked before looking: nothing can become pending between the look and the
                # drop (a retry asked for, a recovery).
                _lock_whole(cursor)
                if not _pending(partition):
                    for table in history_tables():
                        cursor.execute(f"DROP TABLE {table}_{partition.suffix}")
                    dropped += 1
                elif not kept:
                    _keep_survivors(cursor, partition)
    return dropped


KEPT = "_kept"  # the name's end of a day rebuilt with its survivors only


def _past(partition: Partition, cutoff: datetime) -> bool:
    with connection.cursor() as cursor:
        # The newest by id: ids are taken in publication order.
        cursor.execute(
            f"SELECT created_at FROM {Event._meta.db_table}_{partition.suffix}"  # noqa: S608
            " ORDER BY id DESC LIMIT 1"
        )
        newest = cursor.fetchone()
    return newest is None or newest[0] < cutoff


def _pending(partition: Partition) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {Delivery._meta.db_table}_{partition.suffix}"  # noqa: S608
            " WHERE status = %s)",
            [PENDING],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _attach(cursor: Any, table: str, suffix: str, bounds: str) -> None:
    """A new partition, made apart and then attached: attaching locks the table against other
    schema changes only, not against queries (CREATE TABLE ... PARTITION OF would lock it
    whole)."""
    _create(cursor, table, suffix)
    cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {table}_{suffix} FOR VALUES {bounds}")


def _create(cursor: Any, table: str, suffix: str) -> None:
    """A table made like `table`'s partitions, with its indexes, to be attached to it."""
    cursor.execute(
        f"CREATE TABLE {table}_{suffix} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        " INCLUDING INDEXES)"
    )


def _lock_whole(cursor: Any) -> None:
    """The three tables, locked whole in one statement, in one order, for the rest of the
    transaction: what dropping or detaching a partition needs."""
    cursor.execute(f"LOCK TABLE {', '.join(history_tables())} IN ACCESS EXCLUSIVE MODE")


def _keep_survivors(cursor: Any, partition: Partition) -> None:
    """Swaps the day's partitions for copies holding only the events with a pending delivery,
    and all the deliveries and attempts of those events, in the caller's transaction: O(those
    rows), whatever the day's size.

    The caller has locked the three tables whole (`_lock_whole`) until its COMMIT, so nothing
    is recorded meanwhile that the copy would miss: milliseconds for thousands of survivors."""
    attempts, deliveries, events = history_tables()
    old, new = partition.suffix, f"{partition.suffix}{KEPT}"
    lower = "MINVALUE" if partition.lower is None else str(partition.lower)
    # The events with a delivery pending, then all of those events' deliveries and attempts,
    # each found by an index (delivery_due_idx, delivery_once_per_endpoint,
    # attempt_recorded_once).
    pending = f"SELECT event_id FROM {deliveries}_{old} WHERE status = %s"  # noqa: S608
    copies = {
        events: (f"id IN ({pending})", [PENDING]),
        deliveries: (f"event_id IN (SELECT id FROM {events}_{new})", []),  # noqa: S608
        attempts: (f"delivery_id IN (SELECT id FROM {deliveries}_{new})", []),  # noqa: S608
    }
    for table, (rows, params) in copies.items():
        _create(cursor, table, new)
        cursor.execute(
            f"INSERT INTO {table}_{new} SELECT * FROM {table}_{old} WHERE {rows}",  # noqa: S608
            params,
        )
    for table in copies:
        cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_{old}")
        cursor.execute(
            f"ALTER TABLE {table} ATTACH PARTITION {table}_{new}"
            f" FOR VALUES FROM ({lower}) TO ({partition.upper})"
        )
        cursor.execute(f"DROP TABLE {table}_{old}")
