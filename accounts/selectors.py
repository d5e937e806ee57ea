"""Reads for accounts."""

from accounts.keys import key_hash, looks_like_key
from accounts.models import ApiKey, Environment
from api.sql import ModelColumns, fetch_one

_KEY = ModelColumns(ApiKey, "k")
_ENVIRONMENT = ModelColumns(Environment, "e")

# Every API request starts with this lookup, hence SQL rather than the ORM (see api.sql): the
# ORM's version cost a fifth of a whole retrieve. (The organization is not needed on that path.)
_ACTIVE_KEY_SQL = f"""
    SELECT {_KEY.select}, {_ENVIRONMENT.select}
    FROM {_KEY.table}
    JOIN {_ENVIRONMENT.table} ON e.id = k.environment_id
    WHERE k.key_hash = %s AND k.revoked_at IS NULL
"""  # noqa: S608  the column lists come from the models; the hash is a parameter


def api_key_for_raw(raw_key: str) -> ApiKey | None:
    """The active key this raw value belongs to, with its environment, or None.

    No cache: a revoked key must answer 401 at once on every process, and one indexed query is
    as cheap as any shared check that a cached key is still valid would be.
    """
    if not looks_like_key(raw_key):
        return None
    # The first query of every API request: it doubles as the connection's health check.
    row = fetch_one(_ACTIVE_KEY_SQL, [key_hash(raw_key)])
    if row is None:
        return None
    api_key, rest = _KEY.instance(row)
    api_key.environment, _ = _ENVIRONMENT.instance(rest)
    return api_key


def environment_get(*, organization_slug: str, name: str) -> Environment:
    return Environment.objects.select_related("organization").get(
        organization__slug=organization_slug, name=name
    )
