"""The API key format: `md_test_` / `md_live_` and 40 random base62 characters."""

import hashlib

from core.ids import random_base62

KEY_RANDOM_LENGTH = 40
PREFIX_RANDOM_LENGTH = 8
KEY_PREFIXES = ("md_test_", "md_live_")


def generate_raw_key(env_prefix: str) -> str:
    return env_prefix + random_base62(KEY_RANDOM_LENGTH)


def key_hash(raw_key: str) -> str:
    # A plain digest is enough: keys carry 238 bits of randomness, there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def visible_prefix(raw_key: str) -> str:
    return raw_key[: len(KEY_PREFIXES[0]) + PREFIX_RANDOM_LENGTH]


def looks_like_key(raw: str) -> bool:
    return (
        raw.startswith(KEY_PREFIXES)
        and len(raw) >= len(KEY_PREFIXES[0]) + 32
        and raw[len(KEY_PREFIXES[0]) :].isalnum()
        and raw.isascii()
    )
