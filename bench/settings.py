"""Production settings, made runnable on loopback with throwaway secrets and the bench database.

`config.settings.production` refuses to load without SECRET_KEY, ALLOWED_HOSTS and
SIGNING_SECRET_ENCRYPTION_KEYS (nor without DATABASE_URL and CELERY_BROKER_URL), so they get
throwaway defaults here first (a value already in the environment wins). DATABASE_URL and
CELERY_BROKER_URL are forced, never defaulted: the bench must not reach a database or broker a
developer's `.env` or shell points at.
"""

import os

from bench.config import database_config, database_url

os.environ.setdefault("SECRET_KEY", "bench-only-throwaway-secret-key-not-for-any-real-use")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
# Fernet key: url-safe base64 of the 32 bytes b"kinetic-bench-throwaway-key-0000".
os.environ.setdefault(
    "SIGNING_SECRET_ENCRYPTION_KEYS", "a2luZXRpYy1iZW5jaC10aHJvd2F3YXkta2V5LTAwMDA="
)
# wrk sends thousands of requests a second with one key: the per-key limit would answer 429.
os.environ.setdefault("API_RATE_LIMIT", "off")
os.environ["DATABASE_URL"] = database_url()
# The API workloads enqueue nothing; an in-process broker keeps the bench off any shared Redis.
# Delivery workloads will set BENCH_CELERY_BROKER_URL to a broker of their own.
os.environ["CELERY_BROKER_URL"] = os.environ.get("BENCH_CELERY_BROKER_URL") or "memory://"

from config.settings.production import *  # noqa: F403
from config.settings.production import DATABASES

_bench_db = database_config()
DATABASES["default"].update(
    {k: _bench_db[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")}
)

DEBUG = False
SECURE_SSL_REDIRECT = False  # plain http on 127.0.0.1; no proxy in front
ROOT_URLCONF = "bench.urls"
