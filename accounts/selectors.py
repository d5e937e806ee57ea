"""Reads for accounts."""

from accounts.keys import key_hash, looks_like_key
from accounts.models import ApiKey, Environment
from core.sql import ModelRows, fetch_all

_KEY = ModelRows(ApiKey, "k")
_ENVIRONMENT = ModelRows(Environment, "e")
# Every API request starts with this read, so it is written out (core.sql says why): the
# active key with its environment, in one statement.
_ACTIVE_KEY = (
    f"SELECT {_KEY.select}, {_ENVIRONMENT.select} FROM {_KEY.table} "  # noqa: S608  no values
    f"JOIN {_ENVIRONMENT.table} ON {_ENVIRONMENT.column['id']} = {_KEY.column['environment']} "
    f"WHERE {_KEY.column['key_hash']} = %s AND {_KEY.column['revoked_at']} IS NULL"
)


def api_key_for_raw(raw_key: str) -> ApiKey | None:
    """The active key this raw value belongs to, with its environment, or None.

    No cache: a revoked key must answer 401 at once on every process.
    """
    if not looks_like_key(raw_key):
        return None
    rows = fetch_all(_ACTIVE_KEY, [key_hash(raw_key)])
    if not rows:
        return None
    api_key = _KEY.instance(rows[0])
    api_key.environment = _ENVIRONMENT.instance(_KEY.rest(rows[0]))
    return api_key


def environment_get(*, organization_slug: str, name: str) -> Environment:
    return Environment.objects.select_related("organization").get(
        organization__slug=organization_slug, name=name
    )
