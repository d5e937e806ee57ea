"""Sending: one signed attempt of a claimed delivery, and the secrets that sign it.

The endpoint's own headers are decrypted at each attempt (webhooks.headers): microseconds
beside the request's milliseconds, and no plaintext kept beyond it.

Nothing here touches a delivery's row: an attempt's outcome is recorded by deliveries.recording.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import encryption
from deliveries import signature, sql, transport
from deliveries.claiming import Claimed
from webhooks import headers

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


def attempt(delivery: Claimed, secrets: list[str]) -> Sent:
    """One attempt, signed with `secrets`; never raises: a failure is an outcome to record."""
    try:
        started_at = timezone.now()
        outcome = transport.post(
            delivery.url,
            delivery.body,
            {
                # The endpoint's own first: the contract's, after them, have the last word.
                **headers.for_sending(delivery.headers),
                "Content-Type": "application/json",
                # The event's id is the Standard Webhooks message id: the same on every attempt.
                **signature.signed_headers(delivery.body, secrets, delivery.event_public_id),
                "MD-Event-Id": delivery.event_public_id,
                "MD-Event-Type": delivery.event_type,
                "MD-Delivery-Id": delivery.public_id,
            },
            allow_private=_allows_private(delivery),
            timeout=float(settings.WEBHOOKS_DELIVERY_TIMEOUT),
        )
    except Exception:  # a bug here must still end the delivery's attempt, as a failed one
        logger.exception("delivery %s: attempt crashed", delivery.public_id)
        started_at = timezone.now()
        outcome = transport.Outcome(None, "internal_error", "", 0)
    return Sent(delivery=delivery, started_at=started_at, outcome=outcome)


def _allows_private(delivery: Claimed) -> bool:
    # The URL policy's rule, applied again at connect time.
    return not delivery.production and bool(settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS)
