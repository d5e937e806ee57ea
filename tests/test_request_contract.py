"""What holds for every request and response: ids, versions, media types, sizes, errors."""

import re
from collections.abc import Callable

import pytest
import requests
from django.test import Client

from tests import factories
from tests.servers import Gunicorn, database_url
from tests.test_auth import assert_error

REQUEST_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")


def test_every_response_carries_a_unique_request_id(api):
    ids = set()
    responses = [
        api.get("/v1/webhook_endpoints"),
        api.post("/v1/webhook_endpoints", {"url": "https://example.com/a"}),
        api.get("/v1/webhook_endpoints/we_missing"),
        api.get("/v1/nothing_here"),
        api.request("PUT", "/v1/webhook_endpoints/we_x", {}),
        Client().get("/v1/webhook_endpoints"),
        Client().get("/admin/login/"),
    ]
    for response in responses:
        assert REQUEST_ID.match(response["MD-Request-Id"]), response
        ids.add(response["MD-Request-Id"])
    assert len(ids) == len(responses)


def test_version_is_echoed_and_defaults_to_latest(api):
    response = api.get("/v1/webhook_endpoints")
    assert response["MD-Version"] == "2026-06-11"
    no_header = Client().get(
        "/v1/webhook_endpoints", headers={"Authorization": f"Bearer {api.raw_key}"}
    )
    assert no_header.status_code == 200
    assert no_header["MD-Version"] == "2026-06-11"


@pytest.mark.parametrize("version", ["", "2025-01-01", "latest", "2026-06-11x", "x" * 300])
def test_unknown_version_is_400(api, version):
    response = api.post(
        "/v1/webhook_endpoints",
        {"url": "https://example.com/a"},
        headers={"MD-Version": version},
    )
    error = assert_error(response, 400, "invalid_version", param="MD-Version")
    assert "2026-06-11" in error["message"]
    assert response["MD-Version"] == "2026-06-11"
    assert api.get("/v1/webhook_endpoints").json()["data"] == []


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/x-www-form-urlencoded", "url=https%3A%2F%2Fexample.com"),
        ("text/plain", '{"url": "https://example.com"}'),
        ("multipart/form-data; boundary=x", "--x--"),
        ("", '{"url": "https://example.com"}'),
    ],
)
def test_non_json_body_is_415(api, content_type, raw):
    response = api.post("/v1/webhook_endpoints", raw=raw, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert api.get("/v1/webhook_endpoints").json()["data"] == []


def test_json_with_charset_is_accepted(api):
    response = api.post(
        "/v1/webhook_endpoints",
        raw='{"url": "https://example.com/a"}',
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("charset", "accepted"),
    [
        *((name, True) for name in ("utf8", "UTF-8", '"utf-8"')),
        *(
            (name, False)
            for name in (
                "rot13",
                "base64",
                "zlib",
                "hex",
                "uu",
                "latin-1",
                "utf-16",
                "no-such-charset",
            )
        ),
    ],
)
def test_json_is_read_in_utf8_under_any_of_its_names_and_in_no_other_charset(
    api, charset, accepted
):
    # Bytes the other charsets name could decode as UTF-8 too: the label alone is refused.
    response = api.client.generic(
        "POST",
        "/v1/webhook_endpoints",
        b'{"url": "https://example.com/a"}',
        content_type=f"application/json; charset={charset}",
        headers=api.headers(),
    )
    if accepted:
        assert response.status_code == 201, response.content
        return
    error = assert_error(response, 415, "unsupported_media_type")
    assert "UTF-8" in error["message"]
    assert api.get("/v1/webhook_endpoints").json()["data"] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_charset_that_is_no_text_encoding_is_answered_by_the_api_under_gunicorn(broker):
    # Django decodes a query string with the Content-Type's charset as it builds the request,
    # before any middleware, which the test client does not go through.
    env = factories.environment()
    _, raw = factories.api_key(env)
    server = Gunicorn(database_url(), broker.url)
    try:
        url = f"{server.url}/v1/webhook_endpoints?limit=%31"
        rot13 = {"Content-Type": "application/json; charset=rot13"}
        for headers, status, code in [
            (rot13, 401, "unauthenticated"),
            ({**rot13, "Authorization": f"Bearer {raw}"}, 200, None),
        ]:
            response = requests.get(url, headers=headers, timeout=30)
            assert response.status_code == status, response.text
            assert REQUEST_ID.match(response.headers["MD-Request-Id"])
            if code:
                assert response.json()["error"]["code"] == code
        created = requests.post(
            f"{server.url}/v1/webhook_endpoints",
            data=b'{"url": "https://example.com/a"}',
            headers={**rot13, "Authorization": f"Bearer {raw}"},
            timeout=30,
        )
        assert created.status_code == 415, created.text
        assert created.json()["error"]["code"] == "unsupported_media_type"
        page = requests.get(
            f"{server.url}/admin/login/?next=%2Fadmin%2F", headers=rot13, timeout=30
        )
        assert page.status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    "raw",
    ['{"url": ', "{'url': 'x'}", '{"url": NaN}', b"\xff\xfe{}", "nul\x00", '{"a":1}{"b":2}'],
)
def test_malformed_json_is_400(api, raw):
    response = api.post("/v1/webhook_endpoints", raw=raw)
    error = assert_error(response, 400, "parameter_invalid")
    assert "JSON" in error["message"]


