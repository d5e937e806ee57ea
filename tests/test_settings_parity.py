"""The tests' servers run what production runs. `config.settings.test` may differ from
`config.settings.production` only in the settings listed here, each for its reason: a setting
that drifts apart unnoticed makes the tests check something that is not deployed (the test
settings once dropped the database's health checks, and a restart's first request answered
503 in the tests only)."""

import json
import os
import subprocess
import sys

import pytest

from tests.servers import PRODUCTION_VARIABLES, ROOT

pytestmark = pytest.mark.slow

# Name: why the tests' value differs from production's.
DIFFERENT = {
    "ALLOWED_HOSTS": "the tests' servers answer on 127.0.0.1, at any port",
    "API_RATE_LIMIT": "tests send bursts with one key; the rate limit's tests turn it on",
    "LOGGING": "plain lines (LOG_FORMAT), read in a failing test's message",
    "LOG_FORMAT": "plain lines, read in a failing test's message",
    "PASSWORD_HASHERS": "the admin's test users log in fast",
    "STORAGES": "static files served from the apps' folders, without collectstatic",
    # Production behind its TLS proxy; the tests' servers are plain HTTP on 127.0.0.1.
    "CSRF_COOKIE_SECURE": "plain HTTP",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "plain HTTP",
    "SECURE_HSTS_PRELOAD": "plain HTTP",
    "SECURE_HSTS_SECONDS": "plain HTTP",
    "SECURE_PROXY_SSL_HEADER": "plain HTTP",
    "SECURE_REDIRECT_EXEMPT": "plain HTTP",
    "SECURE_SSL_REDIRECT": "plain HTTP",
    "SESSION_COOKIE_SECURE": "plain HTTP",
}
# Of the database's settings, only how long a connection is kept: the tests' own process
# closes it after each test request; servers that keep it say so (TEST_DATABASE_CONN_MAX_AGE).
DATABASE_DIFFERENT = {"CONN_MAX_AGE", "TEST"}

SETTINGS = "import json, django; django.setup(); from django.conf import settings as s;"
ALL_SETTINGS = (
    SETTINGS + "print(json.dumps({n: repr(getattr(s, n)) for n in dir(s) if n.isupper()}))"
)
# The default database's settings, but those it may differ in.
DATABASE = SETTINGS + (
    "d = dict(s.DATABASES['default']);"
    f"[d.pop(k, None) for k in {sorted(DATABASE_DIFFERENT)!r}];"
    "print(json.dumps(d, sort_keys=True, default=repr))"
)


def settings_of(module: str, script: str) -> dict[str, object]:
    """What `script` prints of `module`'s settings, in a process given the same environment as
    the other module's: production's variables, and the tests' names for the same servers."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": module,
        **PRODUCTION_VARIABLES,
        "TEST_DATABASE_URL": PRODUCTION_VARIABLES["DATABASE_URL"],
        "TEST_CELERY_BROKER_URL": PRODUCTION_VARIABLES["CELERY_BROKER_URL"],
    }
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout.splitlines()[-1]))


def test_the_test_settings_differ_from_production_only_where_listed():
    production = settings_of("config.settings.production", ALL_SETTINGS)
    test = settings_of("config.settings.test", ALL_SETTINGS)
    names = (production.keys() | test.keys()) - {"DATABASES", "SETTINGS_MODULE"}
    differing = {n for n in names if production.get(n) != test.get(n)}
    assert differing - DIFFERENT.keys() == set(), "differ from production, not listed"
    assert DIFFERENT.keys() - differing == set(), "listed, no longer different: drop them"


def test_the_tests_connect_to_the_database_as_production_does():
    """Health checks, pooler mode, psycopg options: all as production's, but for how long a
    connection is kept."""
    production = settings_of("config.settings.production", DATABASE)
    test = settings_of("config.settings.test", DATABASE)
    assert test == production
    assert test["CONN_HEALTH_CHECKS"] is True
