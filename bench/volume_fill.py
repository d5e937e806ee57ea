"""A month of history for `python -m bench.volume`, made by PostgreSQL itself.

One organization's sandbox with ENDPOINTS endpoints (the first HUGE_ENDPOINTS of them get a
delivery of every event: millions each at full size), events spread evenly over DAYS days
(ids contiguous and increasing with created_at, as partitioning by id range needs), each
delivered to DELIVERIES_PER_EVENT endpoints, one attempt or more per delivery, and one last
event delivered to FAN_OUT endpoints. Every row is made by `INSERT … SELECT generate_series`,
a day at a time, through the parent tables' names with explicit column lists, so the same
fill serves plain and partitioned tables. On plain tables the indexes and constraints are
dropped first and built again from their own definitions afterwards (one sort per index
instead of millions of random inserts); partitioned tables keep theirs.

Event ids are numbered by day as deliveries.partitions splits history (day d's events from
day_number(d) * DAY_SPAN + 1 up), on plain tables too, so both schemas hold the same rows; on
partitioned tables the month gets a partition a day (by that module's own maintenance).
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench import seed
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.schedule import max_attempts
from webhooks.catalog import EVENT_TYPE_NAMES

try:
    from deliveries.partitions import SPAN as DAY_SPAN
except ImportError:  # plain tables only: the same numbering all the same
    DAY_SPAN = 10**12

DAYS = 30
FULL_EVENTS = 2_000_000
DELIVERIES_PER_EVENT = 10
HUGE_ENDPOINTS = 3
# Every endpoint gets a delivery of the last event: the API's view of an event this wide.
FAN_OUT = 10_000
ENDPOINTS = FAN_OUT
# Out of 1,000 deliveries (by a hash of the id): the rest succeed at the first attempt.
RETRIED_THEN_SUCCEEDED = 20
FAILED = 49
PENDING = 1  # only in the last day, and on every 10,000th event (retrying past retention)
# The live set, the same at any scale: of the newest LIVE_EVENTS events (the fan event among
# them), one delivery in LIVE_ONE_IN is still retrying. How many deliveries are in flight
# depends on the traffic of the last minutes, not on the history kept, so both databases of
# bench.volume show the same pending lists. (The one in LIVE_ONE_IN goes by the tens digit of
# `r`: its last digit follows the endpoint's rank in its event, and would leave the huge
# endpoints none.)
LIVE_EVENTS = 1000
LIVE_ONE_IN = 10
BODY_PADDING = 330  # characters of `data.note`: bodies of ~500 bytes
SLUG = "volume"


@dataclass
class Filled:
    """What a fill made, stored as the database's comment so `--measure-only` finds it."""

    scale: float
    events: int
    first_day: str  # ISO time of the first event (a UTC midnight)
    environment_id: int
    endpoint_first_id: int
    fan_event_id: int
    day_ids: list[tuple[int, int]]  # each day's first and last event id, oldest first
    rows: dict[str, int] = field(default_factory=dict)
    fill_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def huge_endpoint_ids(self) -> list[int]:
        return list(range(self.endpoint_first_id, self.endpoint_first_id + HUGE_ENDPOINTS))


def _day_ordinals(events: int, day: int) -> tuple[int, int]:
    """The first and last ordinal (1 to `events`) of day `day`'s events (0 = the oldest)."""
    return day * events // DAYS + 1, (day + 1) * events // DAYS


def day_number(moment: datetime) -> int:
    return (moment.date() - date(1970, 1, 1)).days


def _tables() -> dict[str, str]:
    return {
        "event": Event._meta.db_table,
        "delivery": Delivery._meta.db_table,
        "attempt": DeliveryAttempt._meta.db_table,
    }


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            [table],
        )
        return {row[0] for row in cursor.fetchall()}


def partitioned() -> bool:
    """Whether the history tables are partitioned (the events table stands for the three)."""
    return _partitioned(_tables()["event"])


