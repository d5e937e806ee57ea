"""The test suite: real PostgreSQL and Redis on this machine, unless the environment says else.

It differs from production's settings only where tests/test_settings_parity.py lists, each for
a reason given there: the servers the tests start must run what is deployed.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASES, LOGGING, database, env

SECRET_KEY = env.str("SECRET_KEY", default="test-only-not-a-secret")
ALLOWED_HOSTS = ["*"]
DATABASES["default"] = database(
    env.str("TEST_DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/kinetic"),
    conn_max_age=env.int("TEST_DATABASE_CONN_MAX_AGE", default=0),
)
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_kinetic")}
SIGNING_SECRET_ENCRYPTION_KEYS = env.list(
    "SIGNING_SECRET_ENCRYPTION_KEYS", default=["dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OTA="]
)
CELERY_BROKER_URL = env.str("TEST_CELERY_BROKER_URL", default="redis://127.0.0.1:6379/14")
# Tests that are about rate limits turn them on; the rest send bursts with one key.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="off")
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
