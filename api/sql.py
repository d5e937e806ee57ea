"""The queries every API request runs, as hand-written SQL that PostgreSQL keeps prepared.

Measured with bench/ (issue 7): the ORM spent ~0.5 ms of CPU building and compiling the API key
lookup on each request, more than PostgreSQL took to answer it, and PostgreSQL itself spent two
thirds of its time for such a query parsing and planning it. So the few queries on that path:
- are SQL, tied to their models by `ModelColumns`: the select list is every concrete field of
  the model (a new field is read without touching the SQL), and rows become model instances
  through the fields' own database converters, as the ORM would make them;
- run on a cursor that lets psycopg prepare them once per connection (`_cursor`);
- stand in for Django's `SELECT 1` health check when they are a request's first query
  (`fetch_one`).
"""

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Model

M = TypeVar("M", bound=Model)


class ModelColumns(Generic[M]):
    """All columns of `model` under a table alias: `select` for the SQL, `instance` for a row."""

    def __init__(self, model: type[M], alias: str) -> None:
        self.model = model
        self.alias = alias
        self.fields = list(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        self.select = ", ".join(f"{alias}.{quote(field.column)}" for field in self.fields)

    @cached_property
    def _converters(self) -> list[tuple[int, Callable[..., Any], Any]]:
        """(position, converter, expression) for each value that needs converting."""
        db = connections[DEFAULT_DB_ALIAS]
        converters = []
        for position, field in enumerate(self.fields):
            column = field.get_col(self.alias)
            for convert in db.ops.get_db_converters(column) + field.get_db_converters(db):
                converters.append((position, convert, column))
        return converters

    def instance(self, row: Sequence[Any]) -> tuple[M, Sequence[Any]]:
        """The instance made of the first columns of `row`, and the columns after them."""
        count = len(self.fields)
        values = list(row[:count])
        if self._converters:
            db = connections[DEFAULT_DB_ALIAS]
            for position, convert, column in self._converters:
                values[position] = convert(values[position], column, db)
        return self.model.from_db(DEFAULT_DB_ALIAS, self.attnames, values), row[count:]


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row `sql` returns, on a connection known to be alive.

    With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before a request's first query: one more
    round trip on every API request. A read outside a transaction can be that check itself: if
    the connection kept from an earlier request turns out to be dead (PostgreSQL restarted
    meanwhile), it is closed and the query sent again on a new one, which is what the health
    check would have done. Any other failure, or a second one, propagates as usual.
    """
    db = connections[DEFAULT_DB_ALIAS]
    checks_connection = (
        db.health_check_enabled
        and not db.health_check_done
        and db.connection is not None
        and not db.in_atomic_block
    )
    if checks_connection:
        db.health_check_done = True  # this query is the check
        try:
            return _fetch_one(db, sql, params)
        except (InterfaceError, OperationalError):
            db.close()
    return _fetch_one(db, sql, params)


def _fetch_one(db: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    with _cursor(db) as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def _cursor(db: BaseDatabaseWrapper) -> Any:
    """Django's cursor; on PostgreSQL one that binds parameters on the server.

    psycopg prepares a statement only on such a cursor (after the connection's
    `prepare_threshold` runs, see config.settings.base); PostgreSQL then no longer parses and
    plans these queries on every request, two thirds of its work for them. The ORM's cursors
    bind on the client and never prepare.
    """
    if db.vendor != "postgresql":
        return db.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        cursor = ServerBindingCursor(db.connection)
    db.validate_thread_sharing()
    return _LoggedCursor(cursor, db) if db.queries_logged else db.make_cursor(cursor)


class _LoggedCursor(CursorDebugWrapper):
    """Django's debug cursor (DEBUG, query counts in tests), logging the SQL as written: Django
    looks for the text of a prepared statement where psycopg does not keep it."""

    def execute(self, sql: str, params: Any = None) -> Any:
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)
