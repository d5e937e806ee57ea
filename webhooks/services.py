"""Writes for webhook endpoints. Views and commands call these; nothing else writes endpoints."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Environment
from core import encryption
from core.errors import InvalidInput
from webhooks.catalog import normalize_filter
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.signals import endpoints_stopped
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


@transaction.atomic
def endpoint_create(
    *,
    environment: Environment,
    url: str,
    enabled_events: list[str] | None = None,
    expires_at: datetime | None = None,
) -> CreatedEndpoint:
    """A new enabled endpoint with a fresh signing secret (encrypted at rest); with
    `expires_at`, a temporary one (endpoint_lease_renew, endpoints_expired_delete)."""
    endpoint = WebhookEndpoint.objects.create(
        environment=environment,
        url=_clean_url(url, environment),
        enabled_events=_clean_events(enabled_events),
        expires_at=expires_at,
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
) -> WebhookEndpoint:
    """Changes what was given. Disabling stops deliveries at once (they check at send time);
    enabling again resumes with new events only."""
    changed: list[str] = []
    if url is not _UNSET:
        endpoint.url = _clean_url(str(url), endpoint.environment)
        changed.append("url")
    if enabled_events is not _UNSET:
        endpoint.enabled_events = _clean_events(enabled_events)  # type: ignore[arg-type]
        changed.append("enabled_events")
    if status is not _UNSET and status != endpoint.status:
        endpoint.status = str(status)
        endpoint.disabled_reason = ""
        endpoint.consecutive_failures, endpoint.failing_since = 0, None
        changed += ["status", "disabled_reason", "consecutive_failures", "failing_since"]
    if changed:
        with transaction.atomic():
            endpoint.save(update_fields=[*changed, "updated_at"])
            if endpoint.status == WebhookEndpoint.Status.DISABLED and "status" in changed:
                endpoints_stopped.send(
                    WebhookEndpoint, endpoint_ids=[endpoint.pk], reason="endpoint disabled"
                )
    return endpoint


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
    while the service runs (core.encryption.reencrypt_rows)."""
    return encryption.reencrypt_rows(EndpointSecret, "ciphertext", batch_size, as_bytes=False)
