"""Writes for webhook endpoints. Views and commands call these; nothing else writes endpoints."""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import Environment
from api.errors import InvalidInput
from deliveries.services import endpoint_deliveries_cancel
from webhooks import encryption
from webhooks.catalog import normalize_filter
from webhooks.models import EndpointSecret, WebhookEndpoint
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
    *, environment: Environment, url: str, enabled_events: list[str] | None = None
) -> CreatedEndpoint:
    """A new enabled endpoint with a fresh signing secret (encrypted at rest)."""
    endpoint = WebhookEndpoint.objects.create(
        environment=environment,
        url=_clean_url(url, environment),
        enabled_events=_clean_events(enabled_events),
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
                endpoint_deliveries_cancel(endpoint_ids=[endpoint.pk], reason="endpoint disabled")
    return endpoint


@transaction.atomic
def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint disappears from the API and its secrets are destroyed, so nothing can be
    signed for it again; its delivery history stays for operators."""
    endpoint.deleted_at = timezone.now()
    endpoint.status = WebhookEndpoint.Status.DISABLED
    endpoint.save(update_fields=["deleted_at", "status", "updated_at"])
    endpoint.secrets.all().delete()
    endpoint_deliveries_cancel(endpoint_ids=[endpoint.pk], reason="endpoint deleted")
