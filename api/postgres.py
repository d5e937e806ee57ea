"""PostgreSQL connections: times loaded by psycopg's C loader rather than Django's Python one.

Django 5.2 loads every `timestamptz` through `BaseTzLoader`, a Python subclass of psycopg's
pure-Python loader, only to set the value's tzinfo to the connection's time zone. Measured on
the bench database (issue 7): 5.4 µs a value against 0.35 µs for psycopg's C loader, which
makes a list page of 20 endpoints ~0.1 ms slower and every delivery loaded by a worker a
few µs slower per column.

When Django's time zone for the connection is UTC (USE_TZ, no per-database TIME_ZONE; Django
then sets the session's TimeZone to UTC), the C loader returns the same values: aware
datetimes with `datetime.timezone.utc`. The loader registered here is the C one under
Django's name for it, with the `timezone` attribute Django's `create_cursor` compares, so
Django keeps it rather than registering its own on each cursor. Any other time zone leaves
Django's loader in place.
"""

from datetime import UTC
from functools import cache
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def install() -> None:
    connection_created.connect(_load_times_in_c, dispatch_uid="api.postgres.load_times_in_c")


def _load_times_in_c(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor != "postgresql" or connection.timezone is not UTC:
        return
    loader = _c_loader()
    if loader is not None:
        connection.connection.adapters.register_loader("timestamptz", loader)


@cache
def _c_loader() -> type | None:
    """A loader with Django's `timezone` attribute that loads with psycopg's C loader, or None
    without psycopg's C extension (psycopg-binary or psycopg-c)."""
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    oid = psycopg.postgres.types["timestamptz"].oid
    c_loader = psycopg.adapters.get_loader(oid, Format.TEXT)
    if c_loader is None or c_loader.__module__.startswith("psycopg.types"):
        return None  # the pure-Python loader: Django's is as fast

    class UtcTimestamptzLoader(Loader):
        timezone = UTC  # what Django's create_cursor compares with its own

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            # The C loader's own bound method: psycopg calls it with no Python frame.
            self.load = c_loader(oid, context).load  # type: ignore[method-assign]

        def load(self, data: Any) -> Any:  # replaced per instance in __init__
            raise NotImplementedError

    return UtcTimestamptzLoader
