"""Public identifiers: one format for every object the API names."""

import secrets
import string

from ulid import ULID

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def public_id(prefix: str, length: int = 14) -> str:
    """`we_8KdQ2n4Vb1Xc7M`: a type prefix and `length` random base62 characters."""
    return f"{prefix}_{random_base62(length)}"


def request_id() -> str:
    """`req_01J…`: a ULID, so request ids sort by time in logs."""
    return f"req_{ULID()}"
