"""The OpenAPI document (/v1/openapi.json) and the API reference (/v1/docs).

The document must be valid OpenAPI 3, say what the contract says, and agree with what the API
actually answers: real responses are validated against the schema the document gives them.
"""

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client, override_settings
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema

from accounts import scopes
from api.deliveries.views import (
    DeliveryViewSet,
    EndpointDeliveryViewSet,
    EndpointTestEventViewSet,
    EventViewSet,
)
from api.errors import ERROR_CODES
from api.portal_sessions.views import PortalSessionViewSet
from api.recoveries.views import RecoveryViewSet
from api.views import ApiViewSet
from api.webhooks.views import EventTypeViewSet, WebhookEndpointViewSet
from deliveries.services import event_fan_out, event_publish
from tests import factories

Schema = dict[str, Any]

COLLECTION = "/v1/webhook_endpoints"
ITEM = "/v1/webhook_endpoints/{webhook_endpoint_id}"
EVENT_TYPES = "/v1/event_types"
EVENTS = "/v1/events"
EVENT = "/v1/events/{event_id}"
ENDPOINT_DELIVERIES = "/v1/webhook_endpoints/{webhook_endpoint_id}/deliveries"
DELIVERY_RETRY = "/v1/deliveries/{delivery_id}/retry"
ROTATE = "/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret"
TEST_EVENT = "/v1/webhook_endpoints/{webhook_endpoint_id}/test"
RECOVER = "/v1/webhook_endpoints/{webhook_endpoint_id}/recover"
RECOVERY = "/v1/recoveries/{recovery_id}"
PORTAL_SESSIONS = "/v1/portal_sessions"
SANDBOX = "https://sandbox.api.microndelta.com"

# (method, path) -> (viewset, action, error statuses the operation can give)
OPERATIONS: dict[tuple[str, str], tuple[type[ApiViewSet], str, set[int]]] = {
    ("post", COLLECTION): (
        WebhookEndpointViewSet,
        "create",
        {400, 401, 403, 409, 413, 415, 429, 500, 503},
    ),
    ("get", COLLECTION): (WebhookEndpointViewSet, "list", {400, 401, 403, 429, 500, 503}),
    ("get", ITEM): (WebhookEndpointViewSet, "retrieve", {400, 401, 403, 404, 429, 500, 503}),
    ("patch", ITEM): (
        WebhookEndpointViewSet,
        "partial_update",
        {400, 401, 403, 404, 413, 415, 429, 500, 503},
    ),
    ("delete", ITEM): (
        WebhookEndpointViewSet,
        "destroy",
        {400, 401, 403, 404, 413, 415, 429, 500, 503},
    ),
    ("get", EVENT_TYPES): (EventTypeViewSet, "list", {400, 401, 429, 500, 503}),
    ("post", EVENTS): (EventViewSet, "create", {400, 401, 403, 409, 413, 415, 429, 500, 503}),
    ("get", EVENTS): (EventViewSet, "list", {400, 401, 403, 429, 500, 503}),
    ("get", EVENT): (EventViewSet, "retrieve", {400, 401, 403, 404, 429, 500, 503}),
    ("get", ENDPOINT_DELIVERIES): (
        EndpointDeliveryViewSet,
        "list",
        {400, 401, 403, 404, 429, 500, 503},
    ),
    ("post", DELIVERY_RETRY): (
        DeliveryViewSet,
        "retry",
        {400, 401, 403, 404, 409, 413, 415, 429, 500, 503},
    ),
    ("post", ROTATE): (
        WebhookEndpointViewSet,
        "rotate_secret",
        {400, 401, 403, 404, 409, 413, 415, 429, 500, 503},
    ),
    ("post", TEST_EVENT): (
        EndpointTestEventViewSet,
        "send",
        {400, 401, 403, 404, 409, 413, 415, 429, 500, 503},
    ),
    ("post", RECOVER): (
        RecoveryViewSet,
        "create",
        {400, 401, 403, 404, 409, 413, 415, 429, 500, 503},
    ),
    ("get", RECOVERY): (RecoveryViewSet, "retrieve", {400, 401, 403, 404, 429, 500, 503}),
    ("post", PORTAL_SESSIONS): (
        PortalSessionViewSet,
        "create",
        {400, 401, 403, 409, 413, 415, 429, 500, 503},
    ),
}
SUCCESS = {
    ("post", COLLECTION): 201,
    ("get", COLLECTION): 200,
    ("get", ITEM): 200,
    ("patch", ITEM): 200,
    ("delete", ITEM): 200,
    ("get", EVENT_TYPES): 200,
    ("post", EVENTS): 201,
    ("get", EVENTS): 200,
    ("get", EVENT): 200,
    ("get", ENDPOINT_DELIVERIES): 200,
    ("post", DELIVERY_RETRY): 202,
    ("post", ROTATE): 200,
    ("post", TEST_EVENT): 200,
    ("post", RECOVER): 202,
    ("get", RECOVERY): 200,
}


