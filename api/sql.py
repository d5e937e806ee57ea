"""The queries every API request runs, as hand-written SQL that PostgreSQL keeps prepared.

Measured with bench/ (issue 7): the ORM spent ~0.5 ms of CPU building and compiling the API key
lookup on each request, more than PostgreSQL took to answer it, and PostgreSQL itself spent two
thirds of its time for such a query parsing and planning it. So the few queries on that path:
- are SQL, tied to their models by `ModelColumns`: the select list is every concrete field of
  the model (a new field is read without touching the SQL), and rows become model instances
  through the fields' own database converters, as the ORM would make them;
- are prepared once per connection and run by name on its libpq connection (`_Prepared`);
- stand in for Django's `SELECT 1` health check when they are a request's first query
  (`fetch_one`).
"""

from collections import namedtuple
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
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


class EnvironmentRead:
    """A SELECT of one environment's rows that can also run inside the API key check.

    An API request's key check and the first read of its view are one round trip (see
    accounts.selectors.api_key_for_raw): a round trip to PostgreSQL cost a request more CPU
    than anything else on this path (bench/, issue 7). `sql` writes `{environment}` where the
    environment's id goes, once, before any other parameter; it may use any table alias but
    `k`, `e`, `q` and `r`. `order_by` orders its output columns by name where the read has an
    order: joined to the key check, its own ORDER BY no longer orders the statement's rows.
    """

    def __init__(self, sql: str, *, order_by: str = "") -> None:
        marker = "{environment}"
        if sql.count(marker) != 1 or -1 < sql.find("%s") < sql.find(marker):
            raise ValueError(f"{marker} must appear once, before any other parameter")
        self.sql = sql.replace(marker, "%s")  # alone: the environment's id is the first param
        self.template = sql
        self.order_by = order_by

    def within(self, environment_id_column: str) -> str:
        """The SELECT with the environment's id read from a column of an enclosing query."""
        return self.template.replace("{environment}", environment_id_column)


