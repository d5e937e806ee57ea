"""/healthz and /readyz, against servers that really stop and start."""

import socket
import threading
import time
from typing import Any

import pytest
import requests
from django.db import connections
from django.test import Client

from tests.servers import (
    ROOT,
    Gunicorn,
    PrivatePostgres,
    PrivateRedis,
    free_port,
    manage,
    wait_for,
)


class Silent:
    """A server that takes TCP connections and never answers: a hung database or Redis, or a
    network path that drops what comes back."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self) -> None:
        while True:
            try:
                self.held.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.socket.close()
        for held in self.held:
            held.close()


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


@pytest.mark.django_db
def test_readyz_answers_503_in_time_when_the_database_hangs(broker):
    """Before the load balancer gives up, and before gunicorn kills the worker (30 s)."""
    silent = Silent()
    server = Gunicorn(f"postgres://postgres@127.0.0.1:{silent.port}/kinetic", broker.url)
    try:
        response = requests.get(f"{server.url}/readyz", timeout=20)
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("database unavailable")
        assert response.json()["checks"]["broker"] == "ok"
    finally:
        server.stop()
        silent.close()


@pytest.mark.slow
def test_readyz_answers_503_in_time_when_the_database_hangs_under_a_kept_connection(broker):
    """The same database hanging under the worker's kept connection (CONN_MAX_AGE, as
    deployed), which a check on that connection would wait on until gunicorn's timeout."""
    postgres = PrivatePostgres()
    server = None
    try:
        database_url = postgres.create_database("kinetic")
        env = {
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": database_url,
        }
        manage(env, "migrate")
        server = Gunicorn(database_url, broker.url, TEST_DATABASE_CONN_MAX_AGE="60")
        for _ in range(3):
            assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 200
        postgres.freeze()
        started = time.monotonic()
        try:
            response = requests.get(f"{server.url}/readyz", timeout=40)
        finally:
            postgres.thaw()
        assert time.monotonic() - started < 15
        assert response.status_code == 503, response.text[:300]
        assert response.json()["checks"]["database"].startswith("database unavailable")
        assert response.json()["checks"]["broker"] == "ok"
        wait_for(lambda: requests.get(f"{server.url}/readyz", timeout=30).status_code == 200)
    finally:
        if server is not None:
            server.stop()
        postgres.destroy()


@pytest.mark.django_db
def test_readyz_answers_503_in_time_when_the_broker_hangs(settings):
    silent = Silent()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.port}/0"
    answered: dict[str, Any] = {}

    def ask() -> None:
        try:
            answered["r"] = Client().get("/readyz")
        finally:
            connections.close_all()  # this thread's, before the test database goes

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        asking.join(15)
        assert "r" in answered, "/readyz gave no answer in 15 s"
        assert answered["r"].status_code == 503
        assert answered["r"].json()["checks"]["broker"].startswith("broker unavailable")
    finally:
        silent.close()
        asking.join(15)


@pytest.mark.django_db
def test_metrics_scrape_while_the_database_is_down(broker):
    """The process's counters are what an operator needs then; the queue's gauges, read from
    PostgreSQL, are left out of that scrape."""
    server = Gunicorn(f"postgres://postgres@127.0.0.1:{free_port()}/kinetic", broker.url)
    try:
        response = requests.get(f"{server.url}/metrics", timeout=20)
        assert response.status_code == 200, response.text[:300]
        assert "kinetic_http_requests_total" in response.text
        assert "kinetic_deliveries_due" not in response.text
    finally:
        server.stop()
