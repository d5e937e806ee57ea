"""Hand-written SQL for the delivery hot path, and the few helpers it needs.

Fan-out, claim, load and record run for every event and every delivery; built by the ORM they
cost more CPU than the HTTP requests themselves. Their statements are written out instead, in
SQL that PostgreSQL and the SQLite file of `bin/dev` both accept, but for the few with a
PostgreSQL-only form (arrays, `FOR SHARE`, `SKIP LOCKED`, one-statement lane updates), whose
callers choose by `connection.vendor` (docs/architecture.md lists them). `statement()` fills in
table names and `%s` lists, never a value: values are always parameters.
"""

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from django.db import connection

from accounts.models import Environment
from core.sql import db_time, from_db_time
from deliveries.models import Delivery, DeliveryAttempt, Event, Lane
from webhooks.models import EndpointSecret, WebhookEndpoint

__all__ = [
    "array",
    "batches",
    "db_time",
    "db_uuid",
    "from_db_time",
    "marks",
    "rows",
    "statement",
]


@cache
def _names() -> dict[str, str]:
    """What a statement's `{name}`s stand for: the models' tables, and the few states the hot
    path compares with, as SQL literals made from the models' own choices."""
    return {
        "delivery": Delivery._meta.db_table,
        "attempt": DeliveryAttempt._meta.db_table,
        "event": Event._meta.db_table,
        "lane": Lane._meta.db_table,
        "endpoint": WebhookEndpoint._meta.db_table,
        "secret": EndpointSecret._meta.db_table,
        "environment": Environment._meta.db_table,
        "PENDING": _literal(Delivery.Status.PENDING),
        "SUCCEEDED": _literal(Delivery.Status.SUCCEEDED),
        "CANCELLED": _literal(Delivery.Status.CANCELLED),
        "ENABLED": _literal(WebhookEndpoint.Status.ENABLED),
        "ORDERED": _literal(WebhookEndpoint.DeliveryOrder.ORDERED),
        "PRODUCTION": _literal(Environment.Name.PRODUCTION),
    }


def _literal(choice: str) -> str:
    # Only the models' own choice values come here, never input: a word, quoted.
    if not choice.isidentifier():
        raise ValueError(f"not a plain choice value: {choice!r}")
    return f"'{choice}'"


def statement(template: str, **parts: str) -> str:
    """`template` with its `{table}` names, `{STATE}` literals and the given parts
    (placeholder lists) filled in."""
    return template.format(**_names(), **parts)


def marks(values: Sequence[Any]) -> str:
    """`%s, %s, …`: one placeholder per value."""
    return ", ".join(["%s"] * len(values))


def rows(row: str, count: int) -> str:
    """`(…), (…), …`: a VALUES list of `count` rows, each `row`."""
    return ", ".join([row] * count)


def array(values: Iterable[int | str]) -> str:
    """A PostgreSQL array literal of integers or identifiers (public ids: a prefix, `_` and
    base62), the parameter of a `%s::bigint[]` or `%s::text[]`: values that need no quoting,
    written out as they are. psycopg's dumper for a list, on a client-side cursor, took several
    times as long as the statement's other parameters together (docs/delivery-control.md)."""
    out = []
    for value in values:
        if isinstance(value, str) and not (value.isidentifier() and value.upper() != "NULL"):
            raise ValueError(f"not a plain identifier: {value!r}")
        out.append(str(int(value)) if not isinstance(value, str) else value)
    return "{" + ",".join(out) + "}"


def batches(
    delivery_ids: Sequence[int], size: int, event_of: Mapping[int, int] | None = None
) -> Iterator[tuple[list[int], list[int]]]:
    """These deliveries `size` at a time, in their order, each batch with its events if
    `event_of` (delivery: its event) is given: what a statement or a task needs to name its
    deliveries' day partitions (deliveries.partitions)."""
    for start in range(0, len(delivery_ids), size):
        batch = list(delivery_ids[start : start + size])
        yield batch, sorted({event_of[pk] for pk in batch}) if event_of else []


def db_uuid(value: uuid.UUID | None) -> Any:
    """A UUID as the database takes it as a parameter (SQLite takes hex text)."""
    if value is None or connection.features.has_native_uuid_field:
        return value
    return value.hex
