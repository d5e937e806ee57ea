"""The signing secret format: `whsec_` and 32 random base62 characters.

32, a multiple of 4: base62 characters are base64's too, so the part after `whsec_` is valid
base64 (24 bytes), the key Standard Webhooks libraries take (deliveries.signature)."""

from core.ids import random_base62

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_RANDOM_LENGTH = 32


def generate_secret() -> str:
    return SECRET_PREFIX + random_base62(SECRET_RANDOM_LENGTH)
