"""Customer portal sessions: a one-time link made by an API key, opened once into a browser
session scoped to that key's organization and environment.

Both tokens are random and stored only as SHA-256 digests (like API keys: there is nothing to
brute-force). The link opens once, within LINK_LIFETIME; the session lasts PORTAL_SESSION_TTL
and ends at once when the key that made it is revoked.
"""

from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.keys import key_hash
from accounts.models import ApiKey, PortalSession
from core.ids import random_base62

LINK_LIFETIME = timedelta(minutes=5)
TOKEN_LENGTH = 43  # about 256 bits of base62

LinkRefusal = Literal["used", "expired", "unknown"]


def _well_formed(token: str) -> bool:
    """Whether `token` could be one we made: checked before hashing or querying anything."""
    return len(token) == TOKEN_LENGTH and token.isalnum() and token.isascii()


def portal_session_create(*, api_key: ApiKey, read_only: bool) -> tuple[PortalSession, str]:
    """A session for the key's environment and the raw link token (never stored)."""
    token = random_base62(TOKEN_LENGTH)
    session = PortalSession.objects.create(
        api_key=api_key,
        environment=api_key.environment,
        read_only=read_only,
        link_token_hash=key_hash(token),
        link_expires_at=timezone.now() + LINK_LIFETIME,
    )
    return session, token


def portal_link_open(*, token: str) -> tuple[PortalSession, str] | None:
    """Opens the link once: the session and the raw cookie token, or None for a link that is
    used, expired, unknown, or whose key is revoked. One conditional UPDATE, so two browsers
    opening one link at once cannot both get a session."""
    if not _well_formed(token):
        return None
    now = timezone.now()
    cookie_token = random_base62(TOKEN_LENGTH)
    # The key's check as EXISTS, not a join: Django writes an UPDATE filtered across a relation
    # as `id IN (subquery)`, and PostgreSQL re-checks only that after waiting for the row's
    # lock, not `opened_at IS NULL` inside it: two browsers both opened the link.
    opened = PortalSession.objects.filter(
        Exists(ApiKey.objects.filter(pk=OuterRef("api_key_id"), revoked_at__isnull=True)),
        link_token_hash=key_hash(token),
        opened_at__isnull=True,
        link_expires_at__gt=now,
    ).update(
        opened_at=now,
        session_token_hash=key_hash(cookie_token),
        expires_at=now + timedelta(seconds=settings.PORTAL_SESSION_TTL),
    )
    if not opened:
        return None
    session = PortalSession.objects.select_related("environment__organization").get(
        link_token_hash=key_hash(token)
    )
    return session, cookie_token


def portal_link_refusal(*, token: str) -> LinkRefusal:
    """Why a link did not open (after portal_link_open returned None), for its 403 page. A
    revoked key's link says "expired": it tells nothing about the key."""
    found = (
        PortalSession.objects.filter(link_token_hash=key_hash(token))
        .values("opened_at", "link_expires_at", "api_key__revoked_at")
        .first()
        if _well_formed(token)
        else None
    )
    if found is None:
        return "unknown"
    if found["opened_at"] is not None:
        return "used"
    return "expired"


def portal_session_active(*, cookie_token: str) -> PortalSession | None:
    """The open session this cookie holds, with its environment and organization; None once it
    has expired or its API key is revoked (checked on every request: no cache)."""
    if not _well_formed(cookie_token):
        return None
    return (
        PortalSession.objects.filter(
            session_token_hash=key_hash(cookie_token),
            expires_at__gt=timezone.now(),
            api_key__revoked_at__isnull=True,
        )
        .select_related("environment__organization")
        .first()
    )


def portal_sessions_prune(*, now: datetime | None = None) -> int:
    """Deletes sessions that can no longer be used: links never opened past their lifetime,
    sessions past their end. Returns how many went."""
    now = now or timezone.now()
    ended = Q(opened_at__isnull=True, link_expires_at__lt=now) | Q(expires_at__lt=now)
    return PortalSession.objects.filter(ended).delete()[0]
