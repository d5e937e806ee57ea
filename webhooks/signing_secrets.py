"""The signing secret format: `whsec_` and 32 random base62 characters."""

from core.ids import random_base62

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_RANDOM_LENGTH = 32


def generate_secret() -> str:
    return SECRET_PREFIX + random_base62(SECRET_RANDOM_LENGTH)
