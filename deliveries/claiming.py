"""Claiming: which due deliveries this worker holds, until when, and what sending them needs.

A batch is claimed with one UPDATE (rows another worker is claiming at that instant are skipped,
not waited for) and loaded with one SELECT guarded by the claim's token, so a worker whose lease
ran out, and whose deliveries another worker took over, loads and changes nothing. The
statements are written out (deliveries.sql): they run for every batch, on PostgreSQL and on the
SQLite file of `bin/dev` alike, but for SKIP LOCKED (PostgreSQL's; SQLite has one writer) and
the cancellation check's arrays (`cancelled`).
"""

import json
import math
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from deliveries import metrics, sql, transient
from deliveries.models import Delivery


@dataclass(slots=True)
class Claimed:
    """A claimed delivery, with what sending and recording it need (one row of the load)."""

    pk: int
    public_id: str
    attempt_count: int
    endpoint_id: int
    event_id: int
    event_public_id: str
    event_type: str
    body: bytes
    event_created_at: datetime
    url: str
    endpoint_enabled: bool
    endpoint_deleted: bool
    endpoint_failing: bool
    production: bool
    ordered: bool
    environment_id: int
    # As the database answers it (JSON text or a list): read only for ordered endpoints.
    enabled_events: Any
    rate_limit: int | None
    # Due again after waiting (sent back for its rate limit's slot, or retried): it was due
    # before the deliveries made since, and goes before them.
    returning: bool
    # The endpoint's own headers as stored (sensitive values encrypted: webhooks.headers).
    headers: dict[str, Any]


class _TopUps:
    """When this process's last top-up found fewer due deliveries than it had room for: until
    WEBHOOKS_TOP_UP_QUIET_SECONDS after it, batches do not top up. At rest every fan-out topped
    up and found nothing, each scan reading past every delivery in flight (they are pending and
    due): the due index's busiest statement (docs/delivery-control.md). A backlog still comes
    to the tasks and sweeps that claim it, and to top-ups once the quiet ends."""

    found_short_at = -math.inf  # time.monotonic()

    @classmethod
    def room(cls, room: int) -> int:
        quiet = float(settings.WEBHOOKS_TOP_UP_QUIET_SECONDS)
        return 0 if time.monotonic() - cls.found_short_at < quiet else room

    @classmethod
    def found(cls, room: int, extra: int) -> None:
        if extra < room:
            cls.found_short_at = time.monotonic()


def lease_seconds() -> float:
    """How long a claim holds: an attempt's timeout and a margin for recording it."""
    return float(settings.WEBHOOKS_DELIVERY_TIMEOUT) + float(settings.WEBHOOKS_CLAIM_LEASE_MARGIN)


def claim(
    delivery_ids: list[int],
    room: int,
    now: datetime,
    token: uuid.UUID,
    *,
    held: bool,
    event_ids: Collection[int] | None = None,
) -> list[Claimed]:
    """Claims the due ones among `delivery_ids` (unless the caller `held` them already) and up
    to `room` other due deliveries (oldest first) in one UPDATE, and loads what this token
    holds of them, with their events and endpoints, in one SELECT.

    `event_ids`, when the caller knows them, are the events `delivery_ids` belong to (all of
    them; more do no harm): PostgreSQL then plans and reads only those days' partitions
    (deliveries.partitions), where a statement naming deliveries by id alone is planned over
    every day of the month.

    Each statement is tried again on its own after a transient error: the load of rows this
    token holds must not be lost for want of a connection."""
    if not delivery_ids:
        return []
    claimed = dict.fromkeys(delivery_ids) if held else {}
    room = _TopUps.room(room)
    if room or not held:
        rows = transient.retrying(
            partial(_claim_rows, delivery_ids, event_ids, room, now, token, held),
            "claiming deliveries",
        )
        if room:  # what it took besides those asked
            _TopUps.found(room, len(rows.keys() - set(delivery_ids)))
        claimed |= rows
    if not claimed:
        return []
    # The events of what the claim returned, and of the held ones if the caller knew them.
    returned = {e for e in claimed.values() if e is not None}
    events = returned | set(event_ids or ()) if not held or event_ids is not None else None
    return transient.retrying(
        partial(load, list(claimed), token, events), "loading claimed deliveries"
    )


