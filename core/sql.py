"""Model rows read by a hand-written SELECT, made into instances as the ORM makes them.

For the few reads every API request makes (the key check, an endpoint, a page of endpoints),
where building and compiling the ORM's query cost the web process more than PostgreSQL took to
answer it (docs/architecture.md has the profile). The statements run on Django's own cursor,
with parameters bound on the client, so nothing is prepared on the server and a transaction
pooler sees plain statements. Columns come from the model's fields; rows become instances
through `Model.from_db`, with each field's `from_db_value` applied.
"""

from collections import namedtuple
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from django.db import connection
from django.db.models import DateTimeField, Field, Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime

M = TypeVar("M", bound=Model)


def column_name(field: "Field[Any, Any]") -> str:
    """A concrete field's column (Django calls a field concrete exactly when it has one)."""
    assert field.column is not None, f"{field} has no column"
    return field.column


class ModelRows(Generic[M]):
    """The concrete columns of `model` (all, or `only` those named) under the table alias
    `alias`: `select` and `table` for the SQL; `instance` or `record` for a row that starts with
    those columns."""

    def __init__(self, model: type[M], alias: str, only: Sequence[str] | None = None) -> None:
        self.model = model
        self.alias = alias
        concrete = list(model._meta.concrete_fields)
        self.fields = [f for f in concrete if f.name in only] if only else concrete
        self.attnames = [field.attname for field in self.fields]
        # A read-only row with the fields as attributes, for lists that make no instances.
        self._record: Any = namedtuple(f"{model.__name__}Record", self.attnames)  # type: ignore[misc]
        quote = connection.ops.quote_name
        self.table = f"{quote(model._meta.db_table)} {alias}"
        self.select = ", ".join(f"{alias}.{quote(column_name(field))}" for field in self.fields)
        self.column = {field.name: f"{alias}.{quote(column_name(field))}" for field in self.fields}
        self._converted = [
            (position, field)
            for position, field in enumerate(self.fields)
            if hasattr(field, "from_db_value")
        ]
        self._times = [
            position
            for position, field in enumerate(self.fields)
            if isinstance(field, DateTimeField)
        ]

    def instance(self, row: Sequence[Any]) -> M:
        return self.model.from_db(connection.alias, self.attnames, self._values(row))

    def record(self, row: Sequence[Any]) -> Any:
        """The values an instance would hold, at a fraction of the cost of making one (no
        model __init__, no signals): a list page's rows."""
        return self._record._make(self._values(row))

    def _values(self, row: Sequence[Any]) -> list[Any]:
        values = list(row[: len(self.fields)])
        for position, field in self._converted:
            values[position] = field.from_db_value(values[position], None, connection)
        for position in self._times:
            values[position] = from_db_time(values[position])
        return values

    def rest(self, row: Sequence[Any]) -> Sequence[Any]:
        """The columns of `row` after this model's."""
        return row[len(self.fields) :]


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def db_time(value: datetime | None) -> Any:
    """A datetime as the database takes it as a parameter (SQLite takes text)."""
    return connection.ops.adapt_datetimefield_value(value)


def from_db_time(value: datetime | str | None) -> datetime | None:
    """A datetime column's value, aware (SQLite returns naive UTC, or text)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