def _partitioned(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
        return bool(row and row[0] == "p")


# --- the rows ---------------------------------------------------------------------------------

# A delivery per (g, k): event g, its k-th endpoint. `r` picks its fate, the same in both
# statements that read it (deliveries and their attempts).
_DELIVERY_SOURCE = """
SELECT g + %(id_base)s AS event_id, id, endpoint_id, ts, r,
       CASE WHEN g >= %(live_from)s AND r / 10 %% {live_one_in} = 0 THEN 1
            WHEN r < {succeeded_once} THEN 1
            WHEN r < {succeeded} THEN 2
            WHEN r < {failed} OR NOT (ts >= %(last_day)s OR g %% 10000 = 0) THEN %(max_attempts)s
            ELSE 2 END AS attempts,
       CASE WHEN g >= %(live_from)s AND r / 10 %% {live_one_in} = 0 THEN 'pending'
            WHEN r < {succeeded} THEN 'succeeded'
            WHEN r < {failed} OR NOT (ts >= %(last_day)s OR g %% 10000 = 0) THEN 'failed'
            ELSE 'pending' END AS status
FROM (
    SELECT g, id, endpoint_id, %(day_start)s + (g - %(lo)s) * %(day_step)s AS ts,
           ((id * 2654435761) %% 1000)::int AS r
    FROM ({pairs}) pairs
) s
"""
# The fill's statements cast a parameter wherever the statement does not fix its type: bound
# on the server (psycopg's server-side binding), two small ints are smallints, for which
# generate_series has no one match, and a string given to format() has no type at all.

# Pairs of an ordinary day: DELIVERIES_PER_EVENT endpoints per event, the huge ones first,
# then distinct others in turn.
_DAY_PAIRS = """
SELECT g, (g - 1) * {per_event} + k + 1 AS id,
       CASE WHEN k < {huge} THEN %(ep)s + k
            ELSE %(ep)s + {huge} + (g * {regular_per_event} + k - {huge}) %% {regular} END
           AS endpoint_id
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
CROSS JOIN generate_series(0, {per_event} - 1) k
"""
_FAN_PAIRS = """
SELECT %(lo)s::bigint AS g, (%(lo)s - 1) * {per_event} + k + 1 AS id, %(ep)s + k AS endpoint_id
FROM generate_series(0, {fan_out} - 1) k
"""


def _pairs(template: str) -> str:
    return template.format(
        per_event=DELIVERIES_PER_EVENT,
        huge=HUGE_ENDPOINTS,
        regular=ENDPOINTS - HUGE_ENDPOINTS,
        regular_per_event=DELIVERIES_PER_EVENT - HUGE_ENDPOINTS,
        fan_out=FAN_OUT,
    )


def _source(pairs: str) -> str:
    succeeded_once = 1000 - RETRIED_THEN_SUCCEEDED - FAILED - PENDING
    return _DELIVERY_SOURCE.format(
        pairs=pairs,
        succeeded_once=succeeded_once,
        succeeded=succeeded_once + RETRIED_THEN_SUCCEEDED,
        failed=succeeded_once + RETRIED_THEN_SUCCEEDED + FAILED,
        live_one_in=LIVE_ONE_IN,
    )


def _event_insert(table: str) -> str:
    body = (
        'format(\'{"id":"%%s","object":"event","type":"%%s","api_version":"%%s",'
        '"environment":"sandbox","created_at":"%%s","data":{"order_id":%%s,'
        '"customer":"cus_%%s","amount":%%s,"currency":"eur","note":"%%s"}}\', '
        "pid, type, %(api_version)s::text, to_char(ts AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\'), g, md5(g::text), g %% 100000, '
        "repeat(substr(md5(g::text), 1, 10), %(padding)s / 10))"
    )
    return f"""
        INSERT INTO {table} (id, public_id, environment_id, type, api_version, body,
                             created_at, fanned_out_at)
        SELECT id, pid, %(environment)s, type, %(api_version)s::text, {body}, ts,
               ts + interval '20 milliseconds'
        FROM (
            SELECT g, g + %(id_base)s AS id,
                   'evt_' || substr(md5(g::text), 1, 12) || lpad(to_hex(g), 8, '0') AS pid,
                   (%(types)s::text[])[1 + g %% %(type_count)s] AS type,
                   %(day_start)s + (g - %(lo)s) * %(day_step)s AS ts
            FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
        ) s
    """  # noqa: S608  table names from the models; values are parameters


def _delivery_insert(table: str, pairs: str) -> str:
    return f"""
        INSERT INTO {table} (id, public_id, event_id, endpoint_id, status, attempt_count,
            next_attempt_at, enqueued_at, claimed_until, claim_token, last_attempt_at,
            last_status_code, last_error, created_at, completed_at)
        SELECT id, 'dlv_' || substr(md5(id::text), 1, 12) || lpad(to_hex(id), 8, '0'),
               event_id, endpoint_id, status, attempts,
               CASE WHEN status = 'pending'
                    THEN statement_timestamp() + make_interval(hours => 1 + r %% 48) END,
               CASE WHEN status = 'pending' THEN NULL ELSE ts END,
               NULL, NULL,
               ts + make_interval(mins => attempts - 1, secs => 0.05),
               CASE WHEN status = 'succeeded' THEN 200 ELSE 503 END,
               CASE WHEN status = 'succeeded' THEN '' ELSE 'http_503' END,
               ts,
               CASE WHEN status = 'pending' THEN NULL
                    ELSE ts + make_interval(mins => attempts - 1, secs => 0.05) END
        FROM ({_source(pairs)}) d
    """  # noqa: S608  table names from the models; values are parameters


def _attempt_insert(table: str, pairs: str, with_event_id: bool) -> str:
    event_column, event_value = (", event_id", ", event_id") if with_event_id else ("", "")
    return f"""
        INSERT INTO {table} (delivery_id, number, started_at, duration_ms, status_code,
                             error, succeeded, response_body{event_column})
        SELECT id, n, ts + make_interval(mins => n - 1), 20 + r %% 180,
               CASE WHEN status = 'succeeded' AND n = attempts THEN 200 ELSE 503 END,
               CASE WHEN status = 'succeeded' AND n = attempts THEN '' ELSE 'http_503' END,
               status = 'succeeded' AND n = attempts,
               CASE WHEN status = 'succeeded' AND n = attempts THEN '{{"received":true}}'
                    ELSE '{{"error":"upstream unavailable"}}' END{event_value}
        FROM ({_source(pairs)}) d CROSS JOIN LATERAL generate_series(1, attempts) n
    """  # noqa: S608  table names from the models; values are parameters


# --- indexes and constraints ------------------------------------------------------------------


@dataclass
class Definitions:
    """The indexes and constraints of the filled tables, dropped before the fill and made
    again from these definitions after it."""

    constraints: list[tuple[str, str, str, str]]  # table, name, type, definition
    indexes: list[str]  # CREATE INDEX statements

    @classmethod
    def of(cls, tables: list[str]) -> "Definitions":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND "
                "(conrelid = ANY(%s::regclass[]) OR confrelid = ANY(%s::regclass[]))",
                [tables, tables],
            )
            constraints = [tuple(row) for row in cursor.fetchall()]
            cursor.execute(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
                [tables],
            )
            indexes = [row[0] for row in cursor.fetchall()]
        return cls(constraints, indexes)

    def drop(self) -> None:
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            for table, name, _, _ in sorted(self.constraints, key=lambda c: c[2] != "f"):
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
            for definition in self.indexes:
                name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
                cursor.execute(f"DROP INDEX {name}")

    def create(self, report: Callable[[str, float], None]) -> None:
        quote = connection.ops.quote_name
        ordered = sorted(self.constraints, key=lambda c: c[2] == "f")  # keys before references
        with connection.cursor() as cursor:
            for table, name, _, definition in ordered:
                started = time.perf_counter()
                cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")
                report(f"constraint {name}", time.perf_counter() - started)
            for definition in self.indexes:
                started = time.perf_counter()
                cursor.execute(definition)
                name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
                report(f"index {name}", time.perf_counter() - started)


