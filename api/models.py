from django.db import models
from django.utils import timezone

from accounts.models import ApiKey


class IdempotencyRecord(models.Model):
    """One `Idempotency-Key` of one API key and the response to replay, written in the
    transaction of the request that made it, once it succeeded. (While that request runs, the
    key is held by a transaction lock, api.idempotency; no row says "in use".)
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # SHA-256 of method, path and body
    created_at = models.DateTimeField(default=timezone.now)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key"], name="idempotency_key_unique_per_api_key"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_prune_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({self.api_key_id})"