# Due: selectors.deliveries_due, written out (pending, next attempt now or past, held by no
# live claim; parameters: now, now). SKIP LOCKED: rows another worker is claiming at this
# instant are theirs; waiting for them gains nothing. `now` as a subquery, whose value the
# planner does not know: a due time's statistics are stale as soon as they are taken, and ones
# taken with a backlog due in the coming seconds had it guess few rows due and read the due
# index by bitmap, which reads every dead entry of the index on every claim, where the ordered
# scan it takes otherwise stops at LIMIT and drops dead entries as it meets them
# (docs/delivery-control.md).
_DUE = (
    "status = {PENDING} AND next_attempt_at <= (SELECT %s)"
    " AND (claimed_until IS NULL OR claimed_until < %s)"
)
# Other due deliveries, oldest first, to top a batch up (parameters: now, now, how many).
# The asked ones are left out by a join, not by their ids written out: `id NOT IN (%s, …)` cost
# ~45 ms of planning per claim over a month of day partitions (docs/volume.md); a batch the
# caller holds needs no exclusion (held, they are not due).
_EXTRA = """extra AS (
    SELECT id FROM {delivery} WHERE {due}{unasked}
    ORDER BY next_attempt_at LIMIT %s{lock}
)"""
# The asked deliveries that are due, topped up (parameters: the batch's ids, its events' ids
# if known, now, now; the top-up's; the claim's).
_CLAIM = """
WITH asked AS (SELECT id FROM {delivery} WHERE id IN ({batch}){events} AND {due}{lock}), {extra}
UPDATE {delivery} SET claimed_until = %s, claim_token = %s
WHERE id IN (SELECT id FROM asked UNION ALL SELECT id FROM extra)
RETURNING id, event_id
""".replace("{extra}", _EXTRA.replace("{unasked}", " AND id NOT IN (SELECT id FROM asked)"))
_CLAIM = _CLAIM.replace("{due}", _DUE)
# Other due deliveries alone, oldest first (parameters: now, now, those of `{unasked}`, how
# many; the claim's).
_EXTRA_ONLY = """
WITH {extra}
UPDATE {delivery} SET claimed_until = %s, claim_token = %s
WHERE id IN (SELECT id FROM extra)
RETURNING id, event_id
""".replace("{extra}", _EXTRA).replace("{due}", _DUE)
# The top-up alone, for a batch its caller holds already.
_TOP_UP = _EXTRA_ONLY.replace("{unasked}", "")

# What the load reads, by Claimed's field names.
_LOADED = {
    "pk": "d.id",
    "public_id": "d.public_id",
    "attempt_count": "d.attempt_count",
    "endpoint_id": "d.endpoint_id",
    "event_id": "d.event_id",
    "event_public_id": "e.public_id",
    "event_type": "e.type",
    "body": "e.body",
    "event_created_at": "e.created_at",
    "url": "w.url",
    "endpoint_enabled": "w.status = {ENABLED} AND w.deleted_at IS NULL",
    "endpoint_deleted": "w.deleted_at IS NOT NULL",
    "endpoint_failing": "w.failing_since IS NOT NULL",
    "production": "env.name = {PRODUCTION}",
    "ordered": "w.delivery_order = {ORDERED}",
    "environment_id": "w.environment_id",
    "enabled_events": "w.enabled_events",
    "rate_limit": "w.rate_limit",
    "returning": "d.next_attempt_at > d.created_at",
    "headers": "w.headers",
}
_LOAD = f"""
SELECT {", ".join(_LOADED.values())}
FROM {{delivery}} d
JOIN {{event}} e ON e.id = d.event_id
JOIN {{endpoint}} w ON w.id = d.endpoint_id
JOIN {{environment}} env ON env.id = w.environment_id
WHERE d.id IN ({{ids}}){{events}} AND {{held}}
"""  # noqa: S608  the code's own column expressions; values are parameters


