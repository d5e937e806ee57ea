"""Reads for accounts."""

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection

from accounts.keys import key_hash, looks_like_key
from accounts.models import ApiKey, Environment
from api.sql import (
    EnvironmentRead,
    ModelColumns,
    fetch_all,
    fetch_one,
    forget_prefetched,
    prefetched,
)

_KEY = ModelColumns(ApiKey, "k")
_ENVIRONMENT = ModelColumns(Environment, "e")
_KEY_AND_ENVIRONMENT = f"{_KEY.table} JOIN {_ENVIRONMENT.table} ON e.id = k.environment_id"
_ACTIVE = "k.key_hash = %s AND k.revoked_at IS NULL"

# Every API request starts with this lookup, hence SQL rather than the ORM (see api.sql): the
# ORM's version cost a fifth of a whole retrieve. (The organization is not needed on that path.)
_ACTIVE_KEY_SQL = f"""
    SELECT {_KEY.select}, {_ENVIRONMENT.select} FROM {_KEY_AND_ENVIRONMENT} WHERE {_ACTIVE}
"""  # noqa: S608  the column lists come from the models; the hash is a parameter

# Where a row of the key check with a read (below) has the read's columns: after the key's, the
# environment's and the `found` flag.
_READ_AT = len(_KEY.fields) + len(_ENVIRONMENT.fields) + 1


@cache
def _key_check_with(read: EnvironmentRead) -> str:
    """The key check, and `read` in the key's environment: the key's row first (its `found`
    NULL), then one row per row read (the key's columns NULL: loading them again on every row
    cost a list page more than the round trip saved); no row at all for a bad key.

    The read appears twice: the first branch joins it ON false, which gives the key's row the
    read's columns, typed and NULL, without running it (the plan's One-Time Filter)."""
    in_caller = read.within("caller.environment_id")
    no_key = ", ".join(["NULL"] * (_READ_AT - 1))
    order = f", {read.order_by}" if read.order_by else ""
    return f"""
        WITH caller AS MATERIALIZED (
            SELECT {_KEY.select}, {_ENVIRONMENT.select} FROM {_KEY_AND_ENVIRONMENT}
            WHERE {_ACTIVE}
        )
        SELECT caller.*, r.* FROM caller
        LEFT JOIN LATERAL (SELECT NULL::boolean AS found, q.* FROM ({in_caller}) q) r ON false
        UNION ALL
        SELECT {no_key}, true, q.* FROM caller, LATERAL ({in_caller}) q
        ORDER BY found NULLS FIRST{order}
    """  # noqa: S608  SQL of the code's own reads; values are parameters


def api_key_for_raw(
    raw_key: str, read: tuple[EnvironmentRead, Sequence[Any]] | None = None
) -> ApiKey | None:
    """The active key this raw value belongs to, with its environment, or None.

    With `read` (an EnvironmentRead and its parameters after the environment's id), the same
    statement reads it in the key's environment, and the request's next `fetch_one` or
    `fetch_all` of that read gets those rows without a round trip (api.sql.prefetched). The
    read is only ever handed to the key's own environment, and only within this request; what
    the caller may see of it is for the view to decide, after the scope check, as always.

    No cache: a revoked key must answer 401 at once on every process.
    """
    forget_prefetched()  # nothing read for an earlier request is ever handed to this one
    if not looks_like_key(raw_key):
        return None
    if connection.vendor != "postgresql":
        read = None  # LATERAL and MATERIALIZED: the key check alone (SQLite, local runs)
    # The first query of every API request: it doubles as the connection's health check.
    if read is None:
        row = fetch_one(_ACTIVE_KEY_SQL, [key_hash(raw_key)])
        rows = [] if row is None else [row]
    else:
        query, params = read
        # The read's parameters once per appearance of the read in the statement.
        rows = fetch_all(_key_check_with(query), [key_hash(raw_key), *params, *params])
    if not rows:
        return None
    api_key, rest = _KEY.instance(rows[0])
    api_key.environment, _ = _ENVIRONMENT.instance(rest)
    if read is not None:
        found = [row[_READ_AT:] for row in rows[1:]]
        prefetched(query, [api_key.environment.pk, *params], found)
    return api_key


def environment_get(*, organization_slug: str, name: str) -> Environment:
    return Environment.objects.select_related("organization").get(
        organization__slug=organization_slug, name=name
    )
