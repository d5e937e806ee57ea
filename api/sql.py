"""The queries every API request runs, as hand-written SQL that PostgreSQL keeps prepared.

Measured with bench/ (issue 7): the ORM spent ~0.5 ms of CPU building and compiling the API key
lookup on each request, more than PostgreSQL took to answer it, and PostgreSQL itself spent two
thirds of its time for such a query parsing and planning it. So the few queries on that path:
- are SQL, tied to their models by `ModelColumns`: the select list is every concrete field of
  the model (a new field is read without touching the SQL), and rows become model instances
  through the fields' own database converters, as the ORM would make them;
- run on a cursor that lets psycopg prepare them once per connection (`_cursor`, kept per
  connection by `_kept_cursor`);
- stand in for Django's `SELECT 1` health check when they are a request's first query
  (`fetch_one`).
"""

from collections import namedtuple
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import Model

M = TypeVar("M", bound=Model)


class ModelColumns(Generic[M]):
    """Columns of `model` under a table alias: `table` and `select` for the SQL; `instance` or
    `record` for a row. All concrete fields, or only `only` (by name) where a list needs just
    those."""

    def __init__(self, model: type[M], alias: str, only: Sequence[str] | None = None) -> None:
        self.model = model
        self.alias = alias
        fields = model._meta.concrete_fields
        self.fields = [model._meta.get_field(name) for name in only] if only else list(fields)
        self.attnames = [field.attname for field in self.fields]
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        self.table = f"{quote(model._meta.db_table)} {alias}"  # for FROM and JOIN
        self.select = ", ".join(f"{alias}.{quote(field.column)}" for field in self.fields)
        # A read-only row with the fields as attributes, for lists that make no instances.
        self.record_type = namedtuple(f"{model.__name__}Record", self.attnames)  # type: ignore[misc]

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

    def _values(self, row: Sequence[Any], db: BaseDatabaseWrapper) -> list[Any]:
        values = list(row[: len(self.fields)])
        for position, convert, column in self._converters:
            values[position] = convert(values[position], column, db)
        return values

    def instance(self, row: Sequence[Any]) -> tuple[M, Sequence[Any]]:
        """The instance made of the first columns of `row`, and the columns after them."""
        values = self._values(row, connections[DEFAULT_DB_ALIAS])
        instance = self.model.from_db(DEFAULT_DB_ALIAS, self.attnames, values)
        return instance, row[len(self.fields) :]

    def records(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """The first columns of each row as a `record_type`: the values an instance would hold,
        at a tenth of the cost of making one (no signals, no field defaults)."""
        # The connection is looked up once: `connections[alias]` (a thread-local) for every
        # row cost a tenth of a list request (issue 7).
        db = connections[DEFAULT_DB_ALIAS]
        make = self.record_type._make
        return [make(self._values(row, db)) for row in rows]


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row `sql` returns, on a connection known to be alive.

    With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before a request's first query: one more
    round trip on every API request. A read outside a transaction can be that check itself: if
    the connection kept from an earlier request turns out to be dead (PostgreSQL restarted
    meanwhile), it is closed and the query sent again on a new one, which is what the health
    check would have done. Any other failure, or a second one, propagates as usual.
    """
    row: tuple[Any, ...] | None = _read(sql, params, many=False)
    return row


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, like `fetch_one` (prepared, and the health check if first)."""
    rows: list[tuple[Any, ...]] = _read(sql, params, many=True)
    return rows


def _read(sql: str, params: Sequence[Any], *, many: bool) -> Any:
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
            return _execute(db, sql, params, many)
        except (InterfaceError, OperationalError):
            db.close()
    return _execute(db, sql, params, many)


def _execute(db: BaseDatabaseWrapper, sql: str, params: Sequence[Any], many: bool) -> Any:
    kept = _kept_cursor(db)
    with nullcontext(kept) if kept is not None else _cursor(db) as cursor, db.wrap_database_errors:
        cursor.execute(sql, params)
        return cursor.fetchall() if many else cursor.fetchone()


def db_time(value: datetime | None) -> object:
    """A datetime as the database takes it as a parameter (SQLite takes text)."""
    return connections[DEFAULT_DB_ALIAS].ops.adapt_datetimefield_value(value)


def _kept_cursor(db: BaseDatabaseWrapper) -> Any:
    """On PostgreSQL, one server-binding cursor kept per connection, or None where Django's
    own cursor must run (other databases; queries logged or wrapped: DEBUG, tests,
    instrumentation).

    Making Django's cursor for each query (a new psycopg cursor, Django's wrapper, closing
    both) cost 50 µs of CPU a query, more than psycopg's 35 µs round trip itself (bench/,
    issue 7).
    """
    if db.vendor != "postgresql" or db.queries_logged or db.execute_wrappers:
        return None
    _before_query(db)
    kept = getattr(db, "_kept_cursor", None)
    if kept is None or kept.connection is not db.connection or kept.closed:
        kept = db._kept_cursor = _server_binding(db)  # type: ignore[attr-defined]
    return kept


def _cursor(db: BaseDatabaseWrapper) -> Any:
    """Django's cursor; on PostgreSQL one that binds parameters on the server.

    psycopg prepares a statement only on such a cursor (after the connection's
    `prepare_threshold` runs, see config.settings.base); PostgreSQL then no longer parses and
    plans these queries on every request, two thirds of its work for them. The ORM's cursors
    bind on the client and never prepare.
    """
    if db.vendor != "postgresql":
        return db.cursor()
    _before_query(db)
    cursor = _server_binding(db)
    return _LoggedCursor(cursor, db) if db.queries_logged else db.make_cursor(cursor)


def _before_query(db: BaseDatabaseWrapper) -> None:
    """The checks Django's `cursor()` makes: a failed health check closes the connection, a
    closed one reopens, another thread's refuses, a broken transaction refuses."""
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    db.validate_no_broken_transaction()


def _server_binding(db: BaseDatabaseWrapper) -> Any:
    from django.db.backends.postgresql.base import ServerBindingCursor

    with db.wrap_database_errors:
        return ServerBindingCursor(db.connection)


class _LoggedCursor(CursorDebugWrapper):
    """Django's debug cursor (DEBUG, query counts in tests), logging the SQL with its values
    as the ORM's queries are logged. Django's own way, reading the statement psycopg last
    sent, finds nothing for a prepared one; the values are put in client-side instead (only
    when queries are logged), so the log can be read and run (EXPLAIN, bench/)."""

    def execute(self, sql: str, params: Any = None) -> Any:
        logged = self.db.ops.compose_sql(sql, params) if params else sql
        with self.debug_sql(logged, params):
            return CursorWrapper.execute(self, sql, params)