# --- the fill ---------------------------------------------------------------------------------


def fill(scale: float, log: Callable[[str], None] = print, *, live_set: bool = True) -> Filled:
    """Fills the (freshly migrated) bench database; returns what it made, also stored as the
    database's comment. Without `live_set`, nothing is in flight at its end but the last day's
    and the retrying events' (the week, bench.volume_week, makes its own survivors)."""
    tables = _tables()
    events = max(DAYS, round(FULL_EVENTS * scale))
    fill_seconds: dict[str, float] = {}

    def timed(label: str, seconds: float) -> None:
        fill_seconds[label] = round(seconds, 1)
        log(f"  {label}: {seconds:.1f} s")

    with connection.cursor() as cursor:
        # The fill's own session: big sorts for the index builds, no wait on each commit.
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET jit = off")  # compiling each day's statement costs more than it saves
    tenant = seed.tenant(SLUG)
    started = time.perf_counter()
    seed.endpoints(tenant.environment, ENDPOINTS)
    timed("endpoints", time.perf_counter() - started)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(id), max(id) FROM webhooks_webhookendpoint WHERE environment_id = %s",
            [tenant.environment.pk],
        )
        first, last = cursor.fetchone()
    if last - first + 1 != ENDPOINTS:
        raise RuntimeError("the endpoints' ids are not contiguous")

    end = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    # Per chunk of events: ordinals (1 to `events`, then the fan event), where their ids start
    # and when; each day's events evenly over the day, the fan event in the last minute.
    chunks: list[dict[str, Any]] = []
    for day in range(DAYS + 1):
        lo, hi = _day_ordinals(events, day) if day < DAYS else (events + 1, events + 1)
        day_start = start + timedelta(days=min(day, DAYS - 1))
        first_id = day_number(day_start) * DAY_SPAN + 1
        if day == DAYS:  # after the last day's events, in its last minute
            first_id, day_start = chunks[-1]["id_base"], end - timedelta(minutes=1)
        else:
            first_id -= lo
        step = timedelta(days=1) / (hi - lo + 1)
        chunks.append(
            {"lo": lo, "hi": hi, "id_base": first_id, "day_start": day_start, "day_step": step}
        )
    day_ids = [(c["lo"] + c["id_base"], c["hi"] + c["id_base"]) for c in chunks[:DAYS]]
    day_ids[-1] = (day_ids[-1][0], chunks[-1]["hi"] + chunks[-1]["id_base"])
    filled = Filled(
        scale=scale,
        events=events,
        first_day=start.isoformat(),
        environment_id=tenant.environment.pk,
        endpoint_first_id=first,
        fan_event_id=day_ids[-1][1],
        day_ids=day_ids,
    )
    plain = [t for t in tables.values() if not _partitioned(t)]
    definitions = Definitions.of(plain)
    if plain:
        definitions.drop()
    if len(plain) < len(tables):
        _day_partitions(start, end)
    params = statement_params(
        tenant.environment.pk,
        first,
        last_day=end - timedelta(days=1),
        live_from=events + 1 - LIVE_EVENTS + 1 if live_set else None,  # the fan event: events + 1
    )
    statements = insert_statements()
    for name, (day_statement, fan_statement) in statements.items():
        started = time.perf_counter()
        for day, chunk in enumerate(chunks):
            with connection.cursor() as cursor:
                cursor.execute(fan_statement if day == DAYS else day_statement, params | chunk)
        timed(f"{name} rows", time.perf_counter() - started)
    reset_sequences(list(tables.values()))
    if plain:
        definitions.create(timed)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in tables.values():
            # Statistics and the visibility map, as autovacuum leaves a table that grew.
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    timed("vacuum analyze", time.perf_counter() - started)
    filled.rows = row_counts()
    filled.fill_seconds = fill_seconds
    store(filled)
    return filled


