"""Idempotency-Key: the first response replayed byte for byte, one object however often sent."""

import json
import threading
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
import requests
from django.db import connection
from django.utils import timezone

from accounts.keys import key_hash
from api import idempotency
from api.models import IdempotencyRecord
from core.locks import lock_key
from tests import factories
from tests.test_auth import assert_error
from webhooks.models import WebhookEndpoint

BODY = {"url": "https://example.com/md/webhooks", "enabled_events": ["judgment.created"]}


def post(api, body=BODY, key="7c2e-a914", path="/v1/webhook_endpoints", **kwargs):
    return api.post(path, body, headers={"Idempotency-Key": key}, **kwargs)


def test_replay_returns_the_first_response_byte_for_byte(api):
    first = post(api)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    again = post(api)
    assert again.status_code == 201
    assert again.content == first.content  # signing_secret included
    assert again["Idempotent-Replayed"] == "true"
    assert again["Content-Type"] == "application/json"
    assert again["MD-Request-Id"] != first["MD-Request-Id"]
    assert WebhookEndpoint.objects.count() == 1


def test_same_json_with_other_spacing_and_key_order_is_the_same_request(api):
    first = post(api)
    reordered = json.dumps(dict(reversed(list(BODY.items()))), indent=4)
    again = api.post(
        "/v1/webhook_endpoints", raw=reordered, headers={"Idempotency-Key": "7c2e-a914"}
    )
    assert again.content == first.content
    assert WebhookEndpoint.objects.count() == 1


def test_same_key_with_another_body_is_409_reused(api):
    post(api)
    response = post(api, {**BODY, "url": "https://example.com/other"})
    error = assert_error(response, 409, "idempotency_key_reused", param="Idempotency-Key")
    assert error["type"] == "idempotency_error"
    assert WebhookEndpoint.objects.count() == 1


def test_same_key_on_another_path_is_409_reused(api):
    created = post(api).json()
    response = post(api, {}, path=f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}")
    # Another path (and here another method would not be stored: PATCH ignores the header).
    assert response.status_code in (404, 405, 409)
    response = api.post(
        "/v1/webhook_endpoints?limit=1", BODY, headers={"Idempotency-Key": "7c2e-a914"}
    )
    assert response.status_code in (400, 409)
    assert WebhookEndpoint.objects.count() == 1


def test_keys_are_scoped_per_api_key(api):
    other_key = factories.api_client(api.environment)
    assert post(api).status_code == 201
    second = post(other_key)
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second
    assert WebhookEndpoint.objects.count() == 2


def test_failed_validation_is_not_stored(api):
    bad = post(api, {"url": "ftp://example.com"})
    assert_error(bad, 400, "parameter_invalid", param="url")
    assert not IdempotencyRecord.objects.exists()
    # The client fixes the body and retries with the same key: it runs.
    good = post(api, {"url": "https://example.com/fixed"})
    assert good.status_code == 201
    assert good.json()["url"] == "https://example.com/fixed"


def test_auth_failures_store_nothing(api):
    response = factories.ApiClient("md_test_" + "x" * 40).post(
        "/v1/webhook_endpoints", BODY, headers={"Idempotency-Key": "k1"}
    )
    assert response.status_code == 401
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey", "naïve"])
def test_invalid_keys_are_400(api, key):
    response = post(api, key=key)
    assert_error(response, 400, "parameter_invalid", param="Idempotency-Key")
    assert WebhookEndpoint.objects.count() == 0


def test_a_255_character_key_is_fine(api):
    assert post(api, key="k" * 255).status_code == 201
    assert post(api, key="k" * 255)["Idempotent-Replayed"] == "true"


def test_keys_are_forgotten_after_24_hours(api):
    first = post(api)
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    again = post(api)
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again
    assert again.json()["webhook_endpoint_id"] != first.json()["webhook_endpoint_id"]
    assert WebhookEndpoint.objects.count() == 2


@contextmanager
def key_held_elsewhere(api, key="7c2e-a914"):
    """Holds `key` as a request running on another connection would, until the block ends
    (the connection closed: as a request that lost its database)."""
    params = connection.get_connection_params()
    for option in ("cursor_factory", "prepare_threshold", "context"):
        params.pop(option, None)
    api_key = api_key_of(api)
    with psycopg.connect(**params) as other:
        locked = other.execute(
            "SELECT pg_try_advisory_xact_lock(%s)",
            [lock_key(idempotency.lock_name(api_key.pk, key))],
        ).fetchone()
        assert locked == (True,)
        yield


def api_key_of(api):
    from accounts.models import ApiKey

    return ApiKey.objects.get(key_hash=key_hash(api.raw_key))


@pytest.mark.django_db(transaction=True)
def test_a_key_held_by_a_running_request_is_409_in_use(api):
    with key_held_elsewhere(api):
        response = post(api)
        error = assert_error(response, 409, "idempotency_key_in_use", param="Idempotency-Key")
        assert "retry" in error["message"]
        # Another request with the held key waits its turn too: it is compared once the
        # first has ended.
        assert_error(post(api, {"url": "https://example.com/x"}), 409, "idempotency_key_in_use",
                     param="Idempotency-Key")  # fmt: skip
    assert WebhookEndpoint.objects.count() == 0
    first = post(api)
    assert first.status_code == 201
    assert_error(post(api, {"url": "https://example.com/x"}), 409, "idempotency_key_reused",
                 param="Idempotency-Key")  # fmt: skip
    assert WebhookEndpoint.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_key_is_free_the_moment_its_request_loses_the_database(api):
    """What held it was the request's transaction: gone with the connection, nothing to
    clean up and no timeout to wait for."""
    with key_held_elsewhere(api):
        assert post(api).status_code == 409
    response = post(api)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert post(api).content == response.content


def test_a_request_that_fails_stores_nothing_and_frees_its_key(api):
    api.create_endpoint()
    failed = post(api, path="/v1/webhook_endpoints/we_00000000000000/rotate_secret", body={})
    assert failed.status_code == 404
    assert not IdempotencyRecord.objects.exists()
    assert (
        post(api, path="/v1/webhook_endpoints/we_00000000000000/rotate_secret", body={}).status_code
        == 404
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_object(live_server):
    env = factories.environment()
    _, raw = factories.api_key(env)
    barrier = threading.Barrier(8)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        response = requests.post(
            f"{live_server.url}/v1/webhook_endpoints",
            json=BODY,
            headers={"Authorization": f"Bearer {raw}", "Idempotency-Key": "race"},
            timeout=30,
        )
        with lock:
            results.append(response)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert WebhookEndpoint.objects.filter(environment=env).count() == 1
    created = [r for r in results if r.status_code == 201]
    assert created, [r.status_code for r in results]
    assert len({r.content for r in created}) == 1  # replays are identical to the original
    for response in results:
        assert response.status_code in (201, 409)
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_key_in_use"
