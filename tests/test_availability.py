"""The contract's "Availability": while PostgreSQL cannot be reached the API answers `503
service_unavailable` with `Retry-After`, never `500`; and a request that loses its database
never leaves its Idempotency-Key held.

A PostgreSQL cluster of the test's own under the production web server (gunicorn), stopped and
started for real; the machine's shared servers are never touched.
"""

import os
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
    manage,
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
        operator = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": database_url,
            "DJANGO_SUPERUSER_PASSWORD": OPERATOR_PASSWORD,
        }
        manage(operator, "createsuperuser", "--noinput", "--username=ops", "--email=ops@x.test")
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


OPERATOR_PASSWORD = "an operator's password"


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


def portal_browser(base: str, headers: dict[str, str]) -> requests.Session:
    """A browser holding an open portal session (the cookie copied: it is Secure, and this
    is http)."""
    link = requests.post(f"{base}/v1/portal_sessions", json={}, headers=headers, timeout=30)
    assert link.status_code == 201, link.text
    opener = requests.Session()
    opened = opener.get(link.json()["url"].replace("https://", "http://"), timeout=30,
                        allow_redirects=False)  # fmt: skip
    assert opened.status_code == 302, opened.text
    browser = requests.Session()
    browser.headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in opener.cookies)
    assert browser.get(f"{base}/portal/endpoints/", timeout=30).status_code == 200
    return browser


def admin_browser(base: str) -> requests.Session:
    """A browser with an operator signed in to the admin."""
    browser = requests.Session()
    browser.get(f"{base}/admin/login/", timeout=30)
    signed_in = browser.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "username": "ops",
            "password": OPERATOR_PASSWORD,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        timeout=30,
    )
    assert signed_in.status_code == 200 and signed_in.url == f"{base}/admin/", signed_in.url
    return browser


def test_the_portal_and_the_admin_answer_a_503_page_while_the_database_is_down(stack):
    """A browser's pages too: a page of a live portal session, a fresh portal link, and the
    admin's pages answer a 503 page with Retry-After in their own look, never Django's bare
    500 page. The portal's keeps its headers (CSP, no-store)."""
    server, postgres, headers = stack
    portal = portal_browser(server.url, headers)
    link = requests.post(
        f"{server.url}/v1/portal_sessions", json={}, headers=headers, timeout=30
    ).json()["url"]
    admin = admin_browser(server.url)
    for _ in range(4):  # every gunicorn worker keeps a connection from before the stop
        assert portal.get(f"{server.url}/portal/events/", timeout=30).status_code == 200
    postgres.stop()
    try:
        portal_pages = [
            portal.get(f"{server.url}/portal/endpoints/", timeout=10),
            portal.get(f"{server.url}/portal/events/", timeout=10),
            requests.get(link.replace("https://", "http://"), timeout=10, allow_redirects=False),
        ]
        admin_pages = [
            admin.get(f"{server.url}/admin/", timeout=10),
            admin.get(f"{server.url}/admin/webhooks/webhookendpoint/", timeout=10),
        ]
    finally:
        postgres.start()
    for response in portal_pages + admin_pages:
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.headers["MD-Request-Id"].startswith("req_")
        assert "Retry the request shortly" in response.text
        assert "Traceback" not in response.text and "psycopg" not in response.text
    for response in portal_pages:
        assert "Webhooks portal" in response.text
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    for response in admin_pages:
        assert "Kinetic operators&#x27; console" in response.text
