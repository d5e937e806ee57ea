"""Settings of the peer's Django project: django-webhook's defaults, our bench's workload.

Everything outside comes from the orchestrator (bench/peer/run.py) through PEER_* variables,
and the ones that decide where it writes have no default: the broker is the run's private
redis-server, the database is `kinetic_bench_peer` and nothing else.
"""

import os

DB_NAME = "kinetic_bench_peer"

SECRET_KEY = "bench-peer-only-throwaway-secret-key-not-for-any-real-use"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_webhook",
    "bench.peer.site.apps.PeerSiteConfig",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_NAME,
        "HOST": os.environ["PEER_DB_HOST"],
        "PORT": os.environ["PEER_DB_PORT"],
        "USER": os.environ["PEER_DB_USER"],
        "PASSWORD": os.environ.get("PEER_DB_PASSWORD", ""),
        # Django's default (0) unless the run measures connection reuse.
        "CONN_MAX_AGE": int(os.environ.get("PEER_CONN_MAX_AGE", "0")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# As django-webhook's quickstart: whitelist the models; every other setting is its default
# (STORE_EVENTS=True: one WebhookEvent row per delivery; USE_CACHE=True).
DJANGO_WEBHOOK = {"MODELS": ["peer.Warmup", "peer.Order"]}

CELERY_BROKER_URL = os.environ["PEER_BROKER_URL"]
# Celery's Django fixup closes every database connection around each task unless this is set,
# whatever CONN_MAX_AGE says (the reuse variant sets it, as config/celery_app.py does for us).
if os.environ.get("PEER_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["PEER_DB_REUSE_MAX"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
