"""Settings shared by every environment.

The settings read the environment here (django-environ, plus an optional `.env` at the
repository root); `local`, `test` and `production` read it through the same `env` only to change
defaults, and add the checks that belong to them. Every setting of the project's own is defined
here; an environment's module adds only Django's own settings where they differ from Django's
defaults: production's TLS and cookie settings (`SECURE_*`, `SESSION_COOKIE_SECURE`,
`CSRF_COOKIE_SECURE`) and the tests' `PASSWORD_HASHERS`.

A few variables are read outside the settings, where a library reads them itself or the code
runs before Django's settings do: `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's own, which
api.metrics and gunicorn.conf.py test as it does), the OpenTelemetry SDK's `OTEL_*`
(core.tracing), gunicorn's `PORT` and `WEB_CONCURRENCY` (gunicorn.conf.py), and
`DJANGO_SETTINGS_MODULE`.
"""

from pathlib import Path
from typing import Any

import environ
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"  # local state of a bare checkout: SQLite file, broker folder

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"))

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The domain, from the bottom up (core, below them, is no app: it has no models).
    "accounts",
    "webhooks",
    "deliveries",
    # The interfaces over it: the public API, the operators' console, the customer portal.
    "api",
    "console",
    "portal",
]

MIDDLEWARE = [
    "api.metrics.MetricsMiddleware",
    "api.middleware.RequestIdMiddleware",
    # Outside every middleware that may answer for the view (the https and trailing-slash
    # redirects), so that it sees every /portal/ response (CSP, framing, no-store).
    "portal.middleware.PortalHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "api.middleware.ApiRequestMiddleware",
    # Sessions, users and messages serve the browser's pages (the admin; the portal's flash
    # messages): API requests skip them.
    "api.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "api.middleware.BrowserAuthenticationMiddleware",
    "api.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Nothing is prepared on the server, so any pooler in transaction mode can carry the
# connections (PgBouncer tracks prepared statements only from 1.21). The ORM's cursors bind on
# the client and never prepare; this stops psycopg preparing on its own for any other cursor.
POSTGRESQL_OPTIONS: dict[str, object] = {"prepare_threshold": None}
# A server that takes the TCP connection and never answers (hung, or a dropped network path)
# fails a connection in this many seconds rather than never: /readyz answers 503 in time for
# the load balancer, and a worker's transient-error retries go on. A URL's own wins.
POSTGRESQL_OPTIONS["connect_timeout"] = 5
# A connection whose network path drops (a failover, a host gone) fails in seconds rather than
# when the kernel gives up, after about 15 minutes: once what it sent has gone unacknowledged
# for tcp_user_timeout (ms), or, while it waits for an answer, once keepalive probes go
# unanswered. A server process that hangs on a host that still answers TCP passes both
# (README: Operating).
POSTGRESQL_OPTIONS.update(
    keepalives=1,
    keepalives_idle=10,
    keepalives_interval=5,
    keepalives_count=3,
    tcp_user_timeout=10_000,
)
# Declares a pooler in transaction mode (PgBouncer's pool_mode = transaction) between the
# service and PostgreSQL: a server session then serves other clients between our transactions,
# so nothing may outlive one (no server-side cursor, no session SET; README: Behind PgBouncer).
DATABASE_TRANSACTION_POOLING = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
# No parallel plans and no JIT: every statement of the service reads a page or a batch by
# index, and a parallel plan's workers take longer to start (~10-15 ms) than such a statement
# takes to run, as JIT's compiling does (100-230 ms) once a month of day partitions lifts a
# plan's estimated cost past jit_above_cost (docs/volume.md). Set at connection start, so no
# session SET is left behind; behind a pooler, its connect_query sets them (README: Behind
# PgBouncer).
OLTP_SESSION = {"max_parallel_workers_per_gather": "0", "jit": "off"}
if not DATABASE_TRANSACTION_POOLING:
    POSTGRESQL_OPTIONS["options"] = " ".join(f"-c {k}={v}" for k, v in OLTP_SESSION.items())


def database(url: str, conn_max_age: int) -> dict[str, Any]:
    """A DATABASES entry for `url`, as every process of the service connects: the one place
    these settings are made, so the tests' servers connect as production's do."""
    config: dict[str, Any] = environ.Env.db_url_config(url)
    config["CONN_MAX_AGE"] = conn_max_age
    # A kept connection is checked at each request's first statement: one broken by a
    # database restart is replaced there instead of failing that request.
    config["CONN_HEALTH_CHECKS"] = True
    config["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_TRANSACTION_POOLING
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["OPTIONS"] = {
            **POSTGRESQL_OPTIONS,
            **config.get("OPTIONS", {}),  # the URL's own options win
        }
    elif config["ENGINE"] == "django.db.backends.sqlite3":
        # Web, worker and beat share the file: WAL lets readers run beside the writer, and
        # IMMEDIATE transactions queue writers instead of failing them with "database is
        # locked".
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


# A bare checkout runs on an SQLite file; every real deployment sets DATABASE_URL.
DATABASES = {
    "default": database(
        env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'kinetic.sqlite3'}"),
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", default=60),
    ),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- The public API -------------------------------------------------------------------------

API_VERSIONS = ("2026-06-11",)  # newest last; an absent MD-Version means the newest
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=256 * 1024)
# Django's own guard on request.body; the API middleware answers 413 before it triggers.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, 2_621_440)
IDEMPOTENCY_KEY_TTL = env.int("IDEMPOTENCY_KEY_TTL", default=24 * 3600)

# Requests per API key: "100/s", "6000/m", "off". Counted in Redis (the broker's, unless set)
# so that every web process shares one count.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="100/s")
API_RATE_LIMIT_REDIS_URL = env.str("API_RATE_LIMIT_REDIS_URL", default="")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasRequiredScope"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.negotiation.JSONOnlyNegotiation",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "api.openapi.ApiAutoSchema",
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
    "STRICT_JSON": True,
    "COMPACT_JSON": True,
    "UNICODE_JSON": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Kinetic API: Webhooks",
    "DESCRIPTION": (
        "Register HTTPS endpoints to receive signed event deliveries. Each endpoint has its own "
        "signing secret and event filter."
    ),
    "VERSION": API_VERSIONS[-1],
    # 3.1: full JSON Schema, so the document can say what the API enforces on object keys
    # (`propertyNames`: metadata keys, header names), which 3.0 cannot express.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,  # our choices have no labels beyond the values
    "ENUM_NAME_OVERRIDES": {
        "ErrorTypeEnum": "api.openapi.ERROR_TYPES",
        "ErrorCodeEnum": "api.openapi.ERROR_CODE_VALUES",
        "WebhookEndpointStatusEnum": "webhooks.models.WebhookEndpoint.Status",
        "DeliveryStatusEnum": "deliveries.models.Delivery.Status",
        "EventTypeEnum": "webhooks.catalog.EVENT_TYPE_NAMES",
        # Two kinds of `object` field: a list envelope's and a recovery's.
        "ListObjectEnum": ["list"],
        "RecoveryObjectEnum": ["recovery"],
    },
    # The reference's examples call the sandbox; "/" is whichever server serves this document.
    "SERVERS": [
        {"url": "https://sandbox.api.microndelta.com", "description": "Sandbox"},
        {"url": "/", "description": "This server"},
    ],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.openapi.postprocess_schema",
    ],
}

