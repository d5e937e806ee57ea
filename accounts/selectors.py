"""Reads for accounts."""

from accounts.keys import key_hash, looks_like_key
from accounts.models import ApiKey, Environment


def api_key_for_raw(raw_key: str) -> ApiKey | None:
    """The active key this raw value belongs to, with its environment, or None."""
    if not looks_like_key(raw_key):
        return None
    api_key = (
        ApiKey.objects.select_related("environment__organization")
        .filter(key_hash=key_hash(raw_key), revoked_at__isnull=True)
        .first()
    )
    return api_key


def environment_get(*, organization_slug: str, name: str) -> Environment:
    return Environment.objects.select_related("organization").get(
        organization__slug=organization_slug, name=name
    )
