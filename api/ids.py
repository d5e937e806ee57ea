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


def is_public_id(value: str, prefix: str, length: int = 14) -> bool:
    """Whether `value` has the form `public_id(prefix, length)` makes; checked before any query
    so hostile ids (NUL bytes, megabytes) never reach the database."""
    return (
        len(value) == len(prefix) + 1 + length
        and value.startswith(f"{prefix}_")
        and all(c in BASE62 for c in value[len(prefix) + 1 :])
    )


def request_id() -> str:
    """`req_01J…`: a ULID, so request ids sort by time in logs."""
    return f"req_{ULID()}"
