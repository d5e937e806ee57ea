"""Input that could mean two things is refused, naming what is ambiguous, rather than guessed:
a JSON key given twice, a query parameter given twice, a URL fragment that is never sent. And
no error echoes more than 100 characters of what it was sent."""

import pytest

from tests.test_auth import assert_error
from webhooks.models import WebhookEndpoint

LONG = "x" * 5000


def post_raw(api, path, raw):
    return api.post(path, raw=raw)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"url": "https://a.example/h", "url": "https://b.example/h"}', "url"),
        ('{"url": "https://a.example/h", "enabled_events": ["*"], "enabled_events": []}',
         "enabled_events"),
    ],
)  # fmt: skip
def test_a_json_key_given_twice_is_refused_by_name(api, raw, param):
    error = assert_error(post_raw(api, "/v1/webhook_endpoints", raw), 400, "parameter_invalid",
                         param=param)  # fmt: skip
    assert "more than once" in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("raw", "param", "where"),
    [
        ('{"url": "https://a.example/h", "metadata": {"url": "a", "url": "b"}}', "metadata",
         "metadata.url"),
        ('{"url": "https://a.example/h", "headers": {"X-A": "1", "X-A": "2"}}', "headers",
         "headers.X-A"),
        ('{"url": "https://a.example/h", "enabled_events": [{"a": 1, "a": 2}]}',
         "enabled_events", "enabled_events[0].a"),
    ],
)  # fmt: skip
def test_a_key_given_twice_within_a_field_is_refused_naming_that_field(api, raw, param, where):
    error = assert_error(post_raw(api, "/v1/webhook_endpoints", raw), 400, "parameter_invalid",
                         param=param)  # fmt: skip
    assert error["message"] == f"{where} is given more than once."
    assert not WebhookEndpoint.objects.exists()


def test_a_key_given_twice_inside_an_events_data_is_refused_too(api):
    raw = '{"type": "packet.created", "data": {"packet": {"id": 1, "id": 2}}}'
    error = assert_error(post_raw(api, "/v1/events", raw), 400, "parameter_invalid", param="data")
    assert error["message"] == "data.packet.id is given more than once."


def test_a_key_given_twice_before_a_body_too_deep_to_walk_is_still_refused(api):
    deep = "[" * 5000 + "]" * 5000
    raw = f'{{"type": "packet.created", "data": {{"a": {{"id": 1, "id": 2}}, "b": {deep}}}}}'
    error = assert_error(post_raw(api, "/v1/events", raw), 400, "parameter_invalid", param="id")
    assert error["message"] == "id is given more than once."


def test_the_same_key_in_different_objects_is_fine(api):
    raw = '{"type": "packet.created", "data": {"a": {"id": 1}, "b": {"id": 2}}}'
    assert post_raw(api, "/v1/events", raw).status_code == 201


@pytest.mark.parametrize(
    "query", ["limit=1&limit=2", "limit=2&limit=2", "starting_after=a&starting_after=b"]
)
def test_a_query_parameter_given_twice_is_refused_by_name(api, query):
    name = query.split("=")[0]
    error = assert_error(api.get(f"/v1/webhook_endpoints?{query}"), 400, "parameter_invalid",
                         param=name)  # fmt: skip
    assert "more than once" in error["message"]


@pytest.mark.parametrize(
    "url", ["https://example.com/hooks#part", "https://example.com/#", "https://example.com#x"]
)
def test_a_url_with_a_fragment_is_refused(api, url):
    error = assert_error(api.post("/v1/webhook_endpoints", {"url": url}), 400,
                         "parameter_invalid", param="url")  # fmt: skip
    assert "fragment" in error["message"]
    endpoint = api.create_endpoint("https://example.com/hooks")["webhook_endpoint_id"]
    patched = api.patch(f"/v1/webhook_endpoints/{endpoint}", {"url": url})
    assert_error(patched, 400, "parameter_invalid", param="url")


def test_status_on_create_says_it_is_set_by_an_update(api):
    response = api.post(
        "/v1/webhook_endpoints", {"url": "https://example.com/h", "status": "disabled"}
    )
    error = assert_error(response, 400, "parameter_invalid", param="status")
    assert "update" in error["message"] and "PATCH" in error["message"]


@pytest.mark.parametrize(
    "request_",
    [
        ("get", f"/v1/webhook_endpoints?starting_after={LONG}", None),
        ("get", f"/v1/webhook_endpoints?ending_before=we_{LONG}", None),
        ("get", f"/v1/events?starting_after=evt_{LONG}", None),
        ("get", f"/v1/webhook_endpoints/we_{LONG}", None),
        ("get", f"/v1/events/{LONG}", None),
        ("get", f"/v1/webhook_endpoints?{LONG}=1", None),
        ("post", "/v1/webhook_endpoints", {"url": "https://example.com/h", LONG: 1}),
        ("post", "/v1/webhook_endpoints", {"url": f"https://example.com/{LONG}"}),
        ("post", "/v1/webhook_endpoints", {"url": "https://e.example/h", "enabled_events": [LONG]}),
        ("post", "/v1/events", {"type": LONG}),
    ],
)  # fmt: skip
def test_no_error_echoes_more_than_100_characters_of_its_input(api, request_):
    method, path, body = request_
    response = api.get(path) if method == "get" else api.post(path, body)
    assert 400 <= response.status_code < 500, response.content[:300]
    error = response.json()["error"]
    assert "x" * 101 not in error["message"], error["message"][:300]
    assert error["param"] is None or len(error["param"]) <= 100
