"""Writes for organizations, environments and API keys."""

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from accounts.keys import generate_raw_key, key_hash, visible_prefix
from accounts.models import ApiKey, Environment, Organization
from accounts.scopes import SCOPES
from core.errors import InvalidInput


def _fits(model: type[Model], field: str, value: str) -> None:
    """Refuses, naming the field, a value longer than its column (a DataError otherwise)."""
    limit = getattr(model._meta.get_field(field), "max_length", None)
    if limit is not None and len(value) > limit:
        raise InvalidInput(field, f"{field} is {len(value)} characters; at most {limit}.")


@transaction.atomic
def organization_create(*, slug: str, name: str = "") -> Organization:
    """An organization with its two environments."""
    _fits(Organization, "slug", slug)
    _fits(Organization, "name", name)
    try:
        # The unique slug decides, not a check before the insert: two callers at once both
        # pass a check, and the second insert waits for the first to commit, then fails.
        with transaction.atomic():
            organization = Organization.objects.create(slug=slug, name=name or slug)
    except IntegrityError:
        raise InvalidInput("slug", f"organization {slug!r} already exists") from None
    Environment.objects.bulk_create(
        [Environment(organization=organization, name=n) for n in Environment.Name.values]
    )
    return organization


def api_key_create(
    *, environment: Environment, scopes: list[str], name: str = ""
) -> tuple[ApiKey, str]:
    """A new key and its raw value, which is never stored and never shown again."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    _fits(ApiKey, "name", name)
    for _ in range(5):  # the visible prefix is unique; a clash is astronomically rare
        raw = generate_raw_key(environment.key_prefix)
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    environment=environment,
                    name=name,
                    prefix=visible_prefix(raw),
                    key_hash=key_hash(raw),
                    scopes=list(dict.fromkeys(scopes)),
                )
        except IntegrityError:
            continue
        return api_key, raw
    raise RuntimeError("could not generate a unique API key")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoking is immediate and final; a revoked key answers 401."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_touch(*, api_key: ApiKey, every_seconds: int = 60) -> None:
    """Record use, at most once a minute per key, so a busy key does not write per request."""
    now = timezone.now()
    if api_key.last_used_at and (now - api_key.last_used_at).total_seconds() < every_seconds:
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
