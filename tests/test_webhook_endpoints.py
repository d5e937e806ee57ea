"""The five operations of /v1/webhook_endpoints, as the reference shows them."""

import re
from datetime import UTC

import pytest

from core import encryption
from tests.test_auth import assert_error
from webhooks.models import EndpointSecret, WebhookEndpoint

ENDPOINT_ID = re.compile(r"^we_[0-9A-Za-z]{14}$")
SECRET = re.compile(r"^whsec_[0-9A-Za-z]{24,}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_create_returns_201_with_the_secret_once(api):
    response = api.post(
        "/v1/webhook_endpoints",
        {
            "url": "https://example.com/md/webhooks",
            "enabled_events": ["judgment.created", "packet.created"],
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == [
        "webhook_endpoint_id",
        "url",
        "enabled_events",
        "status",
        "signing_secret",
        "created_at",
        # Delivery control's, after the reference's, with their defaults.
        "description",
        "metadata",
        "headers",
        "rate_limit",
        "delivery_order",
    ]
    assert ENDPOINT_ID.match(body["webhook_endpoint_id"])
    assert SECRET.match(body["signing_secret"])
    assert TIMESTAMP.match(body["created_at"])
    assert body["url"] == "https://example.com/md/webhooks"
    assert body["enabled_events"] == ["judgment.created", "packet.created"]
    assert body["status"] == "enabled"
    assert [body["description"], body["metadata"], body["headers"]] == [None, {}, {}]
    assert [body["rate_limit"], body["delivery_order"]] == [None, "unordered"]

    endpoint_id = body["webhook_endpoint_id"]
    retrieved = api.get(f"/v1/webhook_endpoints/{endpoint_id}")
    listed = api.get("/v1/webhook_endpoints")
    updated = api.patch(f"/v1/webhook_endpoints/{endpoint_id}", {"status": "disabled"})
    for response in (retrieved, listed, updated):
        assert response.status_code == 200
        assert "signing_secret" not in response.content.decode()
        assert body["signing_secret"] not in response.content.decode()
    expected = {k: v for k, v in body.items() if k != "signing_secret"}
    assert retrieved.json() == expected
    assert listed.json() == {"object": "list", "data": [expected], "has_more": False}


def test_secret_is_encrypted_at_rest(api):
    body = api.create_endpoint()
    stored = EndpointSecret.objects.get(endpoint__public_id=body["webhook_endpoint_id"])
    assert body["signing_secret"] not in stored.ciphertext
    assert encryption.decrypt(stored.ciphertext) == body["signing_secret"]


def test_every_endpoint_gets_its_own_secret_and_id(api):
    bodies = [api.create_endpoint() for _ in range(5)]
    assert len({b["signing_secret"] for b in bodies}) == 5
    assert len({b["webhook_endpoint_id"] for b in bodies}) == 5


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (None, ["*"]),
        (["*"], ["*"]),
        (["*", "*"], ["*"]),
        (["packet.created"], ["packet.created"]),
        (
            ["packet.created", "judgment.created", "packet.created"],
            ["packet.created", "judgment.created"],
        ),
    ],
)
def test_enabled_events_are_normalized(api, sent, stored):
    fields = {} if sent is None else {"enabled_events": sent}
    assert api.create_endpoint(**fields)["enabled_events"] == stored


@pytest.mark.parametrize(
    ("body", "code", "param", "words"),
    [
        ({}, "parameter_missing", "url", "url"),
        ({"enabled_events": ["*"]}, "parameter_missing", "url", "url"),
        ({"url": None}, "parameter_invalid", "url", "null"),
        ({"url": 42}, "parameter_invalid", "url", "string"),
        ({"url": ["https://example.com"]}, "parameter_invalid", "url", "string"),
        ({"url": ""}, "parameter_invalid", "url", "blank"),
        ({"url": "example.com/hook"}, "parameter_invalid", "url", "https://"),
        ({"url": "https://example.com", "enabled_events": []}, "parameter_invalid",
         "enabled_events", "empty"),
        ({"url": "https://example.com", "enabled_events": "*"}, "parameter_invalid",
         "enabled_events", "list"),
        ({"url": "https://example.com", "enabled_events": None}, "parameter_invalid",
         "enabled_events", "null"),
        ({"url": "https://example.com", "enabled_events": ["judgment.exploded"]},
         "parameter_invalid", "enabled_events", "judgment.exploded"),
        ({"url": "https://example.com", "enabled_events": ["*", "packet.created"]},
         "parameter_invalid", "enabled_events", "*"),
        ({"url": "https://example.com", "enabled_events": [1]}, "parameter_invalid",
         "enabled_events[0]", "string"),
        ({"url": "https://example.com", "enabled_events": {"a": 1}}, "parameter_invalid",
         "enabled_events", "list"),
        ({"url": "https://example.com", "enabled_events": ["packet.created"] * 300},
         "parameter_invalid", "enabled_events", "256"),
        ({"url": "https://example.com", "status": "enabled"}, "parameter_invalid", "status",
         "changed by an update"),
        ({"url": "https://example.com", "secret": "x"}, "parameter_unknown", "secret", "secret"),
        ({"url": "https://example.com", "webhook_endpoint_id": "we_x"}, "parameter_invalid",
         "webhook_endpoint_id", "read-only"),
        ({"url": "https://example.com", "signing_secret": "whsec_x"}, "parameter_invalid",
         "signing_secret", "read-only"),
        ({"url": "https://example.com", "created_at": "2026-01-01T00:00:00Z"},
         "parameter_invalid", "created_at", "read-only"),
    ],
)  # fmt: skip
def test_create_refuses_bad_input_by_name(api, body, code, param, words):
    error = assert_error(api.post("/v1/webhook_endpoints", body), 400, code, param=param)
    assert words in error["message"]
    assert WebhookEndpoint.objects.count() == 0


def test_update_changes_only_what_is_sent(api):
    created = api.create_endpoint("https://example.com/a", enabled_events=["packet.created"])
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}"

    response = api.patch(path, {"url": "https://example.org/b"})
    assert response.status_code == 200
    assert response.json()["url"] == "https://example.org/b"
    assert response.json()["enabled_events"] == ["packet.created"]

    response = api.patch(path, {"enabled_events": ["judgment.created", "judgment.created"]})
    assert response.json()["enabled_events"] == ["judgment.created"]
    assert response.json()["url"] == "https://example.org/b"

    response = api.patch(path, {"status": "disabled"})
    assert response.json()["status"] == "disabled"
    response = api.patch(path, {"status": "enabled", "enabled_events": ["*"]})
    assert response.json() | {} == {
        "webhook_endpoint_id": created["webhook_endpoint_id"],
        "url": "https://example.org/b",
        "enabled_events": ["*"],
        "status": "enabled",
        "created_at": created["created_at"],
        "description": None,
        "metadata": {},
        "headers": {},
        "rate_limit": None,
        "delivery_order": "unordered",
    }
    assert api.patch(path, {}).json() == response.json()
    assert api.get(path).json() == response.json()


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"status": "paused"}, "parameter_invalid", "status"),
        ({"status": True}, "parameter_invalid", "status"),
        ({"status": None}, "parameter_invalid", "status"),
        ({"url": "ftp://example.com"}, "parameter_invalid", "url"),
        ({"enabled_events": []}, "parameter_invalid", "enabled_events"),
        ({"signing_secret": "whsec_mine"}, "parameter_invalid", "signing_secret"),
        ({"webhook_endpoint_id": "we_other"}, "parameter_invalid", "webhook_endpoint_id"),
        ({"description": "x" * 501}, "parameter_invalid", "description"),
        ({"colour": "x"}, "parameter_unknown", "colour"),
    ],
)
def test_update_refuses_bad_input_and_changes_nothing(api, body, code, param):
    created = api.create_endpoint("https://example.com/a")
    path = f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}"
    before = api.get(path).json()
    assert_error(api.patch(path, {"url": "https://example.org/new", **body}), 400, code, param)
    assert api.get(path).json() == before


