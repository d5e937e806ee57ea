"""Public identifiers: one format for every object the API names."""

import secrets
import string

from ulid import ULID

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


# Bytes below this map evenly onto the 62 characters (4 times 62); the rest are drawn again.
_UNBIASED_BELOW = 256 - 256 % 62


def random_base62(length: int) -> str:
    """`length` characters drawn uniformly from BASE62, from the OS's CSPRNG.

    One urandom read per id rather than one per character (fan-out makes an id per delivery).
    """
    chars: list[str] = []
    while len(chars) < length:
        chars += [BASE62[b % 62] for b in secrets.token_bytes(length + 8) if b < _UNBIASED_BELOW]
    return "".join(chars[:length])


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