# --- The customer portal (/portal/) ------------------------------------------------------

# Seconds a portal session lasts once its one-time link is opened.
PORTAL_SESSION_TTL = env.int("PORTAL_SESSION_TTL", default=3600)
# Origins that may frame the portal (CSP frame-ancestors), e.g. https://dashboard.example.com;
# empty: none may.
PORTAL_FRAME_ANCESTORS = env.list("PORTAL_FRAME_ANCESTORS", default=[])
# The session cookie is HttpOnly, SameSite=Lax and limited to /portal/; Secure unless DEBUG.
PORTAL_COOKIE_SECURE = env.bool("PORTAL_COOKIE_SECURE", default=not DEBUG)

# --- Webhooks ------------------------------------------------------------------------------

# Fernet keys (urlsafe base64 of 32 bytes). The first encrypts; all of them decrypt.
SIGNING_SECRET_ENCRYPTION_KEYS = env.list("SIGNING_SECRET_ENCRYPTION_KEYS", default=[])
# Sandbox endpoints may point at private, loopback or link-local hosts only when this is on.
# Production endpoints never may, whatever this says.
WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = env.bool("WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS", default=False)
# Seconds; fractions allowed (tests and benchmarks retry within a second).
WEBHOOKS_RETRY_SCHEDULE = [
    float(s)
    for s in env.list(
        "WEBHOOKS_RETRY_SCHEDULE",
        default=["5", "300", "1800", "7200", "18000", "36000", "50400", "72000", "86400"],
    )
]
WEBHOOKS_DELIVERY_TIMEOUT = env.float("WEBHOOKS_DELIVERY_TIMEOUT", default=15.0)
WEBHOOKS_AUTO_DISABLE_AFTER = env.int("WEBHOOKS_AUTO_DISABLE_AFTER", default=5 * 24 * 3600)