@pytest.mark.parametrize("status", ["paused", None, True])
def test_the_update_service_refuses_a_status_it_does_not_know(api, status):
    """Every caller checks the status before calling the service (the API's serializer, the
    portal's and the console's buttons), so none can send one it does not know; the service
    refuses it too, rather than leaving it to the database's constraint (a 500)."""
    from core.errors import InvalidInput
    from webhooks.services import endpoint_update

    created = api.create_endpoint("https://example.com/a")
    endpoint = WebhookEndpoint.objects.get(public_id=created["webhook_endpoint_id"])
    with pytest.raises(InvalidInput) as refused:
        endpoint_update(endpoint=endpoint, status=status)
    assert refused.value.param == "status"
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).status == "enabled"


def test_delete_then_the_id_is_gone_everywhere(api):
    keep = api.create_endpoint("https://example.com/keep")
    gone = api.create_endpoint("https://example.com/gone")
    path = f"/v1/webhook_endpoints/{gone['webhook_endpoint_id']}"

    response = api.delete(path)
    assert response.status_code == 200
    assert response.json() == {"webhook_endpoint_id": gone["webhook_endpoint_id"], "deleted": True}

    for response in (api.get(path), api.patch(path, {"status": "enabled"}), api.delete(path)):
        error = assert_error(response, 404, "not_found", param="webhook_endpoint_id")
        assert gone["webhook_endpoint_id"] in error["message"]
    listed = api.get("/v1/webhook_endpoints").json()["data"]
    assert [e["webhook_endpoint_id"] for e in listed] == [keep["webhook_endpoint_id"]]
    # Its secret is destroyed: nothing can be signed for it again.
    assert not EndpointSecret.objects.filter(endpoint__public_id=gone["webhook_endpoint_id"])