def test_deeply_nested_json_is_a_400_not_a_crash(api):
    hostile = "[" * 100_000 + "]" * 100_000  # within the size limit, past Python's recursion
    for headers in ({}, {"Idempotency-Key": "deep"}):
        response = api.post("/v1/webhook_endpoints", raw=hostile, headers=headers)
        error = assert_error(response, 400, "parameter_invalid")
        assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("raw", ["[]", '"https://example.com"', "42", "null"])
def test_body_must_be_an_object(api, raw):
    response = api.post("/v1/webhook_endpoints", raw=raw)
    error = assert_error(response, 400, "parameter_invalid")
    assert "JSON object" in error["message"]


def bodiless_actions(api) -> dict[str, tuple[str, str, Callable[[], bool]]]:
    """The actions that take no body, each with its path and whether it acted: a test event
    sent, a delivery queued again, an endpoint deleted."""
    from deliveries.models import Delivery, Event
    from deliveries.services import event_fan_out, event_publish

    endpoint = api.create_endpoint()["webhook_endpoint_id"]
    event = event_publish(environment=api.environment, type="packet.created", data={})
    event_fan_out(event_id=event.pk)
    delivery = Delivery.objects.get(event=event)
    Delivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)
    return {
        "test": (
            "POST",
            f"/v1/webhook_endpoints/{endpoint}/test",
            lambda: Event.objects.filter(type="ping").exists(),
        ),
        "retry": (
            "POST",
            f"/v1/deliveries/{delivery.public_id}/retry",
            lambda: Delivery.objects.get(pk=delivery.pk).status != "failed",
        ),
        "delete": (
            "DELETE",
            f"/v1/webhook_endpoints/{endpoint}",
            lambda: api.get(f"/v1/webhook_endpoints/{endpoint}").status_code == 404,
        ),
    }


@pytest.mark.parametrize("action", ["test", "retry", "delete"])
@pytest.mark.parametrize(
    ("content_type", "raw", "status", "code", "param"),
    [
        ("text/plain", "hello", 415, "unsupported_media_type", None),
        ("application/json", '{"x": ', 400, "parameter_invalid", None),
        ("application/json", "[]", 400, "parameter_invalid", None),
        ("application/json", '{"force": true}', 400, "parameter_unknown", "force"),
    ],
)
def test_an_action_that_takes_no_body_refuses_one_and_does_nothing(
    api, action, content_type, raw, status, code, param
):
    method, path, acted = bodiless_actions(api)[action]
    response = api.request(method, path, raw=raw, content_type=content_type)
    assert_error(response, status, code, param=param)
    assert not acted()


@pytest.mark.parametrize("action", ["retry", "delete"])
@pytest.mark.parametrize("raw", ["", "{}"])
def test_an_action_that_takes_no_body_takes_none_or_an_empty_object(api, action, raw):
    method, path, acted = bodiless_actions(api)[action]
    response = api.request(method, path, raw=raw)
    assert response.status_code in (200, 202), response.content
    assert acted()


def test_body_over_the_limit_is_413_and_creates_nothing(api, settings):
    padding = "a" * (256 * 1024)
    response = api.post(
        "/v1/webhook_endpoints", {"url": "https://example.com/a", "enabled_events": [padding]}
    )
    error = assert_error(response, 413, "payload_too_large")
    assert str(256 * 1024) in error["message"]
    assert api.get("/v1/webhook_endpoints").json()["data"] == []


