"""The `MD-Signature` scheme, for the sender and for receivers; and the Standard Webhooks
headers every delivery carries beside it.

    MD-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<…>]

The HMAC key is the whole signing secret string (UTF-8, `whsec_` included); the message is
`"<t>.<raw request body>"`. During a secret rotation there is one `v1` per valid secret,
newest first. Receivers check that one `v1` matches one of their secrets and that `t` is within
`tolerance` seconds of now.

    webhook-id: <event id>
    webhook-timestamp: <the same t>
    webhook-signature: v1,<base64 HMAC-SHA256>[ v1,<…>]

is the Standard Webhooks form (standardwebhooks.com), which receiver libraries verify as they
are: the key is what the secret after `whsec_` decodes to as base64, the message
`"<webhook-id>.<webhook-timestamp>.<raw request body>"`.

This module imports nothing from Django, so receivers can copy it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER = "MD-Signature"
STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SCHEME = "v1"
DEFAULT_TOLERANCE = 300
MAX_TIMESTAMP_DIGITS = 12  # seconds until the year 33658: longer is not a timestamp
_HEX = frozenset("0123456789abcdef")


class SignatureVerificationError(ValueError):
    """The payload is not what the sender signed, or not recently."""


def compute(secret: str, timestamp: int, payload: bytes) -> str:
    message = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(payload: bytes, secrets: Iterable[str], timestamp: int | None = None) -> str:
    """The header value for `payload`, one `v1` per secret in the order given (newest first)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    parts = [f"t={t}"] + [f"{SCHEME}={compute(s, t, payload)}" for s in secrets]
    if len(parts) == 1:
        raise ValueError("at least one secret is needed to sign")
    return ",".join(parts)


def standard_compute(secret: str, message_id: str, timestamp: int, payload: bytes) -> str | None:
    """One `v1,<base64>` of `webhook-signature`; None for a secret that is not base64 after
    its prefix (every secret this service makes is)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return None
    message = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    payload: bytes, secrets: Iterable[str], message_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """Every signing header of a delivery, `MD-Signature` and the Standard Webhooks ones, with
    one timestamp."""
    secrets = list(secrets)
    t = int(time.time()) if timestamp is None else int(timestamp)
    headers = {
        HEADER: sign(payload, secrets, t),
        STANDARD_ID: message_id,
        STANDARD_TIMESTAMP: str(t),
    }
    standard = [standard_compute(s, message_id, t, payload) for s in secrets]
    if any(standard):
        headers[STANDARD_SIGNATURE] = " ".join(v for v in standard if v)
    return headers


def parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # Written as the signer writes it: `t=0123` is not what was signed over `123`.
            if (
                timestamp is not None
                or not value.isascii()
                or not value.isdigit()
                or len(value) > MAX_TIMESTAMP_DIGITS
                or (value.startswith("0") and value != "0")
            ):
                raise SignatureVerificationError("malformed timestamp")
            timestamp = int(value)
        elif key == SCHEME and len(value) == 64 and set(value) <= _HEX:
            signatures.append(value)  # anything else cannot match: skipped, not an error
    if timestamp is None:
        raise SignatureVerificationError("no timestamp in the header")
    if not signatures:
        raise SignatureVerificationError(f"no {SCHEME} signature in the header")
    return timestamp, signatures


def verify(
    payload: bytes | str,
    header: str,
    secrets: str | Iterable[str],
    tolerance: int | None = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Checks a delivery; returns its timestamp, or raises SignatureVerificationError.

    `payload` is the raw request body, exactly as received (not re-serialized JSON).
    `secrets` is one secret or several (keep the old one during a rotation's overlap).
    `tolerance` is in seconds either side of `now` (0: the same second); None skips the clock.
    """
    body = payload.encode("utf-8") if isinstance(payload, str) else payload
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    timestamp, signatures = parse(header)
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - timestamp) > tolerance:
        raise SignatureVerificationError("timestamp outside the tolerance window")
    for secret in candidates:
        expected = compute(secret, timestamp, body)
        if any(hmac.compare_digest(expected, sig) for sig in signatures):
            return timestamp
    raise SignatureVerificationError("no signature matches the payload and secret")
