"""Locks that live exactly as long as a transaction: held by whoever is doing a thing, freed
when that transaction ends, however it ends (commit, rollback, a lost connection)."""

import hashlib

from django.db import connection


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key that stands for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_transaction_lock(name: str) -> bool:
    """Takes the lock named `name` for the current transaction (PostgreSQL's
    `pg_try_advisory_xact_lock`, which a transaction pooler carries as well); False while
    another transaction holds it. On other databases (SQLite, bin/dev) True: their writing
    transactions queue one behind the other anyway."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_key(name)])
        row = cursor.fetchone()
    return bool(row and row[0])


def transaction_lock_timeout(milliseconds: int) -> None:
    """For the rest of the current transaction, a statement waiting longer than this for a lock
    fails (a transient OperationalError) rather than waiting on: for periodic work that loses
    nothing by trying again later, and must not queue behind a TRUNCATE or a migration's table
    lock (waiting there while holding its own locks deadlocked with them). PostgreSQL only."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{milliseconds}ms"])
