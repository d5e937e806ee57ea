"""Production: everything secret or site-specific comes from the environment, or nothing starts."""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import (
    ALLOWED_HOSTS,
    SECRET_KEY,
    SIGNING_SECRET_ENCRYPTION_KEYS,
    env,
)

for _name, _value in (
    # The embedded defaults would give every container its own SQLite file and broker folder.
    ("DATABASE_URL", env.str("DATABASE_URL", default="")),
    ("CELERY_BROKER_URL", env.str("CELERY_BROKER_URL", default="")),
    ("SECRET_KEY", SECRET_KEY),
    ("ALLOWED_HOSTS", ALLOWED_HOSTS),
    ("SIGNING_SECRET_ENCRYPTION_KEYS", SIGNING_SECRET_ENCRYPTION_KEYS),
):
    if not _value:
        raise ImproperlyConfigured(f"{_name} must be set in the environment for production.")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# Probes and the Prometheus scrape come from inside the network, often over plain http; /metrics
# has its own bearer token (METRICS_TOKEN).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
DEBUG = False  # whatever the environment says: tracebacks never reach a client
PORTAL_COOKIE_SECURE = True  # the portal session cookie, whatever DEBUG said
