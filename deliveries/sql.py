"""Hand-written SQL for the delivery hot path, and the few helpers it needs.

Fan-out, claim, load and record run for every event and every delivery; built by the ORM they
cost more CPU than the HTTP requests themselves. Their statements are written out instead, in
SQL that PostgreSQL and the SQLite file of `bin/dev` both accept. `statement()` fills in table
names and `%s` lists, never a value: values are always parameters.
"""

import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.apps import apps
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

__all__ = ["db_time", "db_uuid", "from_db_time", "marks", "rows", "statement"]


@cache
def _tables() -> dict[str, str]:
    model = apps.get_model
    return {
        "delivery": model("deliveries", "Delivery")._meta.db_table,
        "attempt": model("deliveries", "DeliveryAttempt")._meta.db_table,
        "event": model("deliveries", "Event")._meta.db_table,
        "endpoint": model("webhooks", "WebhookEndpoint")._meta.db_table,
        "secret": model("webhooks", "EndpointSecret")._meta.db_table,
        "environment": model("accounts", "Environment")._meta.db_table,
    }


def statement(template: str, **parts: str) -> str:
    """`template` with its `{table}` names and the given parts (placeholder lists) filled in."""
    return template.format(**_tables(), **parts)


def marks(values: list[Any]) -> str:
    """`%s, %s, …`: one placeholder per value."""
    return ", ".join(["%s"] * len(values))


def rows(row: str, count: int) -> str:
    """`(…), (…), …`: a VALUES list of `count` rows, each `row`."""
    return ", ".join([row] * count)


def db_time(value: datetime | None) -> object:
    """A datetime as the database takes it as a parameter (SQLite takes text)."""
    return connection.ops.adapt_datetimefield_value(value)


def db_uuid(value: uuid.UUID | None) -> object:
    """A UUID as the database takes it as a parameter (SQLite takes hex text)."""
    if value is None or connection.features.has_native_uuid_field:
        return value
    return value.hex


def from_db_time(value: datetime | str | None) -> datetime | None:
    """A datetime column's value, aware (SQLite returns naive UTC, or text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
