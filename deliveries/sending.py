"""Sending: one signed attempt of a claimed delivery, and the secrets that sign it.

The endpoint's own headers are decrypted at each attempt (webhooks.headers): microseconds
beside the request's milliseconds, and no plaintext kept beyond it.

Nothing here touches a delivery's row: an attempt's outcome is recorded by deliveries.recording.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import encryption, tracing
from deliveries import signature, sql, transport
from deliveries.claiming import Claimed
from webhooks import headers

if TYPE_CHECKING:
    from opentelemetry.context import Context

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Sent:
    """An attempt made: the delivery, when it started, and what came of it."""

    delivery: Claimed
    started_at: datetime
    outcome: transport.Outcome


# EndpointSecret.objects.signing(): unexpired, newest first.
_SECRETS = """
SELECT endpoint_id, ciphertext FROM {secret}
WHERE endpoint_id IN ({ids}) AND (expires_at IS NULL OR expires_at > %s)
ORDER BY endpoint_id, created_at DESC, id DESC
"""


def signing_secrets(endpoint_ids: set[int], now: datetime) -> dict[int, list[str]]:
    """Every endpoint's valid secrets, decrypted, newest first (EndpointSecret's `signing`)."""
    secrets: dict[int, list[str]] = defaultdict(list)
    if not endpoint_ids:
        return secrets
    ids = sorted(endpoint_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_SECRETS, ids=sql.marks(ids)), [*ids, sql.db_time(now)])
        for endpoint_id, ciphertext in cursor.fetchall():
            secrets[endpoint_id].append(encryption.decrypt(ciphertext))
    return secrets


def attempt(delivery: Claimed, secrets: list[str], trace: "Context | None" = None) -> Sent:
    """One attempt, signed with `secrets`; never raises: a failure is an outcome to record.
    While tracing, a span of the trace `trace` (the task's that admitted it)."""
    if not tracing.enabled:
        return _attempt(delivery, secrets)
    with tracing.span("webhook.attempt", _span_attributes(delivery), trace) as span:
        sent = _attempt(delivery, secrets)
        outcome = sent.outcome
        if outcome.status_code is not None:
            span.set_attribute("http.response.status_code", outcome.status_code)
        if not outcome.succeeded:
            tracing.failed(span, outcome.error)
        return sent


def _span_attributes(delivery: Claimed) -> dict[str, str | int]:
    # Ids and where it goes; of the URL only its host and port: a path or query may hold a
    # receiver's token, and the userinfo a password.
    attributes: dict[str, str | int] = {
        "webhook.delivery_id": delivery.public_id,
        "webhook.event_id": delivery.event_public_id,
        "webhook.endpoint_pk": delivery.endpoint_id,
        "webhook.attempt": delivery.attempt_count + 1,
        "http.request.method": "POST",
    }
    try:
        url = urlsplit(delivery.url)
        attributes["server.address"] = url.hostname or ""
        attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # a URL the policy would refuse anyway: the attempt says so
        pass
    return attributes


def _attempt(delivery: Claimed, secrets: list[str]) -> Sent:
    try:
        started_at = timezone.now()
        outcome = transport.post(
            delivery.url,
            delivery.body,
            request_headers(
                own=headers.for_sending(delivery.headers),
                body=delivery.body,
                secrets=secrets,
                event_id=delivery.event_public_id,
                event_type=delivery.event_type,
                delivery_id=delivery.public_id,
                # The attempt's recorded start: the portal signs again what was sent from it.
                timestamp=int(started_at.timestamp()),
            ),
            allow_private=_allows_private(delivery),
            timeout=float(settings.WEBHOOKS_DELIVERY_TIMEOUT),
        )
    except Exception:  # a bug here must still end the delivery's attempt, as a failed one
        logger.exception("delivery %s: attempt crashed", delivery.public_id)
        started_at = timezone.now()
        outcome = transport.Outcome(None, "internal_error", "", 0)
    return Sent(delivery=delivery, started_at=started_at, outcome=outcome)


def request_headers(
    *,
    own: dict[str, str],
    body: bytes,
    secrets: list[str],
    event_id: str,
    event_type: str,
    delivery_id: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Every header of an attempt: the endpoint's `own` (as headers.for_sending gives them),
    then the contract's. Also how the portal shows a request as it was sent."""
    return {
        # The endpoint's own first: the contract's, after them, have the last word.
        **own,
        "Content-Type": "application/json",
        # The event's id is the Standard Webhooks message id: the same on every attempt.
        **signature.signed_headers(body, secrets, event_id, timestamp),
        "MD-Event-Id": event_id,
        "MD-Event-Type": event_type,
        "MD-Delivery-Id": delivery_id,
    }


def _allows_private(delivery: Claimed) -> bool:
    # The URL policy's rule, applied again at connect time.
    return not delivery.production and bool(settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS)
