"""Sending: one signed attempt of a claimed delivery, and the secrets that sign it.

The endpoint's own headers are decrypted at each attempt (webhooks.headers): microseconds
beside the request's milliseconds, and no plaintext kept beyond it.

Nothing here touches a delivery's row: an attempt's outcome is recorded by deliveries.recording.
"""

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from core import encryption, tracing
from deliveries import signature, sql, transport
from deliveries.claiming import Claimed
from webhooks import headers
from webhooks.models import EndpointSecret

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
SELECT endpoint_id, ciphertext, created_at, expires_at FROM {secret}
WHERE endpoint_id IN ({ids}) AND (expires_at IS NULL OR expires_at > %s)
ORDER BY endpoint_id, created_at DESC, id DESC
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    """An endpoint's signing secrets as loaded: (secret, expiry) newest first, and when the
    newest was made (which secrets a rotation since would change)."""

    secrets: tuple[tuple[str, datetime | None], ...]
    newest: datetime


def _load(endpoint_ids: set[int], now: datetime) -> dict[int, _Keys]:
    """Every endpoint's valid secrets, decrypted, newest first (EndpointSecret's `signing`)."""
    rows: dict[int, list[tuple[str, datetime | None, datetime]]] = defaultdict(list)
    if not endpoint_ids:
        return {}
    ids = sorted(endpoint_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(_SECRETS, ids=sql.marks(ids)), [*ids, sql.db_time(now)])
        for endpoint_id, ciphertext, created_at, expires_at in cursor.fetchall():
            made = cast(datetime, sql.from_db_time(created_at))  # never null
            ends = sql.from_db_time(expires_at)
            rows[endpoint_id].append((encryption.decrypt(ciphertext), ends, made))
    return {
        pk: _Keys(tuple((s, ends) for s, ends, _ in got), max(made for *_, made in got))
        for pk, got in rows.items()
    }


class SigningKeys:
    """The secrets each endpoint's deliveries are signed with in this process, as an attempt
    starts: a delivery may wait seconds in a worker after its batch loaded them (for its
    rate-limit slot, or along an ordered endpoint's chain), and a rotation meanwhile must take
    effect for it. The recorder thread asks every WEBHOOKS_WAITING_CHECK_INTERVAL which
    endpoints got a new secret (`refresh`) and loads those again; a secret whose overlap ends
    is dropped at its expiry. So a rotation takes effect within that interval, as a disable does
    (the sending threads hold no database connection to ask at each attempt)."""

    # What `refresh` looks back over: room for a rotation's commit to come after its
    # created_at, and for the two processes' clocks to differ.
    LOOK_BACK_SECONDS = 10.0
    # An endpoint not sent to for this long is forgotten (longer than any claim's lease).
    FORGET_SECONDS = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[int, _Keys] = {}
        self._used: dict[int, float] = {}  # time.monotonic() of the last load or attempt

    def load(self, endpoint_ids: set[int], now: datetime) -> dict[int, list[str]]:
        """The endpoints' secrets, newest first, loaded now (a batch's), and kept for its
        deliveries' attempts."""
        loaded = _load(endpoint_ids, now)
        used = time.monotonic()
        with self._lock:
            for pk, keys in loaded.items():
                self._used[pk] = used
                held = self._keys.get(pk)
                # A load that started before a rotation and ended after `refresh` saw it.
                if held is None or keys.newest >= held.newest:
                    self._keys[pk] = keys
        return {pk: [s for s, _ in keys.secrets] for pk, keys in loaded.items()}

    def current(self, endpoint_id: int, given: list[str]) -> list[str]:
        """What an attempt starting now signs with: the endpoint's secrets as last loaded,
        those whose overlap has ended left out; `given` (its batch's) if none are kept."""
        with self._lock:
            keys = self._keys.get(endpoint_id)
            if keys is None:
                return given
            self._used[endpoint_id] = time.monotonic()
        now = timezone.now()
        valid = [s for s, ends in keys.secrets if ends is None or ends > now]
        return valid or given

    def refresh(self) -> None:
        """Loads again the kept endpoints that got a new secret since they were loaded."""
        with self._lock:
            forget = time.monotonic() - self.FORGET_SECONDS
            self._used = {pk: at for pk, at in self._used.items() if at > forget}
            self._keys = {pk: k for pk, k in self._keys.items() if pk in self._used}
            newest = {pk: k.newest for pk, k in self._keys.items()}
        if not newest:
            return
        now = timezone.now()
        since = now - timedelta(seconds=self.LOOK_BACK_SECONDS)
        made = (
            EndpointSecret.objects.filter(created_at__gt=since)
            .values_list("endpoint_id")
            .annotate(latest=Max("created_at"))
        )
        stale = {pk for pk, latest in made if pk in newest and latest > newest[pk]}
        if stale:
            self.load(stale, now)


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
