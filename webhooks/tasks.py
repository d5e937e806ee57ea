from celery import shared_task

from webhooks.services import endpoints_expired_delete, expired_secrets_purge


@shared_task(name="webhooks.purge_expired_secrets", ignore_result=True)
def purge_expired_secrets_task() -> None:
    """Rotated-out secrets whose overlap has ended are deleted."""
    expired_secrets_purge()


@shared_task(name="webhooks.delete_expired_endpoints", ignore_result=True, expires=50)
def delete_expired_endpoints_task() -> None:
    """Temporary endpoints (manage.py listen) whose lease ran out are deleted."""
    endpoints_expired_delete()