def _claim_rows(
    delivery_ids: list[int],
    event_ids: Collection[int] | None,
    room: int,
    now: datetime,
    token: uuid.UUID,
    held: bool,
) -> dict[int, int]:
    """The claiming UPDATE (or, for a batch the caller `held`, the top-up alone); what this
    token now holds by it (delivery: event)."""
    lock = _skip_locked()
    t_now = sql.db_time(now)
    lease_until = sql.db_time(now + timedelta(seconds=lease_seconds()))
    token_value = sql.db_uuid(token)
    with connection.cursor() as cursor:
        if held:
            cursor.execute(
                sql.statement(_TOP_UP, lock=lock), [t_now, t_now, room, lease_until, token_value]
            )
        else:
            in_events, events = _among_events(["event_id"], event_ids)
            asked = [*delivery_ids, *events, t_now, t_now]
            cursor.execute(
                sql.statement(_CLAIM, batch=sql.marks(delivery_ids), events=in_events, lock=lock),
                [*asked, t_now, t_now, room, lease_until, token_value],
            )
        return {row[0]: row[1] for row in cursor.fetchall()}


def _skip_locked() -> str:
    """Rows another worker is claiming at this instant are skipped (SQLite has one writer)."""
    features = connection.features
    return " FOR UPDATE SKIP LOCKED" if features.has_select_for_update_skip_locked else ""


def load(
    delivery_ids: list[int], token: uuid.UUID | None, event_ids: Collection[int] | None = None
) -> list[Claimed]:
    """What sending and recording need of the deliveries this token holds among these (with
    no token, of these deliveries whoever holds them: a look ahead, deliveries.ordering.peek).
    `event_ids`, if given, are their events (see `claim`)."""
    held, params = ("d.claim_token = %s", [sql.db_uuid(token)]) if token else ("TRUE", [])
    in_events, events = _among_events(["d.event_id", "e.id"], event_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.statement(_LOAD, ids=sql.marks(delivery_ids), events=in_events, held=held),
            [*delivery_ids, *events, *params],
        )
        return [_claimed(dict(zip(_LOADED, row, strict=True))) for row in cursor.fetchall()]


def _among_events(columns: list[str], event_ids: Collection[int] | None) -> tuple[str, list[int]]:
    """` AND <column> IN (%s, …)` for each of these columns, and its parameters: how a statement
    names its rows' events, for PostgreSQL to plan and read their partitions only. Nothing
    without events."""
    events = sorted(event_ids or ())
    if not events:
        return "", []
    return "".join(f" AND {c} IN ({sql.marks(events)})" for c in columns), events * len(columns)


def json_column(value: Any) -> Any:
    """A JSON column as a written-out SELECT answers it: text (psycopg as Django sets it up,
    and SQLite), decoded here."""
    return json.loads(value) if isinstance(value, str) else value


def _claimed(values: dict[str, Any]) -> Claimed:
    # SQLite answers booleans as 0 and 1, and times as text.
    for name in ("endpoint_enabled", "endpoint_deleted", "endpoint_failing", "production"):
        values[name] = bool(values[name])
    values["ordered"] = bool(values["ordered"])
    values["returning"] = bool(values["returning"])
    values["headers"] = json_column(values["headers"])
    values["body"] = values["body"].encode("utf-8")
    values["event_created_at"] = sql.from_db_time(values["event_created_at"])
    return Claimed(**values)


# Written out, the ids and their events in arrays: a process with deliveries waiting for
# their rate-limit slots asks this every WEBHOOKS_WAITING_CHECK_INTERVAL (deliveries.dispatch),
# and the ORM's statement, ids in a list and no events, took 3% of the workers' interpreter
# time in the rate runs, this one 1% (docs/delivery-control.md).
_CANCELLED = """
SELECT id FROM {delivery} WHERE {among} AND status = {CANCELLED}
"""


def cancelled(deliveries: dict[int, int]) -> set[int]:
    """Those of these deliveries (delivery: its event) cancelled since they were claimed (their
    endpoint disabled or deleted: services.endpoint_deliveries_cancel)."""
    params: list[Any]
    if connection.vendor == "postgresql":
        among = "id = ANY(%s::bigint[]) AND event_id = ANY(%s::bigint[])"
        params = [sql.array(deliveries), sql.array(sorted(set(deliveries.values())))]
    else:
        in_events, events = _among_events(["event_id"], deliveries.values())
        among, params = f"id IN ({sql.marks(list(deliveries))}){in_events}", [*deliveries, *events]
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_CANCELLED, among=among), params)
        return {row[0] for row in cursor.fetchall()}