@pytest.mark.parametrize("bad_id", ["we_doesnotexist00", "nonsense", "we_" + "x" * 500, "%00"])
def test_unknown_ids_are_404(api, bad_id):
    for response in (
        api.get(f"/v1/webhook_endpoints/{bad_id}"),
        api.patch(f"/v1/webhook_endpoints/{bad_id}", {"status": "disabled"}),
        api.delete(f"/v1/webhook_endpoints/{bad_id}"),
    ):
        assert_error(response, 404, "not_found", param="webhook_endpoint_id")


def test_production_requires_https(live_api):
    error = assert_error(
        live_api.post("/v1/webhook_endpoints", {"url": "http://example.com/hook"}),
        400,
        "parameter_invalid",
        param="url",
    )
    assert "https://" in error["message"]
    assert live_api.create_endpoint("https://example.com/hook")["url"].startswith("https://")


def test_sandbox_accepts_http(api):
    assert api.create_endpoint("http://example.com/hook")["url"] == "http://example.com/hook"


def test_created_at_is_utc_to_the_second_in_list_and_retrieve(api):
    """`YYYY-MM-DDTHH:MM:SSZ` (the contract), whatever zone the time was written in, with its
    microseconds dropped; the year has four digits even before 1000."""
    from datetime import datetime, timedelta, timezone

    from webhooks.models import WebhookEndpoint

    cases = {
        datetime(2026, 6, 12, 20, 40, 5, 999999, tzinfo=timezone(timedelta(hours=2))): (
            "2026-06-12T18:40:05Z"
        ),
        datetime(987, 1, 2, 3, 4, 5, tzinfo=UTC): "0987-01-02T03:04:05Z",
    }
    for written, shown in cases.items():
        endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
        WebhookEndpoint.objects.filter(public_id=endpoint_id).update(created_at=written)
        retrieved = api.get(f"/v1/webhook_endpoints/{endpoint_id}").json()
        assert retrieved["created_at"] == shown
        listed = {
            e["webhook_endpoint_id"]: e for e in api.get("/v1/webhook_endpoints").json()["data"]
        }
        assert listed[endpoint_id]["created_at"] == shown
