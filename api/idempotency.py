"""`Idempotency-Key` on POST: one response per key and request, replayed byte for byte.

A request holds its key with a PostgreSQL advisory lock taken in the request's own transaction
(`pg_try_advisory_xact_lock`): a concurrent duplicate finds it taken and gets `409
idempotency_key_in_use` instead of running twice. The request's writes and its stored response
commit in that transaction, and the lock goes with it: when the request ends, fails, or loses
its database, the key is free at once, with nothing left to clean up (a claim stored in a row
stayed held until a timeout whenever the database dropped before its cleanup ran). Responses
of 400 and above are not stored, so the client can fix and retry. Stored responses are
encrypted like signing secrets (a create's response holds one).

On SQLite (`bin/dev`) writing transactions queue one behind the other, which serializes two
requests with one key just as well.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.models import ApiKey
from api.errors import ApiError
from api.models import IdempotencyRecord
from core import encryption  # the one box for secrets at rest
from core.locks import try_transaction_lock

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


def lock_name(api_key_id: int, key: str) -> str:
    """The transaction lock (core.locks) that holds one API key's `key`."""
    return f"idempotency:{api_key_id}:{key}"


def run_idempotently(
    request: HttpRequest, api_key: ApiKey, key: str, run: Callable[[], HttpResponse]
) -> HttpResponse:
    """`run` renders the response; it is called at most once per key and request."""
    fp = fingerprint(request)
    with transaction.atomic():
        if not try_transaction_lock(lock_name(api_key.pk, key)):
            raise ApiError(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                param=HEADER,
            )
        now = timezone.now()
        record = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if record is not None and record.created_at < now - timedelta(
            seconds=settings.IDEMPOTENCY_KEY_TTL
        ):
            record.delete()  # expired: the key is new again
            record = None
        if record is not None:
            if record.fingerprint != fp:
                raise ApiError(
                    "idempotency_key_reused",
                    "This Idempotency-Key was already used with a different request. "
                    "Use a new key for a new request.",
                    param=HEADER,
                )
            return replay(record)
        response = run()
        if response.status_code < 400:
            IdempotencyRecord.objects.create(
                api_key=api_key,
                key=key,
                fingerprint=fp,
                created_at=now,
                response_status=response.status_code,
                response_body=encryption.encrypt(response.content.decode()).encode("ascii"),
            )
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
