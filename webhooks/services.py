"""Writes for webhook endpoints. Views and commands call these; nothing else writes endpoints."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Environment
from core import encryption
from core.errors import InvalidInput
from webhooks import headers as endpoint_headers
from webhooks.catalog import normalize_filter
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.signals import delivery_order_changed, endpoints_stopped, rate_limit_changed
from webhooks.signing_secrets import generate_secret
from webhooks.url_policy import UrlPolicy, check_url


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    signing_secret: str  # shown once, on the create response


def _clean_url(url: str, environment: Environment) -> str:
    try:
        check_url(url, UrlPolicy.for_environment(environment))
    except ValueError as exc:
        raise InvalidInput("url", f"Invalid url: the URL {exc}.") from None
    return url


def _clean_events(enabled_events: list[str] | None) -> list[str]:
    try:
        return normalize_filter(enabled_events)
    except ValueError as exc:
        raise InvalidInput("enabled_events", f"Invalid enabled_events: {exc}.") from None


# Delivery control (the contract's section of that name); headers are webhooks.headers'.
MAX_DESCRIPTION_LENGTH = 500
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_RATE_LIMIT = 10_000


def _clean_description(description: object) -> str | None:
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description", "description must be a string or null.")
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidInput(
            "description", f"description is at most {MAX_DESCRIPTION_LENGTH} characters."
        )
    return description


def _merged_metadata(stored: Mapping[str, str], given: object) -> dict[str, str]:
    """`given` merged into `stored`: a key set to "" is removed; null removes every key."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidInput(
            "metadata", "metadata must be an object of string keys to string values, or null."
        )
    result = dict(stored)
    for key, value in given.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            raise InvalidInput(
                "metadata", f"metadata keys are 1 to {MAX_METADATA_KEY_LENGTH} characters."
            )
        if not isinstance(value, str):
            raise InvalidInput(
                "metadata",
                f'The metadata value of {key!r} must be a string ("" removes the key).',
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise InvalidInput(
                "metadata",
                f"The metadata value of {key!r} is over {MAX_METADATA_VALUE_LENGTH} characters.",
            )
        if "\x00" in key or "\x00" in value:
            # PostgreSQL's jsonb cannot hold U+0000: refused here rather than failing to store.
            raise InvalidInput("metadata", "metadata keys and values cannot contain U+0000.")
        if value:
            result[key] = value
        else:
            result.pop(key, None)
    if len(result) > MAX_METADATA_KEYS:
        raise InvalidInput(
            "metadata",
            f"metadata has at most {MAX_METADATA_KEYS} keys; this would make {len(result)}.",
        )
    return result


def _clean_rate_limit(rate_limit: object) -> int | None:
    if rate_limit is None:
        return None
    if isinstance(rate_limit, bool) or not isinstance(rate_limit, int):
        raise InvalidInput("rate_limit", "rate_limit must be an integer or null.")
    if not 1 <= rate_limit <= MAX_RATE_LIMIT:
        raise InvalidInput(
            "rate_limit",
            f"rate_limit is deliveries per second, 1 to {MAX_RATE_LIMIT}; null for no limit.",
        )
    return rate_limit


def _clean_status(status: object) -> str:
    if status not in WebhookEndpoint.Status.values:
        choices = ", ".join(WebhookEndpoint.Status.values)
        raise InvalidInput("status", f"status must be one of: {choices}.")
    return str(status)


def _clean_delivery_order(delivery_order: object) -> str:
    if delivery_order not in WebhookEndpoint.DeliveryOrder.values:
        choices = ", ".join(WebhookEndpoint.DeliveryOrder.values)
        raise InvalidInput("delivery_order", f"delivery_order must be one of: {choices}.")
    return str(delivery_order)


@transaction.atomic
def endpoint_create(
    *,
    environment: Environment,
    url: str,
    enabled_events: list[str] | None = None,
    expires_at: datetime | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    rate_limit: int | None = None,
    delivery_order: str = WebhookEndpoint.DeliveryOrder.UNORDERED,
) -> CreatedEndpoint:
    """A new enabled endpoint with a fresh signing secret (encrypted at rest); with
    `expires_at`, a temporary one (endpoint_lease_renew, endpoints_expired_delete).
    `metadata` and `headers` are merged into none, as an update merges them."""
    endpoint = WebhookEndpoint.objects.create(
        environment=environment,
        url=_clean_url(url, environment),
        enabled_events=_clean_events(enabled_events),
        expires_at=expires_at,
        description=_clean_description(description),
        metadata=_merged_metadata({}, metadata),
        headers=endpoint_headers.merged({}, {} if headers is None else headers),
        rate_limit=_clean_rate_limit(rate_limit),
        delivery_order=_clean_delivery_order(delivery_order),
    )
    secret = generate_secret()
    EndpointSecret.objects.create(endpoint=endpoint, ciphertext=encryption.encrypt(secret))
    return CreatedEndpoint(endpoint=endpoint, signing_secret=secret)


_UNSET: object = object()


def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | object = _UNSET,
    enabled_events: list[str] | object = _UNSET,
    status: str | object = _UNSET,
    description: str | object | None = _UNSET,
    metadata: Mapping[str, str] | object | None = _UNSET,
    headers: Mapping[str, str | None] | object = _UNSET,
    rate_limit: int | object | None = _UNSET,
    delivery_order: str | object = _UNSET,
) -> WebhookEndpoint:
    """Changes what was given. Disabling stops deliveries at once (they check at send time);
    enabling again resumes with new events only. `metadata` and `headers` are merged into the
    stored ones (a metadata key set to "", a header set to None, is removed; metadata None
    removes every key). A change of delivery_order or of rate_limit is told (webhooks.signals)
    in the same transaction."""
    changed: list[str] = []
    if url is not _UNSET:
        endpoint.url = _clean_url(str(url), endpoint.environment)
        changed.append("url")
    if enabled_events is not _UNSET:
        endpoint.enabled_events = _clean_events(enabled_events)  # type: ignore[arg-type]
        changed.append("enabled_events")
    if status is not _UNSET and _clean_status(status) != endpoint.status:
        endpoint.status = str(status)
        endpoint.disabled_reason = ""
        endpoint.consecutive_failures, endpoint.failing_since = 0, None
        changed += ["status", "disabled_reason", "consecutive_failures", "failing_since"]
    if description is not _UNSET:
        endpoint.description = _clean_description(description)
        changed.append("description")
    limit_changed = False
    if rate_limit is not _UNSET:
        limit = _clean_rate_limit(rate_limit)
        limit_changed = limit != endpoint.rate_limit
        endpoint.rate_limit = limit
        changed.append("rate_limit")
    order_changed = False
    if delivery_order is not _UNSET:
        order = _clean_delivery_order(delivery_order)
        order_changed = order != endpoint.delivery_order
        endpoint.delivery_order = order
        changed.append("delivery_order")
    merging = {"metadata": metadata, "headers": headers}
    merging = {name: given for name, given in merging.items() if given is not _UNSET}
    if not changed and not merging:
        return endpoint
    with transaction.atomic():
        if merging:
            _merge(endpoint, merging)
            changed += list(merging)
        endpoint.save(update_fields=[*changed, "updated_at"])
        if endpoint.status == WebhookEndpoint.Status.DISABLED and "status" in changed:
            endpoints_stopped.send(
                WebhookEndpoint, endpoint_ids=[endpoint.pk], reason="endpoint disabled"
            )
        if order_changed:
            delivery_order_changed.send(
                WebhookEndpoint, endpoint_id=endpoint.pk, ordered=endpoint.is_ordered
            )
        if limit_changed:
            rate_limit_changed.send(WebhookEndpoint, endpoint_id=endpoint.pk)
    return endpoint


