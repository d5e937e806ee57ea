# `celery -A config worker` finds the app here; importing it with Django makes
# `@shared_task` bind to it and `transaction.on_commit(task.delay)` use its broker.
from config.celery_app import app as celery_app

__all__ = ("celery_app",)
