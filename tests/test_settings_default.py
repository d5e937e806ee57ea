"""Every process reads the same settings unless told otherwise: a Celery worker or beat started
with no DJANGO_SETTINGS_MODULE is production, as gunicorn's config.wsgi is, and refuses to
start without its secrets rather than run on the local settings."""

import os
import subprocess
import sys

import pytest

from tests.servers import PRODUCTION_VARIABLES, ROOT

pytestmark = pytest.mark.slow

# What a worker host has when the variable was forgotten: a PATH, and nothing of ours.
BARE = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


@pytest.mark.parametrize("process", [["worker", "--pool", "solo"], ["beat"]])
def test_celery_without_a_settings_module_refuses_to_start_without_production_secrets(process):
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", *process, "--loglevel", "INFO"],
        cwd=ROOT,
        env=BARE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "must be set in the environment for production" in result.stdout + result.stderr


def test_celery_without_a_settings_module_runs_the_production_settings():
    production = {**BARE, **PRODUCTION_VARIABLES}
    shown = subprocess.run(
        [sys.executable, "-c", "from config.celery_app import app; from django.conf import "
         "settings as s; print(s.SETTINGS_MODULE, s.DEBUG, s.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS)"],
        cwd=ROOT,
        env=production,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    assert shown.stdout.split() == ["config.settings.production", "False", "False"]