def _merge(endpoint: WebhookEndpoint, given: dict[str, Any]) -> None:
    """Merges `given` metadata and headers into the stored ones, read again under the row's
    lock: two updates at once each keep what the other added."""
    stored = (
        WebhookEndpoint.objects.select_for_update()
        .filter(pk=endpoint.pk)
        .values("metadata", "headers")
        .get()
    )
    if "metadata" in given:
        endpoint.metadata = _merged_metadata(stored["metadata"], given["metadata"])
    if "headers" in given:
        endpoint.headers = endpoint_headers.merged(stored["headers"], given["headers"])


@transaction.atomic
def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint disappears from the API and its secrets are destroyed, so nothing can be
    signed for it again; its delivery history stays for operators."""
    endpoint.deleted_at = timezone.now()
    endpoint.status = WebhookEndpoint.Status.DISABLED
    endpoint.save(update_fields=["deleted_at", "status", "updated_at"])
    endpoint.secrets.all().delete()
    endpoints_stopped.send(WebhookEndpoint, endpoint_ids=[endpoint.pk], reason="endpoint deleted")


def endpoints_recovered(*, endpoint_ids: set[int]) -> None:
    """A success ends these endpoints' failure streaks."""
    if endpoint_ids:
        WebhookEndpoint.objects.filter(id__in=endpoint_ids, consecutive_failures__gt=0).update(
            consecutive_failures=0, failing_since=None
        )