# --- Celery --------------------------------------------------------------------------------

# The default broker keeps its queues in a folder, so a bare checkout delivers with no server.
# (A host name, though the folder transport ignores it: without one kombu warns on every use.)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
# Each kombu transport reads only its own options, so one set serves whatever the URL is
# (the test settings change the URL after this file).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # filesystem://
    "data_folder_in": str(VAR_DIR / "broker"),
    "data_folder_out": str(VAR_DIR / "broker"),
    "control_folder": str(VAR_DIR / "broker-control"),
    "store_processed": False,
    # redis:// and rediss://: no acknowledgement emulation. It copies every task into an
    # "unacked" hash on receipt and deletes it on ack, so that the tasks of a worker that died
    # are queued again after an hour; PostgreSQL is the record and the sweep does that within
    # WEBHOOKS_REENQUEUE_AFTER. A worker's warm shutdown still hands its prefetched tasks back.
    "ack_emulation": False,
    # redis:// and rediss://: a broker that takes the connection and never answers (hung, or a
    # dropped network path) fails a command or a connection in this many seconds rather than
    # never, so a publish gives up as it does when the broker is down. A worker's BRPOP asks the
    # server to answer within its polling timeout (1 s), well inside this one.
    "socket_timeout": 2.0,
    "socket_connect_timeout": 2.0,
}
CELERY_TASK_IGNORE_RESULT = True  # no result backend: outcomes live in PostgreSQL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing a task must not hang a web request while the broker is away: give up quickly (the
# sweep re-queues from PostgreSQL whatever was not queued).
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Workers log through LOGGING above (JSON in production, with task context), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>` when this is set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Logging -------------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "json" (one object per line, for log pipelines) or "plain" (for people).
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s %(context)s"
        },
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Every request is already answered with its id; 4xx are the client's business.
        "django.request": {"level": "ERROR"},
        # A receiver's malformed response headers: urllib3 warns with the full URL (its query
        # may hold the receiver's token) and megabytes of the receiver's bytes. The attempt
        # records what happened.
        "urllib3.connection": {"level": "ERROR"},
    },
}

# --- Delivery engine (tuning; the defaults suit production) --------------------------------

# A worker holds a claimed delivery for the attempt's timeout plus this margin; a worker that
# dies mid-attempt releases its deliveries when the lease runs out.
WEBHOOKS_CLAIM_LEASE_MARGIN = env.float("WEBHOOKS_CLAIM_LEASE_MARGIN", default=60.0)
# A due delivery whose task has not run this long after being enqueued is enqueued again (the
# broker may have lost it: Redis flushed or restarted).
WEBHOOKS_REENQUEUE_AFTER = env.float("WEBHOOKS_REENQUEUE_AFTER", default=60.0)
WEBHOOKS_SWEEP_INTERVAL = env.float("WEBHOOKS_SWEEP_INTERVAL", default=1.0)
# How often each worker process looks up the deliveries it holds waiting (for a slot, a sending
# thread, room in a line, a rate-limit turn) and drops those cancelled meanwhile, and which of
# their endpoints got a new signing secret: "disabling takes effect at once" and "0 revokes at
# once" hold for them within this long (deliveries.dispatch, deliveries.sending.SigningKeys).
WEBHOOKS_WAITING_CHECK_INTERVAL = env.float("WEBHOOKS_WAITING_CHECK_INTERVAL", default=0.25)
# A worker step that meets a transient database error (PostgreSQL restarting, out of connection
# slots, a connection lost) is tried again on a new connection, with backoff, for this long;
# then its task is retried by Celery, and the sweep remains the backstop (deliveries.transient).
WEBHOOKS_DATABASE_RETRY_SECONDS = env.float("WEBHOOKS_DATABASE_RETRY_SECONDS", default=10.0)
# Deliveries per send task, and concurrent HTTP requests per worker process.
WEBHOOKS_DELIVERY_BATCH_SIZE = env.int("WEBHOOKS_DELIVERY_BATCH_SIZE", default=50)
# After a batch's top-up found fewer due deliveries than it had room for, this process's
# batches skip the top-up for this long (0: never): at rest each fan-out's top-up scanned the
# due index for nothing (deliveries.claiming).
WEBHOOKS_TOP_UP_QUIET_SECONDS = env.float("WEBHOOKS_TOP_UP_QUIET_SECONDS", default=0.5)
WEBHOOKS_SEND_THREADS = env.int("WEBHOOKS_SEND_THREADS", default=64)
# Requests in flight to one endpoint from one worker process; more wait their turn, so a slow
# endpoint cannot take every sending thread. A rate-limited endpoint may have more, on threads
# of its own (deliveries.rates.places).
WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT = env.int("WEBHOOKS_MAX_IN_FLIGHT_PER_ENDPOINT", default=8)
# Whether worker transactions (fan-out, claims, attempt records) wait for their WAL flush. Off
# by default: PostgreSQL stays consistent, and a database crash can only forget the last
# moments of worker writes, which the sweep redoes (at worst a delivery is sent twice, as
# at-least-once allows). It takes a WAL flush off each of them, twice on the path from publish
# to receipt. Publishing, in the producer's transaction, always waits.
WEBHOOKS_WORKER_SYNCHRONOUS_COMMIT = env.bool("WEBHOOKS_WORKER_SYNCHRONOUS_COMMIT", default=False)
# Events, their deliveries and attempts are kept this long (idempotency keys: their TTL).
WEBHOOKS_RETENTION_DAYS = env.int("WEBHOOKS_RETENTION_DAYS", default=30)
WEBHOOKS_EVENT_DATA_MAX_BYTES = env.int("WEBHOOKS_EVENT_DATA_MAX_BYTES", default=64 * 1024)
# Deliveries a recovery sends again per transaction (deliveries.recovery): each step's share
# of the workers' line, before it sees whether live traffic is waiting (docs/delivery-control.md).
WEBHOOKS_RECOVERY_BATCH_SIZE = env.int("WEBHOOKS_RECOVERY_BATCH_SIZE", default=200)
# Deliveries per second a recovery makes due again (one endpoint's, beside live traffic).
WEBHOOKS_RECOVERY_RATE = env.float("WEBHOOKS_RECOVERY_RATE", default=500.0)
# The lease of `manage.py listen`'s temporary endpoint, renewed while it runs: the longest a
# killed listener's endpoint stays enabled, pointing at a dead port (plus up to a minute).
LISTEN_LEASE_SECONDS = env.int("LISTEN_LEASE_SECONDS", default=600)

# Own queues, so operators can give deliveries their own workers (`-Q deliveries`).
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in ("deliveries", "fanout", "maintenance")
]
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {
    "deliveries.deliver": {"queue": "deliveries"},
    "deliveries.fan_out": {"queue": "fanout"},
    "webhooks.purge_expired_secrets": {"queue": "maintenance"},
    "webhooks.delete_expired_endpoints": {"queue": "maintenance"},
    "deliveries.prune": {"queue": "maintenance"},
    "deliveries.recover": {"queue": "maintenance"},
    "api.prune_idempotency_records": {"queue": "maintenance"},
}
# Sending is I/O-bound: threads, not processes. One plain worker serves every queue.
CELERY_WORKER_POOL = env.str("CELERY_WORKER_POOL", default="threads")
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=16)
# Beat keeps the hourly housekeeping; the sweep for due deliveries runs in every worker
# process (deliveries.dispatch), so retries go on while beat is down.
CELERY_BEAT_SCHEDULE = {
    "purge-expired-secrets": {"task": "webhooks.purge_expired_secrets", "schedule": 3600.0},
    "delete-expired-endpoints": {"task": "webhooks.delete_expired_endpoints", "schedule": 60.0},
    "prune-old-data": {"task": "deliveries.prune", "schedule": 3600.0},
    "prune-idempotency-records": {"task": "api.prune_idempotency_records", "schedule": 3600.0},
    "prune-portal-sessions": {"task": "accounts.prune_portal_sessions", "schedule": 3600.0},
}