def cancel_for_gone_endpoints(deliveries: list[Claimed], token: uuid.UUID) -> None:
    """Claimed deliveries whose endpoint was disabled or deleted are cancelled, not sent."""
    if not deliveries:
        return
    now = timezone.now()
    groups = (
        ("endpoint deleted", [d for d in deliveries if d.endpoint_deleted]),
        ("endpoint disabled", [d for d in deliveries if not d.endpoint_deleted]),
    )
    cancelled = 0
    with transaction.atomic():  # all or nothing: the caller may run it again
        for reason, group in groups:
            if group:
                cancelled += Delivery.objects.filter(
                    id__in=[d.pk for d in group], claim_token=token
                ).update(
                    status=Delivery.Status.CANCELLED,
                    completed_at=now,
                    next_attempt_at=None,
                    claimed_until=None,
                    last_error=reason,
                )
    # Only those still under this claim: one whose claim lapsed is another worker's to count.
    metrics.DELIVERIES_CANCELLED.inc(cancelled)


# Back to the queue, each delivery due again at its time (parameters: the time, or each
# delivery's id and time; the ids, their events' if known; the claim's token). Written out:
# a rate-limited endpoint's deliveries beyond its slots come back here once a batch, and the
# ORM's UPDATE cost several times the statement's own time (docs/delivery-control.md).
_POSTPONE = """
UPDATE {delivery} SET next_attempt_at = {at}, claimed_until = NULL, claim_token = NULL,
    enqueued_at = {enqueued}
WHERE id IN ({ids}){events} AND claim_token = %s AND status = {PENDING}
"""


# A worker process shutting down leaves what it was to take back itself (postpone's and the
# slot statement's `refilled`) to the others' sweeps as it comes due, rather than
# WEBHOOKS_REENQUEUE_AFTER later: their enqueued marks are cleared (parameters: the ids, their
# events'). Marked enqueued for their due time, they are told from a task's by that alone; one
# claimed or sent meanwhile keeps its mark.
_REFILLS_RELEASE = """
UPDATE {delivery} SET enqueued_at = NULL
WHERE id IN ({ids}){events} AND status = {PENDING} AND enqueued_at = next_attempt_at
"""
# Deliveries per statement of the release: a backlog may leave many.
_RELEASE_CHUNK = 1000


def refills_release(deliveries: dict[int, int]) -> None:
    """Clears the enqueued marks of these deliveries (delivery: its event) that a worker
    shutting down was to take back itself: the sweeps queue them as they come due."""
    with connection.cursor() as cursor:
        for chunk, of_chunk in sql.batches(sorted(deliveries), _RELEASE_CHUNK, deliveries):
            in_events, events = _among_events(["event_id"], of_chunk)
            statement = sql.statement(_REFILLS_RELEASE, ids=sql.marks(chunk), events=in_events)
            cursor.execute(statement, [*chunk, *events])


def postpone(
    when: dict[int, datetime],
    token: uuid.UUID,
    event_ids: Collection[int] | None = None,
    *,
    refilled: bool = False,
) -> None:
    """Back to the queue, not attempted, each delivery due again at its time: its endpoint has
    its fill of requests in flight, its rate limit has no slot for it yet, or the worker is
    shutting down (recording.unattempted_release). One cancelled meanwhile (its endpoint
    disabled while it was held) is left as it is, with no next attempt. `event_ids`, if
    given, are their events (see `claim`). `refilled`: this process takes them back itself as
    they come due (deliveries.rates), so they count as enqueued for then and the sweep leaves
    them unless that is lost."""
    if not when:
        return
    ids = list(when)
    times = set(when.values())
    if len(times) == 1:
        at, params = "%s", [sql.db_time(times.pop())]
    else:
        at = f"CASE id {' '.join(['WHEN %s THEN %s'] * len(when))} END"
        params = [value for pk, t in when.items() for value in (pk, sql.db_time(t))]
    in_events, events = _among_events(["event_id"], event_ids)
    enqueued, enqueued_params = (at, params) if refilled else ("NULL", [])
    statement = sql.statement(
        _POSTPONE, at=at, enqueued=enqueued, ids=sql.marks(ids), events=in_events
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*params, *enqueued_params, *ids, *events, sql.db_uuid(token)])