def endpoints_failed(*, failures: dict[int, int], now: datetime) -> None:
    """Adds each endpoint's failed attempts (endpoint id: how many) to its failure streak."""
    # In id order, as every writer of several endpoints' rows: two writers never wait on each
    # other in a circle.
    for endpoint_id, count in sorted(failures.items()):
        WebhookEndpoint.objects.filter(id=endpoint_id).update(
            consecutive_failures=F("consecutive_failures") + count,
            failing_since=Coalesce(F("failing_since"), Value(now)),
        )


def endpoint_disable_automatically(*, endpoint_id: int, reason: str, now: datetime) -> bool:
    """Disables an enabled endpoint for a reason of the service's own (410 Gone, failing for
    too long), in the caller's transaction; False if it was not enabled. Like any disable, its
    queued deliveries are cancelled (endpoints_stopped)."""
    disabled = WebhookEndpoint.objects.filter(
        id=endpoint_id, status=WebhookEndpoint.Status.ENABLED
    ).update(status=WebhookEndpoint.Status.DISABLED, disabled_reason=reason, updated_at=now)
    if disabled:
        endpoints_stopped.send(
            WebhookEndpoint, endpoint_ids=[endpoint_id], reason="endpoint disabled"
        )
    return bool(disabled)


def endpoint_lease_renew(*, endpoint: WebhookEndpoint, until: datetime) -> bool:
    """Keeps a temporary endpoint until `until`; False once it is gone (deleted meanwhile)."""
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint.pk, deleted_at__isnull=True).update(
            expires_at=until
        )
    )


def endpoints_expired_delete(*, now: datetime | None = None) -> int:
    """Deletes the temporary endpoints whose lease has run out; returns how many."""
    expired = WebhookEndpoint.objects.live().filter(expires_at__lte=now or timezone.now())
    count = 0
    for endpoint in expired.order_by("id")[:1000]:
        endpoint_delete(endpoint=endpoint)
        count += 1
    return count


DEFAULT_ROTATION_OVERLAP = 24 * 3600
# The longest a rotated-out secret keeps signing beside the new one.
MAX_ROTATION_OVERLAP = 7 * 24 * 3600


@dataclass(frozen=True)
class RotatedSecret:
    endpoint: WebhookEndpoint
    signing_secret: str  # shown once, to whoever rotated
    previous_expires_at: datetime | None  # when the secrets it replaced stop signing


@transaction.atomic
def endpoint_secret_rotate(
    *, endpoint: WebhookEndpoint, overlap_seconds: int = DEFAULT_ROTATION_OVERLAP
) -> RotatedSecret:
    """A new signing secret. The current ones keep signing for `overlap_seconds` (0: they stop
    at once), so receivers can switch without rejecting a delivery; during the overlap every
    delivery carries one `v1` per valid secret, newest first."""
    if overlap_seconds < 0:
        raise InvalidInput("overlap_seconds", "overlap_seconds must be 0 or more.")
    if overlap_seconds > MAX_ROTATION_OVERLAP:
        raise InvalidInput(
            "overlap_seconds", f"overlap_seconds must be at most {MAX_ROTATION_OVERLAP} (7 days)."
        )
    if endpoint.deleted_at is not None:
        raise InvalidInput("webhook_endpoint_id", "A deleted endpoint has no secret to rotate.")
    now = timezone.now()
    # Lock the endpoint so two rotations at once cannot both keep the same secret alive.
    WebhookEndpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    expires_at = now + timedelta(seconds=overlap_seconds)
    endpoint.secrets.signing(now).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)
    ).update(expires_at=expires_at)
    secret = generate_secret()
    EndpointSecret.objects.create(
        endpoint=endpoint, ciphertext=encryption.encrypt(secret), created_at=now
    )
    return RotatedSecret(
        endpoint=endpoint,
        signing_secret=secret,
        previous_expires_at=expires_at if overlap_seconds else now,
    )


def expired_secrets_purge(*, now: datetime | None = None) -> int:
    """Deletes secrets whose overlap has ended: they sign nothing and decrypt nothing."""
    deleted, _ = EndpointSecret.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def secrets_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypts every signing secret under the first SIGNING_SECRET_ENCRYPTION_KEYS key,
    while the service runs (core.encryption.reencrypt_rows); returns how many it rewrote."""
    return encryption.reencrypt_rows(EndpointSecret, "ciphertext", batch_size)


def headers_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypts every endpoint's sensitive header values under the first
    SIGNING_SECRET_ENCRYPTION_KEYS key, as secrets_reencrypt does; returns how many endpoints
    it rewrote (one without a sensitive value is left as it is)."""
    return encryption.reencrypt_rows(
        WebhookEndpoint, "headers", batch_size, rewrite=endpoint_headers.reencrypted
    )
