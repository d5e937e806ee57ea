"""/healthz and /readyz, against servers that really stop and start."""

import pytest
import requests
from django.test import Client

from tests.servers import ROOT, Gunicorn, PrivatePostgres, PrivateRedis, wait_for


def test_healthz_answers_without_a_key():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["MD-Request-Id"].startswith("req_")


@pytest.mark.django_db
def test_readyz_when_everything_is_up():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok"},
    }


@pytest.mark.slow
def test_readyz_names_what_is_down_and_recovers():
    import subprocess
    import sys

    postgres = PrivatePostgres()
    redis = PrivateRedis()
    server = None
    try:
        database_url = postgres.create_database("kinetic")
        env = {
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": database_url,
        }
        server = Gunicorn(database_url, redis.url)

        def ready() -> requests.Response:
            return requests.get(f"{server.url}/readyz", timeout=30)

        # A database without the schema: not ready, and it says why.
        response = ready()
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("migrations:")
        assert response.json()["checks"]["broker"] == "ok"

        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                       check=True)  # fmt: skip
        assert ready().json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}

        postgres.stop()
        response = ready()
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("database unavailable")
        assert response.json()["checks"]["broker"] == "ok"
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
        postgres.start()
        wait_for(lambda: ready().status_code == 200, timeout=20)

        redis.stop()
        response = ready()
        assert response.status_code == 503
        assert response.json()["checks"] == {
            "database": "ok",
            "broker": response.json()["checks"]["broker"],
        }
        assert response.json()["checks"]["broker"].startswith("broker unavailable")
        redis.start()
        wait_for(lambda: ready().status_code == 200, timeout=20)
    finally:
        if server is not None:
            server.stop()
        redis.destroy()
        postgres.destroy()
