"""Bearer authentication and scopes: who may call what."""

import pytest

from accounts import scopes
from accounts.services import api_key_revoke
from tests import factories
from tests.factories import ApiClient

ENDPOINT_CALLS = [
    ("GET", "/v1/webhook_endpoints", scopes.WEBHOOK_ENDPOINTS_READ),
    ("GET", "/v1/webhook_endpoints/{id}", scopes.WEBHOOK_ENDPOINTS_READ),
    ("POST", "/v1/webhook_endpoints", scopes.WEBHOOK_ENDPOINTS_WRITE),
    ("PATCH", "/v1/webhook_endpoints/{id}", scopes.WEBHOOK_ENDPOINTS_WRITE),
    ("DELETE", "/v1/webhook_endpoints/{id}", scopes.WEBHOOK_ENDPOINTS_WRITE),
]


def assert_error(response, status, code, param=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    assert error["request_id"] == response["MD-Request-Id"]
    return error


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic bWRfdGVzdF94eHg6",
        "Token md_test_" + "a" * 40,
        "Bearer md_test_" + "a" * 40,  # well-formed, unknown
        "Bearer md_test_short",
        "Bearer sk_test_" + "a" * 40,
        "Bearer md_test_" + "é" * 40,
        "Bearer md_test_" + "a" * 5000,
    ],
)
def test_missing_malformed_or_unknown_key_is_401(sandbox, authorization):
    client = ApiClient(None)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/v1/webhook_endpoints", headers=headers)
    error = assert_error(response, 401, "unauthenticated")
    assert error["type"] == "authentication_error"
    assert response["WWW-Authenticate"].startswith("Bearer")
    if authorization and "a" * 40 in authorization:
        assert "a" * 40 not in response.content.decode()  # the key is never echoed


def test_scheme_is_case_insensitive(sandbox):
    _, raw = factories.api_key(sandbox)
    response = ApiClient(None).get(
        "/v1/webhook_endpoints", headers={"Authorization": f"bearer {raw}"}
    )
    assert response.status_code == 200


def test_revoked_key_is_401(sandbox):
    api_key, raw = factories.api_key(sandbox)
    client = ApiClient(raw)
    assert client.get("/v1/webhook_endpoints").status_code == 200
    api_key_revoke(api_key=api_key)
    assert_error(client.get("/v1/webhook_endpoints"), 401, "unauthenticated")


def test_key_records_last_use(sandbox):
    api_key, raw = factories.api_key(sandbox)
    assert api_key.last_used_at is None
    ApiClient(raw).get("/v1/webhook_endpoints")
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


@pytest.mark.parametrize(("method", "path", "needed"), ENDPOINT_CALLS)
def test_each_operation_needs_its_scope(sandbox, method, path, needed):
    owner = factories.api_client(sandbox)
    endpoint_id = owner.create_endpoint()["webhook_endpoint_id"]
    path = path.format(id=endpoint_id)
    body = {"url": "https://example.com/x"} if method == "POST" else {}
    others = [s for s in scopes.SCOPES if s != needed]
    without = factories.api_client(sandbox, scopes=others)
    error = assert_error(without.request(method, path, body), 403, "insufficient_scope")
    assert error["type"] == "permission_error"
    assert needed in error["message"]
    only = factories.api_client(sandbox, scopes=[needed])
    assert only.request(method, path, body).status_code in (200, 201)


def test_write_scope_does_not_imply_read(sandbox):
    writer = factories.api_client(sandbox, scopes=[scopes.WEBHOOK_ENDPOINTS_WRITE])
    created = writer.create_endpoint()
    assert_error(writer.get("/v1/webhook_endpoints"), 403, "insufficient_scope")
    assert_error(
        writer.get(f"/v1/webhook_endpoints/{created['webhook_endpoint_id']}"),
        403,
        "insufficient_scope",
    )


def test_event_types_need_any_valid_key(sandbox):
    client = factories.api_client(sandbox, scopes=[scopes.EVENTS_READ])
    response = client.get("/v1/event_types")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["has_more"] is False
    types = {item["type"]: item["description"] for item in body["data"]}
    assert {"judgment.created", "packet.created"} <= set(types)
    assert all(types.values())
    assert_error(ApiClient(None).get("/v1/event_types"), 401, "unauthenticated")
