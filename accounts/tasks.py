from celery import shared_task

from accounts.portal import portal_sessions_prune


@shared_task(name="accounts.prune_portal_sessions", ignore_result=True, expires=3000)
def prune_portal_sessions_task() -> None:
    """Portal links and sessions that can no longer be used are deleted."""
    portal_sessions_prune()
