"""Rate limits per API key: 429 rate_limited with Retry-After, one count across processes."""

import threading

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests import factories
from tests.servers import Gunicorn, database_url, free_port
from tests.test_auth import assert_error


@pytest.fixture
def limited(settings, broker):
    settings.API_RATE_LIMIT = "5/h"  # a window no test run straddles (counted in the broker)


def test_over_the_limit_is_429_with_retry_after(api, limited):
    statuses = [api.get("/v1/webhook_endpoints").status_code for _ in range(5)]
    assert statuses == [200] * 5
    response = api.post("/v1/webhook_endpoints", {"url": "https://example.com/x"})
    error = assert_error(response, 429, "rate_limited")
    assert error["type"] == "rate_limit_error"
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert str(retry_after) in error["message"]


def test_keys_are_counted_separately(api, limited):
    for _ in range(5):
        api.get("/v1/webhook_endpoints")
    assert api.get("/v1/webhook_endpoints").status_code == 429
    other = factories.api_client(api.environment)
    assert other.get("/v1/webhook_endpoints").status_code == 200


def test_unauthenticated_requests_are_not_counted_against_a_key(api, limited):
    anonymous = factories.ApiClient("md_test_" + "z" * 40)
    for _ in range(10):
        assert anonymous.get("/v1/webhook_endpoints").status_code == 401
    assert api.get("/v1/webhook_endpoints").status_code == 200


def test_a_broken_limiter_lets_requests_through(api, settings):
    settings.API_RATE_LIMIT = "1/h"
    settings.API_RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody there
    assert [api.get("/v1/webhook_endpoints").status_code for _ in range(3)] == [200] * 3


@pytest.mark.parametrize("rate", ["lots", "10/d", "0/s", "-1/m", "5"])
def test_a_bad_limit_fails_the_system_check(settings, rate):
    settings.API_RATE_LIMIT = rate
    with pytest.raises(SystemCheckError, match="API_RATE_LIMIT"):
        call_command("check")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_gunicorn_workers(broker):
    env = factories.environment()
    _, raw = factories.api_key(env)
    server = Gunicorn(database_url(), broker.url, WORKERS="3", API_RATE_LIMIT="20/h")
    try:
        url = f"{server.url}/v1/webhook_endpoints"
        headers = {"Authorization": f"Bearer {raw}"}
        statuses: list[int] = []
        lock = threading.Lock()

        def burst() -> None:
            with requests.Session() as session:
                for _ in range(10):
                    code = session.get(url, headers=headers, timeout=30).status_code
                    with lock:
                        statuses.append(code)

        threads = [threading.Thread(target=burst) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # 60 requests spread over 3 worker processes; one shared count lets exactly 20 through.
        assert statuses.count(200) == 20, statuses
        assert statuses.count(429) == 40
    finally:
        server.stop()
