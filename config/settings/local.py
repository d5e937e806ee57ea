"""A developer's machine: `bin/dev` runs the whole service on these defaults."""

from config.settings.base import *  # noqa: F403
from config.settings.base import LOGGING, env

DEBUG = env.bool("DEBUG", default=True)
# Local runs only: every other environment must set its own (production refuses to start).
SECRET_KEY = env.str("SECRET_KEY", default="local-development-only-not-a-secret")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SIGNING_SECRET_ENCRYPTION_KEYS = env.list(
    "SIGNING_SECRET_ENCRYPTION_KEYS",
    # A published key: fine for a demo database, never for one with customers' secrets.
    default=["bG9jYWwtZGV2ZWxvcG1lbnQtb25seS1mZXJuZXQta2U="],
)
# Building an integration means pointing a sandbox endpoint at http://localhost.
WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = env.bool("WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS", default=True)
# The portal over plain http://localhost: its cookie follows this file's DEBUG, not base's.
PORTAL_COOKIE_SECURE = env.bool("PORTAL_COOKIE_SECURE", default=not DEBUG)

LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
# The worker's line per task and beat's per due task would bury the banner and everything
# else in bin/dev's terminal; failures are still logged, as warnings or errors.
LOGGING["loggers"].update(
    {
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
    }
)
