"""Verify a Kinetic webhook in Python (standard library only).

verify(raw_body, request.headers["MD-Signature"], ["whsec_…"])  # raises if invalid
"""

import hashlib
import hmac
import time


def verify(
    payload: bytes, header: str, secrets: list[str], tolerance: int = 300, now: float | None = None
) -> int:
    """Returns the signature's timestamp; raises ValueError if the webhook is not authentic."""
    items = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for key, value in items if key == "t"]
    # A v1 is 64 lower-case hex digits; anything else cannot match and is skipped.
    signatures = [v for key, v in items if key == "v1" and len(v) == 64 and v.isascii()]
    if len(timestamps) != 1 or not signatures:
        raise ValueError("malformed MD-Signature header")
    if not (timestamps[0].isascii() and timestamps[0].isdigit() and len(timestamps[0]) <= 12):
        raise ValueError("malformed MD-Signature header")
    timestamp = int(timestamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise ValueError("timestamp outside the tolerance window")
    message = timestamps[0].encode() + b"." + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return timestamp
    raise ValueError("no signature matches")
