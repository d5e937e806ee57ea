"""The contract's "Availability": while PostgreSQL cannot be reached the API answers `503
service_unavailable` with `Retry-After`, never `500`; and a request that loses its database
never leaves its Idempotency-Key held.

A PostgreSQL cluster of the test's own under the production web server (gunicorn), stopped and
started for real; the machine's shared servers are never touched.
"""

import threading
import time
from collections.abc import Callable

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


def until_up(
    send: Callable[[], requests.Response], retrying: Callable[[], bool] = lambda: True
) -> requests.Response:
    """`send()`'s first answer other than 503 (sent again while `retrying()`), as a client
    honouring Retry-After gets it. Once the database is back, a worker process's first request
    after a restart sometimes still answers 503 (about 1 run of this module in 15, cause not
    found yet); what these tests hold is what comes after: no 500, no 409."""

    def answered() -> list[requests.Response] | None:
        # In a list: a Response is falsy when not ok, and a 409 must end the wait too.
        answer = send()
        return [answer] if answer.status_code != 503 or not retrying() else None

    return wait_for(answered, timeout=20)[0]


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert error["type"] == "api_error"
    assert error["request_id"] == response.headers["MD-Request-Id"]
    assert "Traceback" not in response.text and "psycopg" not in response.text


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
    back = wait_for(lambda: requests.get(item, headers=headers, timeout=10).ok, timeout=20)
    assert back
    again = until_up(
        lambda: requests.post(
            f"{server.url}/v1/events",
            json={"type": "packet.created"},
            headers={**headers, "Idempotency-Key": "during-the-outage"},
            timeout=10,
        )
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
        created = until_up(
            lambda: requests.post(
                f"{server.url}/v1/webhook_endpoints",
                json={"url": f"{receiver.url}/slow"},
                headers=headers,
                timeout=30,
            )
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()["webhook_endpoint_id"]
        path = f"{server.url}/v1/webhook_endpoints/{endpoint}/test"
        held = {**headers, "Idempotency-Key": "lost-with-the-database"}
        answers: list[requests.Response | requests.RequestException | AssertionError] = []

        def post() -> None:
            try:
                # A 503 before the receiver has the test event is the one after the last
                # test's restart (until_up), not this test's outage: sent again.
                answers.append(
                    until_up(
                        lambda: requests.post(path, headers=held, timeout=30),
                        retrying=lambda: not receiver.received("/slow"),
                    )
                )
            except (requests.RequestException, AssertionError) as exc:
                answers.append(exc)

        def server_log() -> str:
            return server.output()[-6000:]

        request = threading.Thread(target=post)
        request.start()
        # The request is running once the receiver has it. An answer or an error before that
        # says why not, with what the server logged (this failed twice in ~40 full runs: its
        # test event never reached the receiver within 10 s, and nothing else was known).
        wait_for(lambda: receiver.received("/slow") or answers, timeout=30, explain=server_log)
        assert receiver.received("/slow"), ([getattr(a, "text", a) for a in answers], server_log())
        postgres.stop()
        request.join(30)
        postgres.start()
        assert len(answers) == 1
        assert isinstance(answers[0], requests.Response), (answers[0], server_log())
        assert_unavailable(answers[0])
        started = time.monotonic()
        retried = until_up(lambda: requests.post(path, headers=held, timeout=30))
        assert retried.status_code == 200, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert time.monotonic() - started < 10
        replayed = until_up(lambda: requests.post(path, headers=held, timeout=30))
        assert replayed.status_code == 200, replayed.text
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.content == retried.content
    finally:
        receiver.close()
