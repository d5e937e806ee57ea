"""Reads for accounts."""

from accounts.keys import key_hash, looks_like_key
from accounts.models import ApiKey, Environment


def api_key_for_raw(raw_key: str) -> ApiKey | None:
    """The active key this raw value belongs to, with its environment, or None.

    No cache: a revoked key must answer 401 at once on every process.
    """
    if not looks_like_key(raw_key):
        return None
    keys = ApiKey.objects.select_related("environment")
    try:
        return keys.get(key_hash=key_hash(raw_key), revoked_at__isnull=True)
    except ApiKey.DoesNotExist:
        return None


def environment_get(*, organization_slug: str, name: str) -> Environment:
    return Environment.objects.select_related("organization").get(
        organization__slug=organization_slug, name=name
    )
