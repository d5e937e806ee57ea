"""`Idempotency-Key` on POST: one response per key and request, replayed byte for byte.

The key is claimed with an INSERT on a unique constraint, committed before the request runs, so
a concurrent duplicate sees it and gets `409 idempotency_key_in_use` instead of running twice.
The request's writes and the stored response commit in one transaction: either both happen or
neither, and a request that dies leaves a claim that expires after IDEMPOTENCY_LOCK_TIMEOUT.
Responses of 400 and above are not stored; the key is released so the client can fix and retry.
Stored responses are encrypted like signing secrets (a create's response holds one).
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.models import ApiKey
from api.errors import ApiError
from api.models import IdempotencyRecord
from core import encryption  # the one box for secrets at rest

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def header_value(request: HttpRequest) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ApiError(
            "parameter_invalid",
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            param=HEADER,
        )
    return key


def fingerprint(request: HttpRequest) -> str:
    body = request.body
    try:
        # The same JSON sent with other spacing or key order is the same request.
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (request.method or "", request.get_full_path()):
        digest.update(part.encode() + b"\0")
    digest.update(canonical)
    return digest.hexdigest()


def _claim(api_key: ApiKey, key: str, fp: str) -> tuple[IdempotencyRecord, bool]:
    """(record, True) if this request now holds the key; (record, False) if another does."""
    for _ in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    api_key=api_key, key=key, fingerprint=fp, created_at=now
                ), True
        except IntegrityError:
            pass
        record = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if record is None:
            continue  # released between our insert and our read: try again
        expired = record.created_at < now - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL)
        abandoned = record.response_status is None and record.created_at < now - timedelta(
            seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT
        )
        if not (expired or abandoned):
            return record, False
        # Take it over; the condition on created_at lets exactly one taker win.
        taken = IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).update(
            fingerprint=fp, created_at=now, response_status=None, response_body=None
        )
        if taken:
            record.fingerprint, record.created_at = fp, now
            record.response_status, record.response_body = None, None
            return record, True
    raise ApiError("idempotency_key_in_use", "This Idempotency-Key is being used; retry shortly.")


def run_idempotently(
    request: HttpRequest, api_key: ApiKey, key: str, run: Callable[[], HttpResponse]
) -> HttpResponse:
    """`run` renders the response; it is called at most once per key and request."""
    fp = fingerprint(request)
    record, claimed = _claim(api_key, key, fp)
    if not claimed:
        if record.fingerprint != fp:
            raise ApiError(
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request. "
                "Use a new key for a new request.",
                param=HEADER,
            )
        if record.response_status is None:
            raise ApiError(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                param=HEADER,
            )
        return replay(record)

    stored = False
    try:
        with transaction.atomic():
            response = run()
            if response.status_code < 400:
                IdempotencyRecord.objects.filter(pk=record.pk).update(
                    response_status=response.status_code,
                    response_body=encryption.encrypt(response.content.decode()).encode("ascii"),
                )
                stored = True
    finally:
        if not stored:
            IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()
    return response


def replay(record: IdempotencyRecord) -> HttpResponse:
    stored = bytes(record.response_body or b"")
    response = HttpResponse(
        encryption.decrypt(stored.decode("ascii")).encode() if stored else b"",
        status=record.response_status or 200,
        content_type="application/json",
    )
    response["Idempotent-Replayed"] = "true"
    return response


def records_reencrypt(*, batch_size: int = 500) -> int:
    """Re-encrypts the stored responses under the first SIGNING_SECRET_ENCRYPTION_KEYS key (a
    create's response holds a signing secret)."""
    return encryption.reencrypt_rows(IdempotencyRecord, "response_body", batch_size, as_bytes=True)


def records_prune(
    *, now: datetime | None = None, batch_size: int = 500, max_batches: int = 200
) -> int:
    """Deletes the records past IDEMPOTENCY_KEY_TTL in bounded batches; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL)
    pruned = 0
    for _ in range(max_batches):
        batch = list(
            IdempotencyRecord.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[
                :batch_size
            ]
        )
        if not batch:
            break
        pruned += IdempotencyRecord.objects.filter(id__in=batch).delete()[0]
    return pruned