# The rows a request's first read got with its key check, until the view asks for them: at
# most one entry, replaced by every key check, and gone when taken or the request ends.
_prefetched: ContextVar[tuple[tuple[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None]
_prefetched = ContextVar("api_sql_prefetched", default=None)


def prefetched(read: EnvironmentRead, params: Sequence[Any], rows: list[tuple[Any, ...]]) -> None:
    """Keeps `rows`, what `read` returns in the environment whose id is `params[0]` with the
    other `params`, for this request's `fetch_one` or `fetch_all` of the same."""
    _prefetched.set(((read.sql, tuple(params)), rows))


def _take_prefetched(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]] | None:
    entry = _prefetched.get()
    if entry is None or entry[0] != (sql, tuple(params)):
        return None
    _prefetched.set(None)
    return entry[1]


def forget_prefetched(**_: Any) -> None:
    """At every key check and at the end of every request (request_finished): nothing read
    for one request is handed to another."""
    _prefetched.set(None)


def instance_in(
    columns: ModelColumns[M], read: tuple[EnvironmentRead, Sequence[Any]] | None, environment: Model
) -> M | None:
    """The one instance of `columns`' model that `read` finds in `environment` (in_environment);
    None if it finds none, or for no read (an id that cannot exist)."""
    if read is None:
        return None
    query, params = read
    row = fetch_one(query.sql, [environment.pk, *params])
    return None if row is None else in_environment(columns, row, environment)


def in_environment(columns: ModelColumns[M], row: Sequence[Any], environment: Model) -> M:
    """The instance of `columns`' model made of `row`, a row read in `environment`, with the
    environment set on it (already loaded with the API key: no query)."""
    instance, _ = columns.instance(row)
    instance.environment = environment  # type: ignore[attr-defined]
    return instance


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row `sql` returns, on a connection known to be alive.

    With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before a request's first query: one more
    round trip on every API request. A read outside a transaction can be that check itself: if
    the connection kept from an earlier request turns out to be dead (PostgreSQL restarted
    meanwhile), it is closed and the query sent again on a new one, which is what the health
    check would have done. Any other failure, or a second one, propagates as usual.

    A read this request's API key check made already (EnvironmentRead) costs no query.
    """
    row: tuple[Any, ...] | None = _read(sql, params, many=False)
    return row


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, like `fetch_one` (prepared, and the health check if first)."""
    rows: list[tuple[Any, ...]] = _read(sql, params, many=True)
    return rows


def _read(sql: str, params: Sequence[Any], *, many: bool) -> Any:
    prefetched_rows = _take_prefetched(sql, params)
    if prefetched_rows is not None:
        return prefetched_rows if many else (prefetched_rows[0] if prefetched_rows else None)
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
    statements = _statements(db)
    if statements is None:
        with db.cursor() as cursor:  # Django's own: logged with their values, as the ORM's
            cursor.execute(sql, params)
            return cursor.fetchall() if many else cursor.fetchone()
    with db.wrap_database_errors:
        rows = statements.run(sql, params)
    return rows if many else (rows[0] if rows else None)


def db_time(value: datetime | None) -> object:
    """A datetime as the database takes it as a parameter (SQLite takes text)."""
    return connections[DEFAULT_DB_ALIAS].ops.adapt_datetimefield_value(value)


def _statements(db: BaseDatabaseWrapper) -> "_Prepared | None":
    """On PostgreSQL, the statements prepared on the current connection, or None where
    Django's own cursor must run (other databases; queries logged or wrapped: DEBUG, tests
    counting queries, instrumentation)."""
    if db.vendor != "postgresql" or db.queries_logged or db.execute_wrappers:
        return None
    _before_query(db)
    prepared: _Prepared | None = getattr(db, "_api_statements", None)
    if prepared is None or prepared.connection is not db.connection:
        prepared = db._api_statements = _Prepared(db.connection)  # type: ignore[attr-defined]
    return prepared


class _Prepared:
    """The API's statements, each prepared once on one connection and then run by name on its
    libpq connection, without a psycopg cursor.

    A psycopg cursor spent ~80 us of CPU on such a query (its execution machinery, in Python),
    against ~43 us for libpq's own call, most of it the round trip's system calls (bench/,
    issue 7). Parameters and rows still go through psycopg's adapters (the connection's, so
    Django's and api.postgres' loaders apply), errors through psycopg's exception classes, and
    the connection's transaction is the caller's: a statement run here inside `atomic()` is
    part of it.

    A statement is prepared per set of parameter types psycopg dumps (an int may go as int2,
    int4 or int8 by its size), as psycopg does itself.

    The session plans them once (`plan_cache_mode = force_generic_plan`, set before the first
    prepare outside a transaction, where a rollback cannot undo it). By default PostgreSQL
    plans a prepared statement again at every execution while it estimates the generic plan
    dearer than the custom ones: the page after a cursor did so at every request in an
    environment of 100,000 endpoints, for the same plan, ~0.3 ms of PostgreSQL's CPU each
    (pg_prepared_statements.custom_plans). The statements here are index walks whose plan does
    not depend on the values; one that does must not be run through this class.
    """

    def __init__(self, connection: Any) -> None:
        from psycopg.adapt import Transformer

        self.connection = connection
        self.transformer = Transformer(connection)
        self.queries: dict[str, Any] = {}
        self.names: dict[tuple[str, tuple[int, ...]], bytes] = {}
        self.count = 0  # names are never reused on a connection
        self.plans_once = False  # the session's plan_cache_mode is set

    def run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        from psycopg import pq
        from psycopg._queries import PostgresQuery

        query = self.queries.get(sql)
        if query is None:
            query = self.queries[sql] = PostgresQuery(self.transformer)
            query.convert(sql, params)
        else:
            query.dump(params)
        result = self._exec(sql, query)
        if self._forgotten(result):
            # Dropped by the server (DISCARD ALL, DEALLOCATE ALL: a pooler resetting the
            # session, say): prepare again and run it once more.
            self.names.clear()
            self.plans_once = False  # so were the session's settings
            result = self._exec(sql, query)
        self._check(result)
        if result.status != pq.ExecStatus.TUPLES_OK:
            return []
        self.transformer.set_pgresult(result)
        rows: list[tuple[Any, ...]] = self.transformer.load_rows(0, result.ntuples, tuple)
        return rows

    def _exec(self, sql: str, query: Any) -> Any:
        """Runs the dumped `query` under its statement's name, preparing it first if needed."""
        from psycopg import pq

        pgconn = self.connection.pgconn
        key = (sql, tuple(query.types))
        name = self.names.get(key)
        if name is None:
            if not self.plans_once and pgconn.transaction_status == pq.TransactionStatus.IDLE:
                self._check(pgconn.exec_(b"SET plan_cache_mode = force_generic_plan"))
                self.plans_once = True
            name = b"kinetic_api_%d" % self.count
            self.count += 1
            self._check(pgconn.prepare(name, query.query, param_types=query.types))
            self.names[key] = name
        return pgconn.exec_prepared(name, query.params, param_formats=query.formats)

    def _forgotten(self, result: Any) -> bool:
        """The statement is gone from the server, and nothing else failed: outside a
        transaction block (inside one, the error has aborted it, and it must propagate)."""
        from psycopg import pq

        return (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
            and self.connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
        )

    def _check(self, result: Any) -> None:
        from psycopg import errors, pq

        if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            return
        pgconn = self.connection.pgconn
        if pgconn.status == pq.ConnStatus.BAD:
            raise errors.OperationalError(pgconn.get_error_message())
        raise errors.error_from_result(result, encoding=self.connection.info.encoding)


def _before_query(db: BaseDatabaseWrapper) -> None:
    """The checks Django's `cursor()` makes: a failed health check closes the connection, a
    closed one reopens, another thread's refuses, a broken transaction refuses."""
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    db.validate_no_broken_transaction()
