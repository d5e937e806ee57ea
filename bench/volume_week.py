"""`python -m bench.volume --week`: a simulated week of writes plus retention on a month of
history (bench.volume_fill), to see the history tables' size stay flat.

Before the week, SURVIVORS deliveries in each of the oldest `days` days are made pending again
(retrying past the retention window), so that each day's retention rebuilds a day with its
survivors (deliveries.partitions' `_kept` days) instead of dropping it; their retries end the
next simulated day, so that kept day goes in its turn. Then, for each simulated day from the
fill's "today" on: the partitions and the events' id sequence move as the workers' maintenance
moves them (`partitions_maintain(now=<the day>)`), the day's rows are written by the fill's own
statements (as many events as a day of the fill, each delivered to as many endpoints), the
day's partitions are vacuumed and analyzed as autovacuum does after inserts, and retention runs
as the hourly task runs it (`retention_prune`), with `now` at the day's end. Each day records
the rows and bytes (pg_total_relation_size over the partitions) per table, the partitions, and
the times of the write and of the retention pass.
"""

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from bench import volume_fill
from bench.volume_config import FULL_RATE, TABLE_SIZE_SQL
from deliveries import partitions
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.retention import retention_prune

DAYS = 7
SURVIVORS = 3  # deliveries per old day left pending past the window, each of its own event
# Flat: every table's bytes at the last day within this share of the first day's. One day is
# 1/30 (3.3 %) of the month: a day that is never dropped, or rows that stay behind, go over it
# at once, while the days' own differences (which events keep survivors, the fan event) and
# the free-space and visibility maps of new partitions stay well under it.
FLAT_WITHIN = 0.02


def week(days: int = DAYS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the week on this (filled, partitioned) database; the figures of each day, the
    first (day 0) as filled."""
    if not partitions.is_partitioned():
        raise RuntimeError("the week needs partitioned history tables (PostgreSQL)")
    filled = volume_fill.stored()
    today = volume_fill.first_day(filled) + timedelta(days=volume_fill.DAYS)
    first, last = filled.day_ids[1]  # an ordinary day (the last one also has the fan event)
    per_day = last - first + 1
    survivors = [_make_pending(lo, hi) for lo, hi in filled.day_ids[:days]]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(id) FROM {Delivery._meta.db_table}")  # noqa: S608
        max_delivery = cursor.fetchone()[0]
    # Ordinals after every delivery id the fill took (a delivery's id is its event's ordinal
    # times DELIVERIES_PER_EVENT plus its rank).
    ordinal = -(-max_delivery // volume_fill.DELIVERIES_PER_EVENT) + 1
    statements = [day for day, _ in volume_fill.insert_statements().values()]
    tables = [Event._meta.db_table, Delivery._meta.db_table, DeliveryAttempt._meta.db_table]
    records = [_snapshot(0, today - timedelta(days=1))]
    for i in range(1, days + 1):
        day = today + timedelta(days=i - 1)
        partitions.partitions_maintain(now=day)
        if i >= 2:  # the survivors kept yesterday have finished their retries
            Delivery.objects.filter(pk__in=survivors[i - 2]).update(
                status=Delivery.Status.SUCCEEDED, next_attempt_at=None, completed_at=day
            )
        chunk = {
            "lo": ordinal,
            "hi": ordinal + per_day - 1,
            "id_base": partitions.next_event_id() - ordinal,
            "day_start": day,
            "day_step": timedelta(days=1) / per_day,
        }
        params = volume_fill.statement_params(
            filled.environment_id, filled.endpoint_first_id, last_day=day + timedelta(days=1)
        )
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, params | chunk)
        write_s = time.perf_counter() - started
        volume_fill.reset_sequences(tables)
        ordinal += per_day
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"VACUUM (ANALYZE) {table}_p{partitions.day_number(day)}")
        vacuum_s = time.perf_counter() - started
        started = time.perf_counter()
        pruned = retention_prune(now=day + timedelta(days=1))
        prune_s = time.perf_counter() - started
        record = _snapshot(i, day)
        written = per_day * volume_fill.DELIVERIES_PER_EVENT
        record |= {
            "write_s": write_s,
            "vacuum_s": vacuum_s,
            "prune_s": prune_s,
            "dropped": pruned["partitions"],
            "prune_share_of_day_at_full_rate": prune_s / (written / FULL_RATE),
        }
        records.append(record)
        log(
            f"  day {i} ({day.date()}): write {write_s:.1f} s, retention {prune_s:.2f} s, "
            f"{record['partitions']} partitions, {sum(record['bytes'].values()) / 2**20:,.1f} MiB"
        )
    growth = {t: records[-1]["bytes"][t] / records[0]["bytes"][t] - 1 for t in records[0]["bytes"]}
    return {
        "scale": filled.scale,
        "days": records,
        "events_per_day": per_day,
        "survivors_per_day": SURVIVORS,
        "growth": growth,
        "flat_within": FLAT_WITHIN,
        "flat": all(abs(g) <= FLAT_WITHIN for g in growth.values()),
    }


def _make_pending(lo: int, hi: int) -> list[int]:
    """SURVIVORS deliveries of events lo to hi, each of its own event, retrying again; their
    ids."""
    ids = list(
        Delivery.objects.filter(event__gte=lo, event__lte=hi)
        .exclude(status=Delivery.Status.PENDING)
        .order_by("event_id", "id")
        .distinct("event_id")
        .values_list("id", flat=True)[:SURVIVORS]
    )
    Delivery.objects.filter(pk__in=ids).update(
        status=Delivery.Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(days=60),
        completed_at=None,
    )
    return ids


def _snapshot(number: int, day: datetime) -> dict[str, Any]:
    """Rows and bytes (with indexes and TOAST, over every partition) per history table."""
    rows, sizes = {}, {}
    with connection.cursor() as cursor:
        for model in (Event, Delivery, DeliveryAttempt):
            table = model._meta.db_table
            rows[table] = model.objects.count()
            cursor.execute(TABLE_SIZE_SQL, [table, table])
            sizes[table] = int(cursor.fetchone()[0] or 0)
    found = partitions.partitions()
    return {
        "day": number,
        "date": day.date().isoformat(),
        "rows": rows,
        "bytes": sizes,
        "partitions": len(found),
        "kept": sum(p.suffix.endswith(partitions.KEPT) for p in found),
    }
