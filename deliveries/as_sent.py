"""An attempt's request as it was sent, for people to read (the customer portal).

Headers are not stored per attempt: storing ~1 KB more per attempt would cost the hottest
table for a page that few open. They are built again by the function that built them for the
attempt (sending.request_headers), from what the signature depended on: the event's body and
id, the attempt's start (sending signs with it), and the secrets that signed then. What cannot
be rebuilt is said: a secret rotated out and purged since, or an endpoint edited since (its URL
and headers are today's).
"""

from dataclasses import dataclass
from datetime import datetime

from core import encryption
from deliveries import signature, transport
from deliveries.models import Delivery, DeliveryAttempt
from deliveries.sending import request_headers
from webhooks import headers

# What a secret signs; the rest of the signing headers (ids, timestamp) need none.
SIGNING_HEADERS = frozenset({signature.HEADER, signature.STANDARD_SIGNATURE})


@dataclass(frozen=True)
class AsSent:
    url: str
    headers: dict[str, str]  # the endpoint's sensitive values masked
    body: str
    # No secret that signed then is kept any more: the signing headers are left out.
    unsigned: bool
    # A secret was made after the attempt (a rotation): one that signed then may be gone.
    rotated_since: bool
    # The endpoint was edited after the attempt: its URL and headers shown are today's.
    edited_since: bool


def request_as_sent(delivery: Delivery, attempt: DeliveryAttempt) -> AsSent:
    """`attempt`'s request (an attempt of `delivery`, whose endpoint and event are loaded)."""
    endpoint, at = delivery.endpoint, attempt.started_at
    secrets = signing_secrets_at(delivery, at)
    body = delivery.event.body
    sent = body.encode("utf-8")
    own = headers.masked(headers.for_sending(endpoint.headers))
    built = request_headers(
        own=own,
        body=sent,
        # A placeholder keeps the one builder; its signing headers are then dropped below.
        secrets=secrets or ["-"],
        event_id=delivery.event.public_id,
        event_type=delivery.event.type,
        delivery_id=delivery.public_id,
        timestamp=int(at.timestamp()),
    )
    if not secrets:
        built = {name: value for name, value in built.items() if name not in SIGNING_HEADERS}
    return AsSent(
        url=endpoint.url,
        # The transport's own around them, as it adds them (Host is the URL's).
        headers={"User-Agent": transport.USER_AGENT, **built, "Content-Length": str(len(sent))},
        body=body,
        unsigned=not secrets,
        rotated_since=endpoint.secrets.filter(created_at__gt=at).exists(),
        edited_since=endpoint.updated_at > at,
    )


def signing_secrets_at(delivery: Delivery, at: datetime) -> list[str]:
    """The endpoint's secrets that signed at `at` and are still kept, newest first."""
    kept = delivery.endpoint.secrets.filter(created_at__lte=at).signing(at)
    return [encryption.decrypt(secret.ciphertext) for secret in kept]