def statement_params(
    environment_id: int,
    endpoint_first_id: int,
    *,
    last_day: datetime,
    live_from: int | None = None,
) -> dict[str, Any]:
    """The parameters `insert_statements` share (a chunk adds its own); deliveries of events
    from `last_day` on may still be pending, and those of the live set (events from ordinal
    `live_from` on; none without it)."""
    return {
        "live_from": 2**62 if live_from is None else live_from,
        "environment": environment_id,
        "api_version": settings.API_VERSIONS[-1],
        "types": EVENT_TYPE_NAMES,
        "type_count": len(EVENT_TYPE_NAMES),
        "last_day": last_day,
        "max_attempts": max_attempts(),
        "padding": BODY_PADDING,
        "ep": endpoint_first_id,
    }


def insert_statements() -> dict[str, tuple[str, str]]:
    """Per table (events, deliveries, attempts, in that order): the statement that writes a
    chunk of ordinary events' rows, and the one that writes the fan event's."""
    tables = _tables()
    with_event_id = "event_id" in _columns(tables["attempt"])
    day_pairs, fan_pairs = _pairs(_DAY_PAIRS), _pairs(_FAN_PAIRS)
    return {
        "event": (_event_insert(tables["event"]), _event_insert(tables["event"])),
        "delivery": (
            _delivery_insert(tables["delivery"], day_pairs),
            _delivery_insert(tables["delivery"], fan_pairs),
        ),
        "attempt": (
            _attempt_insert(tables["attempt"], day_pairs, with_event_id),
            _attempt_insert(tables["attempt"], fan_pairs, with_event_id),
        ),
    }