def test_body_just_under_the_limit_is_parsed(api):
    # Under the size limit, the request reaches validation (and fails there, on the filter).
    filler = "x" * (200 * 1024)
    response = api.post(
        "/v1/webhook_endpoints", {"url": "https://example.com/a", "enabled_events": [filler]}
    )
    assert_error(response, 400, "parameter_invalid", param="enabled_events[0]")


def test_unknown_query_parameter_is_400(api):
    response = api.get("/v1/webhook_endpoints?limit=5&expand=everything")
    error = assert_error(response, 400, "parameter_unknown", param="expand")
    assert "expand" in error["message"]
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    assert_error(
        api.get(f"/v1/webhook_endpoints/{endpoint_id}?limit=5"),
        400,
        "parameter_unknown",
        param="limit",
    )


def test_more_query_parameters_than_django_reads_is_400(api, settings):
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    response = api.get("/v1/webhook_endpoints?" + "&".join(["limit=5"] * (limit + 1)))
    error = assert_error(response, 400, "parameter_invalid")
    assert f"at most {limit}" in error["message"]
    # A body is JSON, never form fields: one with as many is refused for its media type.
    form = "&".join(["url=x"] * (limit + 1))
    response = api.post(
        "/v1/webhook_endpoints", raw=form, content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_path_under_v1_is_a_404_envelope(api):
    response = api.get("/v1/webhook_endpoint")
    error = assert_error(response, 404, "not_found")
    assert "/v1/webhook_endpoint" in error["message"]
    assert response["Content-Type"] == "application/json"


def test_unsupported_method_is_405_with_allow(api):
    endpoint_id = api.create_endpoint()["webhook_endpoint_id"]
    response = api.request("PUT", f"/v1/webhook_endpoints/{endpoint_id}", {"url": "x"})
    assert_error(response, 405, "method_not_allowed")
    assert set(response["Allow"].replace(" ", "").split(",")) >= {"GET", "PATCH", "DELETE"}
    assert "PUT" not in response["Allow"]
    assert_error(api.delete("/v1/webhook_endpoints"), 405, "method_not_allowed")
    assert_error(api.request("OPTIONS", "/v1/webhook_endpoints"), 405, "method_not_allowed")


def test_head_works_like_get_without_a_body(api):
    response = api.request("HEAD", "/v1/webhook_endpoints")
    assert response.status_code == 200
    assert response.content == b""


def test_browser_accept_header_still_gets_json(api):
    response = api.get("/v1/webhook_endpoints", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


@pytest.mark.urls("tests.urls_failing")
def test_unhandled_errors_are_500_envelopes_without_a_traceback(api, caplog):
    client = Client(raise_request_exception=False)
    for path in ("/v1/failing_drf_view", "/v1/failing_django_view"):
        response = client.get(path, headers={"Authorization": f"Bearer {api.raw_key}"})
        error = assert_error(response, 500, "internal_error")
        assert error["type"] == "api_error"
        body = response.content.decode()
        assert "Traceback" not in body
        assert "secret-detail" not in body
    # The operator still gets the traceback, tagged with the request id.
    assert "secret-detail" in caplog.text


def test_responses_are_the_json_drf_writes(api):
    """api.renderers encodes with orjson: byte for byte what DRF's renderer writes (compact,
    UTF-8, U+2028/U+2029 escaped), and DRF's own path for what orjson cannot encode. Errors
    are written the same way."""
    from rest_framework.renderers import JSONRenderer

    api.create_endpoint("https://example.com/é", enabled_events=["packet.created"])
    data = {"name": "Zoë\u2028\u2029", "float": 1.5, "nothing": None, "list": [True, {"a": []}]}
    event = api.post("/v1/events", {"type": "packet.created", "data": data}).json()
    responses = [
        api.get("/v1/webhook_endpoints"),
        api.get(f"/v1/events/{event['event_id']}"),
        api.get("/v1/events"),
        api.get("/v1/webhook_endpoints/we_missing"),  # an error
    ]
    for response in responses:
        assert response.content == JSONRenderer().render(response.json()), response.content
    detail = responses[1].content
    assert "Zoë".encode() in detail and b"\\u2028\\u2029" in detail
    assert "\u2028".encode() not in detail
    assert responses[1].json()["data"] == data

    # Past 64 bits (orjson stops there): DRF's path, the number exact.
    big = api.post("/v1/events", {"type": "packet.created", "data": {"n": 10**30}})
    assert big.status_code == 201, big.content
    got = api.get(f"/v1/events/{big.json()['event_id']}")
    assert got.status_code == 200 and got.json()["data"] == {"n": 10**30}
    assert b'"n":1000000000000000000000000000000' in got.content
