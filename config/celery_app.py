import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("kinetic")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Celery's Django fixup closes the database connection around every task unless this is set
# (celery/celery#4116): a new PostgreSQL connection per delivery batch would cost more than the
# batch. Django's CONN_MAX_AGE and CONN_HEALTH_CHECKS still retire old or broken connections.
app.conf.CELERY_DB_REUSE_MAX = 1000
