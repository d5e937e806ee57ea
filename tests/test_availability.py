"""The contract's "Availability": while PostgreSQL cannot be reached the API answers `503
service_unavailable` with `Retry-After`, never `500`; and a request that loses its database
never leaves its Idempotency-Key held.

A PostgreSQL cluster of the test's own under the production web server (gunicorn), stopped and
started for real; the machine's shared servers are never touched.
"""

import threading
import time

import psycopg
import pytest
import requests

from tests.servers import (
    Gunicorn,
    PrivatePostgres,
    PrivateRedis,
    Receiver,
    Reply,
    provision,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    postgres, redis = PrivatePostgres(), PrivateRedis()
    server = None
    try:
        database_url = postgres.create_database("kinetic")
        scopes = "webhook_endpoints:read,webhook_endpoints:write,events:write"
        key = provision(database_url, redis.url, scopes)
        # Connections kept and health-checked between requests, as deployed.
        server = Gunicorn(
            database_url,
            redis.url,
            WORKERS="2",
            TEST_DATABASE_CONN_MAX_AGE="60",
            WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS="true",
        )
        yield server, postgres, {"Authorization": f"Bearer {key}"}
    finally:
        if server is not None:
            server.stop()
        redis.destroy()
        postgres.destroy()


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert error["type"] == "api_error"
    assert error["request_id"] == response.headers["MD-Request-Id"]
    assert "Traceback" not in response.text and "psycopg" not in response.text


def connections_to(postgres: PrivatePostgres, database: str) -> int:
    """How many sessions the web workers hold on `database` (this check's own is elsewhere)."""
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_restart_between_requests_fails_no_request(stack):
    """Every worker holds a connection from before a restart that no request saw. Each is
    found broken and replaced at its next request's first statement (CONN_HEALTH_CHECKS), so
    no request after the restart fails: before the test settings kept the health check, each
    worker's first request answered 503 with the database up."""
    server, postgres, headers = stack
    endpoints = f"{server.url}/v1/webhook_endpoints"

    def served(response: requests.Response, expected: int) -> bool:
        assert response.status_code == expected, (response.status_code, response.text)
        return True

    def every_worker_connected() -> bool:
        # Sent until each of the 2 workers has served one and holds its connection.
        served(requests.get(endpoints, headers=headers, timeout=10), 200)
        return connections_to(postgres, "kinetic") >= 2

    wait_for(every_worker_connected, timeout=30)
    postgres.stop()
    postgres.start()
    assert connections_to(postgres, "kinetic") == 0
    created = requests.post(
        endpoints, json={"url": "https://example.com/restart"}, headers=headers, timeout=10
    )
    assert served(created, 201)
    item = f"{endpoints}/{created.json()['webhook_endpoint_id']}"
    wait_for(
        lambda: (
            served(requests.get(item, headers=headers, timeout=10), 200)
            and (connections_to(postgres, "kinetic") >= 2)
        ),
        timeout=30,
    )


def test_a_stopped_database_is_503_with_retry_after_never_500(stack):
    server, postgres, headers = stack
    created = requests.post(
        f"{server.url}/v1/webhook_endpoints",
        json={"url": "https://example.com/hooks"},
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    item = f"{server.url}/v1/webhook_endpoints/{created.json()['webhook_endpoint_id']}"
    for _ in range(4):  # every gunicorn worker keeps a connection from before the stop
        assert requests.get(item, headers=headers, timeout=30).status_code == 200
    postgres.stop()
    try:
        answers = [
            requests.get(item, headers=headers, timeout=10),
            requests.get(f"{server.url}/v1/webhook_endpoints", headers=headers, timeout=10),
            requests.post(
                f"{server.url}/v1/events",
                json={"type": "packet.created"},
                headers={**headers, "Idempotency-Key": "during-the-outage"},
                timeout=10,
            ),
            requests.get(item, headers=headers, timeout=10),
        ]
    finally:
        postgres.start()
    for response in answers:
        assert_unavailable(response)
    again = requests.post(
        f"{server.url}/v1/events",
        json={"type": "packet.created"},
        headers={**headers, "Idempotency-Key": "during-the-outage"},
        timeout=10,
    )
    assert again.status_code == 201, again.text
    assert "Idempotent-Replayed" not in again.headers


def test_a_request_that_loses_its_database_leaves_its_key_free(stack):
    """A test event holds its request (and its key) while a slow receiver answers; the
    database stops meanwhile. The request answers 503, and once the database is back the same
    key runs again at once: no `409 idempotency_key_in_use` until some timeout."""
    server, postgres, headers = stack
    receiver = Receiver()
    try:
        receiver.script("/slow", Reply(delay=3))
        created = requests.post(
            f"{server.url}/v1/webhook_endpoints",
            json={"url": f"{receiver.url}/slow"},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()["webhook_endpoint_id"]
        path = f"{server.url}/v1/webhook_endpoints/{endpoint}/test"
        held = {**headers, "Idempotency-Key": "lost-with-the-database"}
        answers: list[requests.Response | requests.RequestException] = []

        def post() -> None:
            try:
                answers.append(requests.post(path, headers=held, timeout=30))
            except requests.RequestException as exc:
                answers.append(exc)

        def server_log() -> str:
            return server.output()[-6000:]

        request = threading.Thread(target=post)
        request.start()
        # The request is running once the receiver has it. An answer or an error before that
        # says why not, with what the server logged.
        wait_for(lambda: receiver.received("/slow") or answers, timeout=30, explain=server_log)
        assert receiver.received("/slow"), ([getattr(a, "text", a) for a in answers], server_log())
        postgres.stop()
        request.join(30)
        postgres.start()
        assert len(answers) == 1
        assert isinstance(answers[0], requests.Response), (answers[0], server_log())
        assert_unavailable(answers[0])
        started = time.monotonic()
        retried = requests.post(path, headers=held, timeout=30)
        assert retried.status_code == 200, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert time.monotonic() - started < 10
        replayed = requests.post(path, headers=held, timeout=30)
        assert replayed.status_code == 200, replayed.text
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.content == retried.content
    finally:
        receiver.close()
