from celery import shared_task

from webhooks.services import expired_secrets_purge


@shared_task(name="webhooks.purge_expired_secrets", ignore_result=True)
def purge_expired_secrets_task() -> None:
    """Rotated-out secrets whose overlap has ended are deleted."""
    expired_secrets_purge()
