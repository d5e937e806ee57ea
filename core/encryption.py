"""Signing secrets at rest: Fernet tokens under `SIGNING_SECRET_ENCRYPTION_KEYS`.

The first key encrypts, every key decrypts (MultiFernet), so a new key is rolled out by putting
it first, running `rotate_encryption_key`, then dropping the old one.
"""

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db.models import Model
from django.dispatch import receiver


@lru_cache(maxsize=1)
def _box(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("SIGNING_SECRET_ENCRYPTION_KEYS is empty.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "SIGNING_SECRET_ENCRYPTION_KEYS must hold Fernet keys "
            "(url-safe base64 of 32 bytes; make one with `Fernet.generate_key()`)."
        ) from None


def box() -> MultiFernet:
    return _box(tuple(settings.SIGNING_SECRET_ENCRYPTION_KEYS))


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs: object) -> None:
    if setting == "SIGNING_SECRET_ENCRYPTION_KEYS":
        _box.cache_clear()


class Undecryptable(ImproperlyConfigured):
    """A stored token that no key in SIGNING_SECRET_ENCRYPTION_KEYS decrypts; `what` names it
    (its row, when the caller knows it), never its value."""

    def __init__(self, what: str = "A signing secret") -> None:
        super().__init__(
            f"{what} cannot be decrypted with any key in SIGNING_SECRET_ENCRYPTION_KEYS; "
            "was a key removed before rotate_encryption_key ran?"
        )


def encrypt(plaintext: str) -> str:
    return box().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return box().decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        raise Undecryptable() from None


def reencrypt(token: str) -> str:
    """The same secret under the first key (MultiFernet.rotate keeps the original timestamp)."""
    try:
        return box().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise Undecryptable() from None


def reencrypt_rows(
    model: type[Model],
    field: str,
    batch_size: int,
    *,
    as_bytes: bool = False,
    rewrite: Callable[[Any], Any] | None = None,
) -> int:
    """Rewrites `model.field` under the first key, row by row; returns how many changed.

    The field holds one token (text, or bytes `as_bytes`), or, with `rewrite`, a value that
    function re-encrypts (a JSON object holding tokens, say).

    Runs while the service runs: each row is rewritten on its own, only if its value has
    not changed since it was read, and every configured key still decrypts meanwhile.
    A value no key decrypts stops it with Undecryptable naming the row (never the value).
    """
    rewrite = rewrite or partial(_reencrypt_token, as_bytes=as_bytes)
    done = 0
    last_id = 0
    while True:
        rows = list(
            model._default_manager.filter(pk__gt=last_id, **{f"{field}__isnull": False})
            .order_by("pk")
            .values_list("pk", field)[:batch_size]
        )
        if not rows:
            return done
        for pk, stored in rows:
            try:
                new_value = rewrite(stored)
            except Undecryptable:
                raise Undecryptable(f"{model._meta.label} id {pk} ({field})") from None
            if new_value == stored:
                continue
            done += model._default_manager.filter(pk=pk, **{field: stored}).update(
                **{field: new_value}
            )
        last_id = rows[-1][0]


def _reencrypt_token(stored: Any, *, as_bytes: bool) -> Any:
    token = bytes(stored).decode("ascii") if as_bytes else stored
    if not token:
        return stored
    rotated = reencrypt(token)
    return rotated.encode("ascii") if as_bytes else rotated