# --- Helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> Schema:
    response = Client().get("/v1/openapi.json")
    assert response.status_code == 200, response.content
    return response.json()


def operation(schema: Schema, method: str, path: str) -> Schema:
    return schema["paths"][path][method]


def resolve(node: Any, schema: Schema, *, strict: bool = False) -> Any:
    """`node` with every `$ref` inlined, as plain JSON Schema (2020-12, OpenAPI 3.1's dialect)
    jsonschema can check. With `strict`, objects that list their properties accept no others:
    a response field the document forgets is a failure.
    """
    if isinstance(node, list):
        return [resolve(item, schema, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return resolve(schema["components"]["schemas"][name], schema, strict=strict)
    out = {key: resolve(value, schema, strict=strict) for key, value in node.items()}
    if strict and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def check(instance: Any, node: Schema, schema: Schema, *, strict: bool = False) -> None:
    jsonschema.validate(
        instance,
        resolve(node, schema, strict=strict),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def documented_codes(response_schema: Schema) -> set[str]:
    """The error codes an error response documents, one example each."""
    examples = response_schema["content"]["application/json"]["examples"]
    return {example["value"]["error"]["code"] for example in examples.values()}


def assert_documented(schema: Schema, method: str, path: str, response: Any) -> Any:
    """The response's status, headers and body are what the document says for the operation."""
    documented = operation(schema, method, path)["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered an undocumented {status}"
    spec = documented[status]
    for name, header in spec.get("headers", {}).items():
        if header.get("required"):
            assert response.has_header(name), f"{status} lacks documented header {name}"
        if response.has_header(name):
            value: Any = response[name]
            if header["schema"].get("type") == "integer":
                value = int(value)
            check(value, header["schema"], schema)
    body = response.json()
    check(body, spec["content"]["application/json"]["schema"], schema, strict=True)
    if response.status_code >= 400:
        assert body["error"]["code"] in documented_codes(spec)
    return body


def media_examples(schema: Schema) -> Iterator[tuple[str, Any, Schema]]:
    """(where, example value, media schema) for every request and response example."""
    for path, item in schema["paths"].items():
        for method, op in item.items():
            bodies = [("request", op.get("requestBody", {}))]
            bodies += list(op["responses"].items())
            for label, body in bodies:
                for media in body.get("content", {}).values():
                    for name, example in media.get("examples", {}).items():
                        where = f"{method.upper()} {path} {label} {name}"
                        yield where, example["value"], media["schema"]


# --- The document -------------------------------------------------------------------------


def test_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_spectacular_command_has_no_warnings(tmp_path):
    # The CI check: `manage.py spectacular --validate --fail-on-warn`.
    GENERATOR_STATS.reset()
    call_command(
        "spectacular", validate=True, fail_on_warn=True, file=str(tmp_path / "openapi.yaml")
    )


def test_schema_is_public_and_wears_the_api_headers():
    # A bad key is not a 401 here: the reference is public.
    response = Client().get("/v1/openapi.json", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert re.fullmatch(r"req_[0-9A-HJKMNP-TV-Z]{26}", response["MD-Request-Id"])
    assert response["MD-Version"] == "2026-06-11"


def test_schema_and_docs_errors_use_the_envelope(schema):
    error_schema = {"$ref": "#/components/schemas/Error"}
    wrong_method = Client().post("/v1/openapi.json")
    assert wrong_method.status_code == 405
    check(wrong_method.json(), error_schema, schema, strict=True)
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.json()["error"]["request_id"] == wrong_method["MD-Request-Id"]
    bad_version = Client().get("/v1/docs", headers={"MD-Version": "1999-01-01"})
    assert bad_version.status_code == 400
    assert bad_version.json()["error"]["code"] == "invalid_version"


def test_every_operation_is_documented_and_nothing_else(schema):
    documented = {
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head", "options"}
    }
    assert documented == set(OPERATIONS)
    # The schema and docs views are not part of the API they describe.
    assert not any(path.startswith(("/v1/openapi", "/v1/docs")) for path in schema["paths"])
    ids = [operation(schema, m, p)["operationId"] for m, p in OPERATIONS]
    assert len(set(ids)) == len(ids)


def test_servers(schema):
    urls = [server["url"] for server in schema["servers"]]
    assert SANDBOX in urls
    assert "/" in urls


def test_bearer_security_and_scopes(schema):
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert "md_test_" in scheme["description"]
    assert "md_live_" in scheme["description"]
    for (method, path), (viewset, action, _) in OPERATIONS.items():
        op = operation(schema, method, path)
        assert op["security"] == [{"ApiKeyAuth": []}], (method, path)
        # The documented scope is the one the view enforces.
        scope = viewset.required_scopes[action]
        assert op["x-scopes"] == ([scope] if scope else []), (method, path)
        if scope:
            assert f"`{scope}`" in op["description"]


def test_scopes_match_the_reference(schema):
    assert operation(schema, "post", COLLECTION)["x-scopes"] == [scopes.WEBHOOK_ENDPOINTS_WRITE]
    assert operation(schema, "get", COLLECTION)["x-scopes"] == [scopes.WEBHOOK_ENDPOINTS_READ]
    assert operation(schema, "get", ITEM)["x-scopes"] == [scopes.WEBHOOK_ENDPOINTS_READ]
    assert operation(schema, "patch", ITEM)["x-scopes"] == [scopes.WEBHOOK_ENDPOINTS_WRITE]
    assert operation(schema, "delete", ITEM)["x-scopes"] == [scopes.WEBHOOK_ENDPOINTS_WRITE]


def test_request_bodies_are_strict(schema):
    create = resolve(
        operation(schema, "post", COLLECTION)["requestBody"]["content"]["application/json"][
            "schema"
        ],
        schema,
    )
    delivery_control = {"description", "metadata", "headers", "rate_limit", "delivery_order"}
    assert set(create["properties"]) == {"url", "enabled_events"} | delivery_control
    assert create["required"] == ["url"]
    assert create["additionalProperties"] is False
    assert create["properties"]["enabled_events"]["type"] == "array"

    update = resolve(
        operation(schema, "patch", ITEM)["requestBody"]["content"]["application/json"]["schema"],
        schema,
    )
    assert set(update["properties"]) == {"url", "enabled_events", "status"} | delivery_control
    assert not update.get("required")
    assert update["additionalProperties"] is False
    assert update["properties"]["status"]["enum"] == ["enabled", "disabled"]

    for method, path in [("get", COLLECTION), ("get", ITEM), ("delete", ITEM)]:
        assert "requestBody" not in operation(schema, method, path)


def test_delivery_control_fields_say_what_they_take(schema):
    for method, path in (("post", COLLECTION), ("patch", ITEM)):
        body = operation(schema, method, path)["requestBody"]["content"]["application/json"]
        ref = body["schema"]["$ref"].removeprefix("#/components/schemas/")
        fields = schema["components"]["schemas"][ref]["properties"]
        enum = resolve(fields["delivery_order"], schema)["allOf"][0]["enum"]
        assert enum == ["unordered", "ordered"]
        rate_limit = fields["rate_limit"]
        assert (rate_limit["minimum"], rate_limit["maximum"], rate_limit["type"]) == (
            1,
            10000,
            ["integer", "null"],
        )
        description = fields["description"]
        assert (description["maxLength"], description["type"]) == (500, ["string", "null"])
        assert "oneOf" not in description  # "" and null are both accepted
        assert fields["metadata"]["type"] == ["object", "null"]  # null removes every key
        assert fields["metadata"]["propertyNames"]["maxLength"] == 40
        assert fields["metadata"]["additionalProperties"]["maxLength"] == 500
        assert fields["headers"]["type"] == "object"
        header_value = fields["headers"]["additionalProperties"]
        assert header_value["type"] == ["string", "null"]  # null removes one
        assert (header_value["maxLength"], header_value["pattern"]) == (1000, "^[ -~]*$")
        for name in ("`Host`", "`TE`", "`User-Agent`", "`Proxy-*`", "`MD-*`", "`webhook-*`"):
            assert name in fields["headers"]["description"], name


def response_schema(schema: Schema, method: str, path: str, status: int) -> Schema:
    spec = operation(schema, method, path)["responses"][str(status)]
    return resolve(spec["content"]["application/json"]["schema"], schema)


def test_success_responses_have_the_reference_shapes(schema):
    endpoint_fields = {"webhook_endpoint_id", "url", "enabled_events", "status", "created_at"}
    endpoint_fields |= {"description", "metadata", "headers", "rate_limit", "delivery_order"}
    created = response_schema(schema, "post", COLLECTION, 201)
    assert set(created["properties"]) == endpoint_fields | {"signing_secret"}
    assert set(created["required"]) == endpoint_fields | {"signing_secret"}
    for method in ("get", "patch"):
        shown = response_schema(schema, method, ITEM, 200)
        assert set(shown["properties"]) == endpoint_fields
        assert set(shown["required"]) == endpoint_fields
    deleted = response_schema(schema, "delete", ITEM, 200)
    assert set(deleted["properties"]) == {"webhook_endpoint_id", "deleted"}
    assert deleted["properties"]["deleted"]["type"] == "boolean"
    for path in (COLLECTION, EVENT_TYPES):
        page = response_schema(schema, "get", path, 200)
        assert set(page["required"]) == {"object", "data", "has_more"}
        assert page["properties"]["object"]["enum"] == ["list"]
        assert page["properties"]["data"]["type"] == "array"
        assert page["properties"]["has_more"]["type"] == "boolean"
    listed = response_schema(schema, "get", COLLECTION, 200)["properties"]["data"]["items"]
    assert set(listed["properties"]) == endpoint_fields  # no signing_secret after creation
    shown = listed["properties"]
    assert shown["headers"]["maxProperties"] == 20
    assert shown["metadata"]["maxProperties"] == 50
    assert shown["metadata"]["additionalProperties"]["maxLength"] == 500
    # No other success status is documented (e.g. DRF's default 204 for DELETE).
    for key, status in SUCCESS.items():
        statuses = {int(s) for s in operation(schema, *key)["responses"] if s.startswith("2")}
        assert statuses == {status}, key


def test_list_and_path_parameters(schema):
    for path in (COLLECTION, EVENTS, ENDPOINT_DELIVERIES):
        params = {p["name"]: p for p in operation(schema, "get", path)["parameters"]}
        assert params["limit"]["in"] == "query"
        assert params["limit"]["schema"] == {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": 20,
        }
        # The cursors: one object, each property a query parameter of its own, at most one.
        cursor = params["cursor"]
        assert (cursor["in"], cursor["style"], cursor["explode"]) == ("query", "form", True)
        assert set(cursor["schema"]["properties"]) == {"starting_after", "ending_before"}
        assert cursor["schema"]["maxProperties"] == 1
        assert cursor["schema"]["additionalProperties"] is False
    for method in ("get", "patch", "delete"):
        params = {p["name"]: p for p in operation(schema, method, ITEM)["parameters"]}
        path_param = params["webhook_endpoint_id"]
        assert path_param["in"] == "path"
        assert path_param["required"] is True
        assert path_param["schema"]["type"] == "string"


def test_error_envelope_component(schema):
    envelope = resolve({"$ref": "#/components/schemas/Error"}, schema)
    assert envelope["required"] == ["error"]
    detail = envelope["properties"]["error"]
    assert set(detail["required"]) == {"type", "code", "message", "param", "request_id"}
    code = resolve(detail["properties"]["code"], schema)
    assert set(code["allOf"][0]["enum"]) == set(ERROR_CODES)
    # `param` may be null.
    jsonschema.validate(None, detail["properties"]["param"])


def test_every_operation_documents_its_errors_with_the_envelope(schema):
    for (method, path), (_, _, statuses) in OPERATIONS.items():
        responses = operation(schema, method, path)["responses"]
        errors = {int(status) for status in responses if int(status) >= 400}
        assert errors == statuses, (method, path)
        for status in errors:
            spec = responses[str(status)]
            media = spec["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Error"}
            for code in documented_codes(spec):
                assert ERROR_CODES[code][0] == status, (method, path, code)
    assert documented_codes(operation(schema, "post", COLLECTION)["responses"]["409"]) == {
        "idempotency_key_reused",
        "idempotency_key_in_use",
    }
    assert "parameter_missing" in documented_codes(
        operation(schema, "post", COLLECTION)["responses"]["400"]
    )
    # 405 belongs to no operation (each allows its own method); the description names it.
    assert "`method_not_allowed`" in schema["info"]["description"]


def test_request_and_response_headers(schema):
    for method, path in OPERATIONS:
        op = operation(schema, method, path)
        headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
        version = headers["MD-Version"]
        assert not version.get("required")
        assert version["schema"]["enum"] == ["2026-06-11"]
        if method == "post":
            key = headers["Idempotency-Key"]
            assert key["schema"]["maxLength"] == 255
            assert not key.get("required")
        else:
            assert "Idempotency-Key" not in headers
        for status, spec in op["responses"].items():
            assert {"MD-Request-Id", "MD-Version"} <= set(spec["headers"]), (method, path)
            replayed = "Idempotent-Replayed" in spec["headers"]
            assert replayed == (method == "post" and status.startswith("2")), (path, status)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_examples_match_their_schemas(schema):
    seen = 0
    for where, value, media_schema in media_examples(schema):
        try:
            check(value, media_schema, schema, strict=True)
        except jsonschema.ValidationError as error:
            pytest.fail(f"{where}: {error.message}")
        seen += 1
    assert seen > 20


# --- The document against the API ---------------------------------------------------------


def test_success_responses_match_the_schema(schema, api):
    created = assert_documented(
        schema, "post", COLLECTION, api.post(COLLECTION, {"url": "https://example.com/hook"})
    )
    assert created["signing_secret"].startswith("whsec_")
    item = f"{COLLECTION}/{created['webhook_endpoint_id']}"

    first = api.post(
        COLLECTION, {"url": "https://example.com/b"}, headers={"Idempotency-Key": "k-1"}
    )
    replay = api.post(
        COLLECTION, {"url": "https://example.com/b"}, headers={"Idempotency-Key": "k-1"}
    )
    assert_documented(schema, "post", COLLECTION, first)
    assert replay["Idempotent-Replayed"] == "true"
    assert_documented(schema, "post", COLLECTION, replay)

    assert_documented(schema, "get", ITEM, api.get(item))
    updated = assert_documented(schema, "patch", ITEM, api.patch(item, {"status": "disabled"}))
    assert updated["status"] == "disabled"
    page = assert_documented(schema, "get", COLLECTION, api.get(f"{COLLECTION}?limit=1"))
    assert page["has_more"] is True
    assert_documented(schema, "get", EVENT_TYPES, api.get(EVENT_TYPES))
    deleted = assert_documented(schema, "delete", ITEM, api.delete(item))
    assert deleted == {"webhook_endpoint_id": created["webhook_endpoint_id"], "deleted": True}


def test_delivery_control_responses_match_the_schema(schema, api):
    fields = {
        "description": "d" * 500,
        "metadata": {f"k{i}": "v" * 500 for i in range(50)},
        "headers": {**{f"X-{i:02d}": " ~" * 10 for i in range(19)}, "Authorization": "Bearer x"},
        "rate_limit": 10000,
        "delivery_order": "ordered",
    }
    created = assert_documented(
        schema,
        "post",
        COLLECTION,
        api.post(COLLECTION, {"url": "https://example.com/dc", **fields}),
    )
    assert created["headers"]["Authorization"] == "********"
    item = f"{COLLECTION}/{created['webhook_endpoint_id']}"
    assert_documented(schema, "get", ITEM, api.get(item))
    assert_documented(schema, "get", COLLECTION, api.get(COLLECTION))
    cleared: dict[str, Any] = {"description": None, "metadata": None, "rate_limit": None}
    updated = assert_documented(schema, "patch", ITEM, api.patch(item, cleared))
    assert (updated["description"], updated["metadata"], updated["rate_limit"]) == (None, {}, None)
    for method, path, response in (
        (
            "post",
            COLLECTION,
            api.post(COLLECTION, {"url": "https://example.com/e", "headers": {"Host": "x"}}),
        ),
        ("patch", ITEM, api.patch(item, {"metadata": {"k": 1}})),
        ("patch", ITEM, api.patch(item, {"rate_limit": 0})),
    ):
        assert response.status_code == 400, response.content
        assert_documented(schema, method, path, response)


# (body field, value, accepted): each on the boundary of what the API takes, the five
# findings among them. The schema must say what the API answers, both ways.
HOST_253 = ".".join(["a" * 63] * 3 + ["b" * 61])
AGREEMENT: list[tuple[str, Any, bool]] = [
    ("url", "https://example.com/hook", True),
    ("url", "HTTPS://Example.COM:65535/a/b?c=d&e=%20", True),
    ("url", "http://ex_ample.com.", True),  # a sandbox key
    ("url", f"https://{HOST_253}/", True),
    ("url", f"https://{HOST_253}b/", False),
    ("url", "https://example.com/" + "a" * 2028, True),  # 2048 characters
    ("url", "https://example.com/" + "a" * 2029, False),
    ("url", "\U0004c408", False),  # the issue's: a url with no form at all
    ("url", "", False),
    ("url", "ftp://example.com", False),
    ("url", "https://user:pw@example.com", False),
    ("url", "https://example.com/#top", False),
    ("url", "https://example.com:0/", False),
    ("url", "https://example.com:65536/", False),
    ("url", "https://-example.com/", False),
    ("url", "https://example.123/", False),
    ("url", "https://example.com/a b", False),
    ("enabled_events", ["*"], True),
    ("enabled_events", ["*", "*"], True),
    ("enabled_events", ["judgment.created", "judgment.created"], True),
    ("enabled_events", ["webhook_endpoint.disabled", "delivery.exhausted"], True),
    ("enabled_events", [], False),  # the issue's
    ("enabled_events", ["*", "judgment.created"], False),
    ("enabled_events", ["ping"], False),
    ("enabled_events", ["judgment.exploded"], False),
    ("enabled_events", None, False),
    ("description", "", True),
    ("description", None, True),
    ("description", "d" * 500, True),
    ("description", "d" * 501, False),
    ("description", "a\x00b", False),
    ("metadata", None, True),
    ("metadata", {"k": ""}, True),
    ("metadata", {"k" * 40: "v" * 500}, True),
    ("metadata", {"": "v"}, False),
    ("metadata", {"k" * 41: "v"}, False),
    ("metadata", {"k": "a\x00"}, False),
    ("metadata", {"k": 1}, False),
    ("headers", {"X-Tenant": "a b ~", "X-Gone": None}, True),
    ("headers", {"x-md": "1", "Proxy": "1", "Hosts": "1"}, True),
    ("headers", {"hOsT": "x"}, False),
    ("headers", {"md-x": "x"}, False),
    ("headers", {"Webhook-Id": "x"}, False),
    ("headers", {"X Tenant": "x"}, False),
    ("headers", {"X-Tenant": "a\nb"}, False),
    ("headers", None, False),
    ("rate_limit", 10000, True),
    ("rate_limit", None, True),
    ("rate_limit", 0, False),
    ("rate_limit", "5", False),
]


def request_schema(schema: Schema, method: str, path: str) -> Schema:
    body = operation(schema, method, path)["requestBody"]["content"]["application/json"]
    return resolve(body["schema"], schema)


def is_valid(instance: Any, node: Schema) -> bool:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(node, format_checker=checker).is_valid(instance)


@pytest.mark.parametrize(("field", "value", "accepted"), AGREEMENT)
def test_the_schema_and_the_api_agree_on_endpoint_fields(schema, api, field, value, accepted):
    body = {"url": "https://example.com/hook", field: value}
    assert is_valid(body, request_schema(schema, "post", COLLECTION)) is accepted
    response = api.post(COLLECTION, body)
    assert (response.status_code == 201) is accepted, response.content


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"type": "judgment.created", "data": {"a": [1, "\x00"]}}, True),
        ({"type": "judgment.created"}, True),
        ({"type": "judgment.created", "data": None}, False),  # the issue's
        ({"type": "judgment.created", "data": []}, False),
        ({"type": "ping"}, False),
        ({"type": "delivery.exhausted"}, False),
    ],
)
def test_the_schema_and_the_api_agree_on_events(schema, api, body, accepted):
    assert is_valid(body, request_schema(schema, "post", EVENTS)) is accepted
    assert (api.post(EVENTS, body).status_code == 201) is accepted


@pytest.mark.parametrize(
    ("cursors", "accepted"),
    [
        ({}, True),
        ({"starting_after": "OWN"}, True),
        ({"ending_before": "OWN"}, True),
        ({"starting_after": "OWN", "ending_before": "OWN"}, False),
        ({"starting_after": "", "ending_before": ""}, False),  # the issue's
        ({"starting_after": ""}, False),
    ],
)
def test_the_schema_and_the_api_agree_on_cursors(schema, api, cursors, accepted):
    own = api.create_endpoint()["webhook_endpoint_id"]
    query = {name: own if value == "OWN" else value for name, value in cursors.items()}
    params = {p["name"]: p for p in operation(schema, "get", COLLECTION)["parameters"]}
    assert is_valid(query, params["cursor"]["schema"]) is accepted
    assert (api.get(f"{COLLECTION}?{urlencode(query)}").status_code == 200) is accepted


def test_what_no_schema_can_say_is_documented(schema):
    """A state the request cannot show (the issue's retry of a disabled endpoint's delivery)
    is a documented 400 of the operation, naming the parameter."""
    refused = {
        (path, example["value"]["error"]["param"])
        for (method, path) in OPERATIONS
        for name, example in operation(schema, method, path)["responses"]["400"]["content"][
            "application/json"
        ]["examples"].items()
        if name.startswith("Refused")
    }
    assert (DELIVERY_RETRY, "delivery_id") in refused
    assert (TEST_EVENT, "webhook_endpoint_id") in refused
    assert {(RECOVER, None), (RECOVER, "since"), (RECOVER, "until")} <= refused
    assert {(COLLECTION, "starting_after"), (COLLECTION, "ending_before")} <= refused
    assert {(COLLECTION, "url"), (COLLECTION, "headers"), (ITEM, "metadata")} <= refused
    retry_400 = operation(schema, "post", DELIVERY_RETRY)["responses"]["400"]["description"]
    assert "endpoint is disabled or deleted (`param`: `delivery_id`)" in retry_400
    assert "`5`, not `5.0`" in schema["info"]["description"]


def test_error_responses_match_the_schema(schema, api, sandbox):
    created = api.create_endpoint()
    item = f"{COLLECTION}/{created['webhook_endpoint_id']}"
    reader = factories.api_client(sandbox, scopes=[scopes.WEBHOOK_ENDPOINTS_READ])
    nobody = factories.ApiClient(None)
    cases: list[tuple[str, str, Any, int]] = [
        ("get", COLLECTION, nobody.get(COLLECTION), 401),
        ("get", EVENT_TYPES, factories.ApiClient("md_test_unknown").get(EVENT_TYPES), 401),
        ("post", COLLECTION, reader.post(COLLECTION, {"url": "https://example.com/a"}), 403),
        ("delete", ITEM, reader.delete(item), 403),
        ("get", ITEM, api.get(f"{COLLECTION}/we_00000000000000"), 404),
        ("patch", ITEM, api.patch(f"{COLLECTION}/we_00000000000000", {}), 404),
        ("get", COLLECTION, api.get(f"{COLLECTION}?limit=0"), 400),
        ("get", COLLECTION, api.get(f"{COLLECTION}?colour=red"), 400),
        ("get", EVENT_TYPES, api.get(EVENT_TYPES, headers={"MD-Version": "1999-01-01"}), 400),
        ("post", COLLECTION, api.post(COLLECTION, {}), 400),
        ("post", COLLECTION, api.post(COLLECTION, {"url": "ftp://example.com"}), 400),
        ("patch", ITEM, api.patch(item, {"signing_secret": "whsec_x"}), 400),
        ("post", COLLECTION, api.post(COLLECTION, raw="url=x", content_type="text/plain"), 415),
        ("patch", ITEM, api.patch(item, raw="{", content_type="text/plain"), 415),
        ("post", COLLECTION, api.post(COLLECTION, raw="x" * (300 * 1024)), 413),
    ]
    api.post(COLLECTION, {"url": "https://example.com/c"}, headers={"Idempotency-Key": "k-2"})
    reused = api.post(
        COLLECTION, {"url": "https://example.com/d"}, headers={"Idempotency-Key": "k-2"}
    )
    cases.append(("post", COLLECTION, reused, 409))
    for method, path, response, status in cases:
        assert response.status_code == status, (method, path, response.content)
        assert_documented(schema, method, path, response)


def test_actions_without_a_body_document_what_they_refuse(schema, api, sandbox):
    """Test, retry and delete read their (empty) body, so a text body is a documented 415."""
    endpoint = api.create_endpoint()["webhook_endpoint_id"]
    event = event_publish(environment=sandbox, type="packet.created", data={})
    event_fan_out(event_id=event.pk)
    delivery_id = api.get(f"{COLLECTION}/{endpoint}/deliveries").json()["data"][0]["delivery_id"]
    paths = {
        ("delete", ITEM): f"{COLLECTION}/{endpoint}",
        ("post", TEST_EVENT): f"{COLLECTION}/{endpoint}/test",
        ("post", DELIVERY_RETRY): f"/v1/deliveries/{delivery_id}/retry",
    }
    for (method, path), url in paths.items():
        text = api.request(method.upper(), url, raw="{}", content_type="text/plain")
        assert text.status_code == 415, (method, path, text.content)
        assert_documented(schema, method, path, text)
        huge = api.request(method.upper(), url, raw="x" * (300 * 1024))
        assert huge.status_code == 413, (method, path, huge.content)
        assert_documented(schema, method, path, huge)


def test_method_not_allowed_uses_the_documented_envelope(schema, api):
    response = api.request("PUT", f"{COLLECTION}/we_00000000000000", {})
    assert response.status_code == 405
    check(response.json(), {"$ref": "#/components/schemas/Error"}, schema, strict=True)
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- The reference page -------------------------------------------------------------------


class AssetCollector(HTMLParser):
    """Every URL the page would load: scripts, stylesheets, images, the spec."""

    LOADING = {("script", "src"), ("link", "href"), ("img", "src"), ("redoc", "spec-url")}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in self.LOADING and value:
                self.urls.append(value)


def test_docs_page_loads_only_local_assets(schema):
    response = Client().get("/v1/docs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response.has_header("MD-Request-Id")
    html = response.content.decode()
    assert "://" not in html  # no CDN, no font service: nothing absolute at all
    collector = AssetCollector()
    collector.feed(html)
    assert "/v1/openapi.json" in collector.urls
    static = [url for url in collector.urls if url != "/v1/openapi.json"]
    assert static, "the page should load the Redoc bundle"
    assert all(url.startswith("/static/") for url in static), static

    # Served by WhiteNoise from the apps' static folders, as under DEBUG (production serves
    # the same files after collectstatic). A new Client builds its middleware in this context.
    with override_settings(WHITENOISE_USE_FINDERS=True):
        client = Client()
        for url in static:
            found = finders.find(url.removeprefix("/static/"))
            assert found, f"{url} is not a static file of any installed app"
            served = client.get(url)
            assert served.status_code == 200, url
            assert served.getvalue() == Path(found).read_bytes()


def test_docs_page_points_at_the_schema(schema):
    html = Client().get("/v1/docs").content.decode()
    assert 'spec-url="/v1/openapi.json"' in html
    assert schema["info"]["title"] in html


def test_the_checks_themselves_are_strict(schema, api):
    # A real create response carries signing_secret, which the retrieve schema does not list.
    created = api.create_endpoint()
    retrieve = operation(schema, "get", ITEM)["responses"]["200"]
    with pytest.raises(jsonschema.ValidationError):
        check(created, retrieve["content"]["application/json"]["schema"], schema, strict=True)
    # Null passes where the document says so (3.1: a "null" type), and only there.
    assert '"nullable"' not in json.dumps(schema)
    empty: Schema = {"components": {"schemas": {}}}
    jsonschema.validate(None, resolve({"type": ["string", "null"]}, empty))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(None, resolve({"type": "string"}, empty))