def _day_partitions(start: datetime, end: datetime) -> None:
    """A partition a day for the month (partitioned tables, fresh): the migration's catch-all
    `p0` (empty here) is made again to end where the month starts, then the month's days are
    made by deliveries.partitions' own maintenance, as if it had run every day."""
    from deliveries import partitions

    with connection.cursor() as cursor:
        for table in partitions.history_tables():
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table}_p0)")  # noqa: S608  model table
            if cursor.fetchone()[0]:
                raise RuntimeError(f"{table}_p0 has rows: the fill needs a fresh database")
        for table in partitions.history_tables():
            cursor.execute(f"DROP TABLE {table}_p0")
    catch_all_partitions(day_number(start) * DAY_SPAN)
    day = start
    while day <= end:
        partitions.partitions_maintain(now=day)
        day += timedelta(days=1)


def catch_all_partitions(upper: int) -> None:
    """The history tables' `p0`, as the migration makes them: every event id below `upper`."""
    from deliveries import partitions

    with connection.cursor() as cursor:
        for table in reversed(partitions.history_tables()):
            cursor.execute(
                f"CREATE TABLE {table}_p0 PARTITION OF {table} "
                f"FOR VALUES FROM (MINVALUE) TO ({upper})"
            )


def reset_sequences(tables: list[str]) -> None:
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, 'id'), "  # noqa: S608  model tables
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)",
                [table],
            )


def row_counts() -> dict[str, int]:
    """Rows per filled table (the planner's estimate after ANALYZE: a count(*) of 20 M rows
    takes seconds and tells nothing more)."""
    with connection.cursor() as cursor:
        counts = {}
        for name, table in _tables().items():
            cursor.execute(
                "SELECT sum(reltuples)::bigint FROM pg_class WHERE oid IN "
                "(SELECT relid FROM pg_partition_tree(%s) WHERE isleaf) "
                "OR (oid = %s::regclass AND relkind = 'r')",
                [table, table],
            )
            counts[name] = int(cursor.fetchone()[0] or 0)
        return counts


def store(filled: Filled) -> None:
    with connection.cursor() as cursor:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        comment = json.dumps(asdict(filled)).replace("'", "''")
        cursor.execute(f"COMMENT ON DATABASE {name} IS '{comment}'")


def stored() -> Filled:
    """What the fill of this database made (its comment)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                       "WHERE datname = current_database()")  # fmt: skip
        row = cursor.fetchone()
    if not row or not row[0]:
        raise RuntimeError("this database was not filled by bench.volume")
    values = json.loads(row[0])
    values["day_ids"] = [tuple(ids) for ids in values["day_ids"]]  # JSON has lists
    return Filled(**values)


def first_day(filled: Filled) -> datetime:
    return datetime.fromisoformat(filled.first_day)
