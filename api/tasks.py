"""The API's own housekeeping, run by beat."""

from celery import shared_task

from api.idempotency import records_prune


@shared_task(name="api.prune_idempotency_records", ignore_result=True, expires=3000)
def prune_idempotency_records_task() -> None:
    """Deletes idempotency records past IDEMPOTENCY_KEY_TTL."""
    records_prune()
