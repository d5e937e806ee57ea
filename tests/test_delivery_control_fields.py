"""Delivery control's endpoint fields (description, metadata, headers, rate_limit,
delivery_order): accepted on create and update, returned on every read, refused by the
contract's rules with a `400 parameter_invalid` naming the field, merged on update, sensitive
header values encrypted and masked, headers sent on every delivery to a real receiver, and the
same rules in the operators' console.
"""

import string
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.urls import reverse

from core import encryption
from deliveries import signature
from tests import factories
from tests.test_auth import assert_error
from tests.test_secret_rotation import run
from webhooks.models import WebhookEndpoint
from webhooks.signals import delivery_order_changed

pytestmark = pytest.mark.django_db

COLLECTION = "/v1/webhook_endpoints"
MASK = "********"
DEFAULTS: dict[str, Any] = {
    "description": None,
    "metadata": {},
    "headers": {},
    "rate_limit": None,
    "delivery_order": "unordered",
}


def item(endpoint: dict[str, Any]) -> str:
    return f"{COLLECTION}/{endpoint['webhook_endpoint_id']}"


def stored(endpoint: dict[str, Any]) -> WebhookEndpoint:
    return WebhookEndpoint.objects.get(public_id=endpoint["webhook_endpoint_id"])


def names(count: int, length: int = 8) -> list[str]:
    """`count` distinct header names (or metadata keys) of `length` characters."""
    return [f"X-{i:0{length - 2}d}" for i in range(count)]


# --- Every read shows the fields, after the reference's -------------------------------------


def test_every_read_returns_the_fields_after_the_references(api):
    created = api.post(COLLECTION, {"url": "https://example.com/a"}).json()
    assert list(created)[-6:] == ["created_at", *DEFAULTS]
    assert {name: created[name] for name in DEFAULTS} == DEFAULTS
    fields = {
        "description": "Billing's judgments",
        "metadata": {"team": "billing", "tier": "gold"},
        "headers": {"X-Tenant": "acme"},
        "rate_limit": 25,
        "delivery_order": "ordered",
    }
    full = api.create_endpoint("https://example.com/b", **fields)
    assert {name: full[name] for name in DEFAULTS} == fields
    reads = [
        api.get(item(full)).json(),
        next(
            e
            for e in api.get(COLLECTION).json()["data"]
            if e["webhook_endpoint_id"] == full["webhook_endpoint_id"]
        ),
        api.patch(item(full), {}).json(),
    ]
    for read in reads:
        assert list(read) == [
            "webhook_endpoint_id",
            "url",
            "enabled_events",
            "status",
            "created_at",
            *DEFAULTS,
        ]
        assert {name: read[name] for name in DEFAULTS} == fields


def test_a_list_page_is_still_one_query(api, django_assert_num_queries):
    for i in range(3):
        api.create_endpoint(f"https://example.com/{i}", headers={"X-Api-Key": f"k{i}"})
    api.get(COLLECTION)  # warm the connection
    with django_assert_num_queries(2):  # the key, the page
        page = api.get(COLLECTION).json()
    assert [e["headers"] for e in page["data"]] == [{"X-Api-Key": MASK}] * 3


# --- Validation: 400 parameter_invalid naming the field --------------------------------------

REFUSED_HEADER_NAMES = [
    "Host",
    "Content-Length",
    "content-type",
    "Content-Encoding",
    "Transfer-Encoding",
    "CONNECTION",
    "Keep-Alive",
    "Upgrade",
    "TE",
    "te",
    "Trailer",
    "User-Agent",
    "Proxy-Authorization",
    "proxy-anything",
    "MD-Signature",
    "md-event-id",
    "Md-Custom",
    "webhook-id",
    "Webhook-Signature",
    "WEBHOOK-TIMESTAMP",
    # Read as the names above by servers that map "-" and "_" to the same environ key.
    "MD_Signature",
    "webhook_id",
    "Webhook_Signature",
    "content_type",
    "User_Agent",
    "Proxy_Authorization",
]
BAD_HEADER_NAMES = ["", "X-Bad\n", "X Bad", "X:Bad", "X-Ünïcode", "(x)", "X/Y", "x" * 101, 'X"Q']
BAD_HEADER_VALUES = [
    "a\r\nX-Injected: 1",
    "trailing\n",
    "trailing\r\n",
    "a\nb",
    "a\rb",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "é",
    "x" * 1001,
    5,
    True,
    ["a"],
    {"a": "b"},
]
WIDE = {name: "v" * 1000 for name in names(8, 24)}  # 8 x (24 + 1000) = 8192, the limit

INVALID: list[tuple[str, Any]] = [
    *[("headers", {name: "x"}) for name in REFUSED_HEADER_NAMES],
    *[("headers", {name: "x"}) for name in BAD_HEADER_NAMES],
    *[("headers", {"X-Fine": value}) for value in BAD_HEADER_VALUES],
    ("headers", dict.fromkeys(names(21), "x")),
    ("headers", {**WIDE, names(1, 24)[0]: "v" * 999, "XY": ""}),  # 8193: one over
    ("headers", {"X-Same": "1", "x-same": "2"}),
    ("headers", {"Authorization": MASK}),  # the mask of a value that is not there
    ("headers", ["X-A"]),
    ("headers", "X-A: 1"),
    ("headers", None),
    ("metadata", dict.fromkeys(names(51), "x")),
    ("metadata", {"": "x"}),
    ("metadata", {"k" * 41: "x"}),
    ("metadata", {"k": "v" * 501}),
    ("metadata", {"k": "a\x00b"}),  # jsonb cannot store U+0000 (was a 500)
    ("metadata", {"a\x00b": "v"}),
    ("metadata", {"k": 1}),
    ("metadata", {"k": None}),
    ("metadata", {"k": {"nested": "x"}}),
    ("metadata", ["k"]),
    ("metadata", "k=v"),
    ("description", "d" * 501),
    ("description", 5),
    ("description", ["d"]),
    ("rate_limit", 0),
    ("rate_limit", -1),
    ("rate_limit", 10001),
    ("rate_limit", 1.5),
    ("rate_limit", "5"),
    ("rate_limit", True),
    ("delivery_order", "random"),
    ("delivery_order", "ORDERED"),
    ("delivery_order", None),
    ("delivery_order", 1),
]


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_create_refuses_what_the_contract_refuses(api, field, value):
    response = api.post(COLLECTION, {"url": "https://example.com/x", field: value})
    error = assert_error(response, 400, "parameter_invalid", field)
    if field == "headers" and isinstance(value, dict):
        for header_value in value.values():  # a value may be a credential: never repeated
            if isinstance(header_value, str) and len(header_value) > 3 and header_value != MASK:
                assert header_value not in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_update_refuses_what_the_contract_refuses_and_changes_nothing(api, field, value):
    endpoint = api.create_endpoint(
        metadata={"keep": "me"}, headers={"X-Keep": "me", "X-Token": "t0ken"}, rate_limit=5
    )
    before = api.get(item(endpoint)).json()
    ciphertext = stored(endpoint).headers["X-Token"]
    assert_error(api.patch(item(endpoint), {field: value}), 400, "parameter_invalid", field)
    assert api.get(item(endpoint)).json() == before
    assert stored(endpoint).headers["X-Token"] == ciphertext


ACCEPTED: list[tuple[str, Any, Any]] = [
    ("headers", dict.fromkeys(names(20), "x"), None),
    ("headers", WIDE, None),
    ("headers", {"x" * 100: "v"}, None),
    ("headers", {string.digits + string.ascii_letters + "!#$%&'*+-.^_`|~": "v"}, None),
    ("headers", {"X-Printable": "".join(map(chr, range(0x20, 0x7F)))}, None),
    ("headers", {"X-Empty": ""}, None),
    ("headers", {"Proxy": "no hyphen: not Proxy-*", "X-MD-Thing": "x", "Webhooks": "x"}, None),
    ("metadata", {f"k{i}": "v" * 500 for i in range(50)}, None),
    ("metadata", {"k" * 40: "v", "é🙂": "ünïcode is fine here"}, None),
    ("metadata", None, {}),
    ("description", "d" * 500, None),
    ("description", "", None),
    ("description", None, None),
    ("rate_limit", 1, None),
    ("rate_limit", 10000, None),
    ("rate_limit", None, None),
    ("delivery_order", "ordered", None),
    ("delivery_order", "unordered", None),
]


@pytest.mark.parametrize(("field", "value", "shown"), ACCEPTED)
def test_values_at_the_limits_are_accepted_on_create_and_update(api, field, value, shown):
    expected = value if shown is None else shown
    created = api.post(COLLECTION, {"url": "https://example.com/x", field: value})
    assert created.status_code == 201, created.content
    assert created.json()[field] == expected
    updated = api.patch(item(api.create_endpoint()), {field: value})
    assert updated.status_code == 200, updated.content
    assert updated.json()[field] == expected


def test_a_null_description_clears_it(api):
    endpoint = api.create_endpoint(description="temporary")
    assert api.patch(item(endpoint), {"description": None}).json()["description"] is None
    assert stored(endpoint).description is None


# --- Merging on update ------------------------------------------------------------------------


def test_metadata_merges_removes_a_key_set_to_empty_and_null_removes_all(api):
    endpoint = api.create_endpoint(metadata={"a": "1", "b": "2", "c": "3"})
    path = item(endpoint)
    merged = api.patch(path, {"metadata": {"b": "", "c": "three", "d": "4", "zz": ""}}).json()
    assert merged["metadata"] == {"a": "1", "c": "three", "d": "4"}
    assert api.patch(path, {"metadata": {}}).json()["metadata"] == merged["metadata"]
    assert (
        api.patch(path, {"url": "https://example.com/z"}).json()["metadata"] == merged["metadata"]
    )
    assert api.patch(path, {"metadata": None}).json()["metadata"] == {}
    assert stored(endpoint).metadata == {}


def test_metadata_limit_counts_the_merged_keys(api):
    endpoint = api.create_endpoint(metadata={f"k{i}": "v" for i in range(50)})
    path = item(endpoint)
    assert_error(
        api.patch(path, {"metadata": {"one-more": "v"}}), 400, "parameter_invalid", "metadata"
    )
    # Removing one in the same update makes room.
    response = api.patch(path, {"metadata": {"one-more": "v", "k0": ""}})
    assert response.status_code == 200
    assert len(response.json()["metadata"]) == 50 and "k0" not in response.json()["metadata"]


def test_headers_merge_case_insensitively_and_null_removes(api):
    endpoint = api.create_endpoint(
        headers={"X-Tenant": "acme", "X-Region": "eu", "Authorization": "Bearer one"}
    )
    path = item(endpoint)
    response = api.patch(
        path, {"headers": {"x-tenant": "globex", "X-REGION": None, "X-Absent": None, "X-New": "n"}}
    )
    assert response.status_code == 200, response.content
    assert response.json()["headers"] == {
        "Authorization": MASK,
        "x-tenant": "globex",  # the name as given last replaces the stored one
        "X-New": "n",
    }
    assert stored(endpoint).headers["x-tenant"] == "globex"
    assert api.patch(path, {"headers": {"AUTHORIZATION": None}}).json()["headers"] == {
        "x-tenant": "globex",
        "X-New": "n",
    }


def test_header_limits_count_the_merged_headers(api):
    endpoint = api.create_endpoint(headers=dict.fromkeys(names(20), "x"))
    path = item(endpoint)
    assert_error(api.patch(path, {"headers": {"X-21": "x"}}), 400, "parameter_invalid", "headers")
    response = api.patch(path, {"headers": {"X-21": "x", names(20)[0]: None}})
    assert response.status_code == 200 and len(response.json()["headers"]) == 20
    # The 8 KiB count includes the stored values, sensitive ones decrypted.
    wide = api.create_endpoint(headers={"X-Token": "t" * 1000, **dict(list(WIDE.items())[:7])})
    assert_error(
        api.patch(item(wide), {"headers": {"X-More": "m" * 20}}),
        400,
        "parameter_invalid",
        "headers",
    )


# --- Sensitive values: encrypted at rest, masked on every read --------------------------------

SENSITIVE = {
    "Authorization": "Bearer s3cr3t-authorization",
    "cookie": "session=s3cr3t-cookie",
    "X-Api-Key": "s3cr3t-api-key",
    "X-Auth-Token": "s3cr3t-token",
    "X-Client-SECRET": "s3cr3t-secret",
    "X-Password-Hint": "s3cr3t-password",
    "X-Upstream-Signature": "s3cr3t-signature",
    "Monkey": "s3cr3t-contains-key",
}


def test_sensitive_values_are_encrypted_and_masked_on_every_read(api):
    created = api.post(
        COLLECTION, {"url": "https://example.com/s", "headers": {**SENSITIVE, "X-Tenant": "acme"}}
    )
    endpoint = created.json()
    masked = {**dict.fromkeys(SENSITIVE, MASK), "X-Tenant": "acme"}
    responses = [
        created,
        api.get(item(endpoint)),
        api.get(COLLECTION),
        api.patch(item(endpoint), {"description": "touched"}),
        api.patch(item(endpoint), {"headers": {"X-Other": "o"}}),
    ]
    for response in responses:
        assert response.status_code in (200, 201)
        for value in SENSITIVE.values():
            assert value not in response.content.decode()
    assert endpoint["headers"] == masked
    assert responses[1].json()["headers"] == masked
    assert responses[2].json()["data"][0]["headers"] == masked
    row = stored(endpoint).headers
    assert row["X-Tenant"] == "acme"
    for name, value in SENSITIVE.items():
        assert set(row[name]) == {"encrypted"}
        assert value not in row[name]["encrypted"]
        assert encryption.decrypt(row[name]["encrypted"]) == value


def test_the_mask_sent_back_keeps_a_sensitive_value(api, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint = api.create_endpoint(
        f"{receiver.url}/mask", headers={"Authorization": "Bearer keep-me", "X-Tenant": "a"}
    )
    shown = api.get(item(endpoint)).json()
    # A read sent back whole, one plain value changed: the hidden one is kept.
    response = api.patch(item(endpoint), {"headers": {**shown["headers"], "X-Tenant": "b"}})
    assert response.json()["headers"] == {"Authorization": MASK, "X-Tenant": "b"}
    factories.deliver_here(api.environment, "packet.created")
    [request] = receiver.received("/mask")
    assert request.headers["Authorization"] == "Bearer keep-me"
    assert request.headers["X-Tenant"] == "b"


def test_key_rotation_reencrypts_header_values(api, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint = api.create_endpoint(
        f"{receiver.url}/rotated", headers={"X-Api-Key": "rotate-me", "X-Plain": "p"}
    )
    before = stored(endpoint).headers
    new_key = Fernet.generate_key().decode()
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key, *settings.SIGNING_SECRET_ENCRYPTION_KEYS]
    # The endpoint's signing secret and its headers.
    assert run("rotate_encryption_key")[-1] == "2"
    after = stored(endpoint).headers
    assert after["X-Plain"] == "p"
    assert after["X-Api-Key"] != before["X-Api-Key"]
    settings.SIGNING_SECRET_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    assert encryption.decrypt(after["X-Api-Key"]["encrypted"]) == "rotate-me"
    factories.deliver_here(api.environment, "packet.created")
    [request] = receiver.received("/rotated")
    assert request.headers["X-Api-Key"] == "rotate-me"


# --- Sent on every delivery ------------------------------------------------------------------


def test_headers_arrive_beside_the_contracts_own(api, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint = api.create_endpoint(
        f"{receiver.url}/sent",
        headers={"X-Tenant": "acme", "Authorization": "Bearer on-the-wire", "X-Empty": ""},
    )
    plain = api.create_endpoint(f"{receiver.url}/plain")
    event = factories.deliver_here(api.environment, "judgment.created")
    [request] = receiver.received("/sent")
    got = request.headers
    assert got["X-Tenant"] == "acme"
    assert got["Authorization"] == "Bearer on-the-wire"  # decrypted on the wire only
    assert got["X-Empty"] == ""
    assert got["Content-Type"] == "application/json"
    assert got["MD-Event-Id"] == got["webhook-id"] == event.public_id
    assert "Kinetic-Webhooks" in got["User-Agent"]
    signature.verify(request.body, got["MD-Signature"], endpoint["signing_secret"])
    [other] = receiver.received("/plain")
    assert "X-Tenant" not in other.headers and "Authorization" not in other.headers
    assert plain["headers"] == {}

    api.patch(item(endpoint), {"headers": {"X-Tenant": None, "X-Region": "eu"}})
    factories.deliver_here(api.environment, "judgment.created")
    latest = receiver.received("/sent")[-1].headers
    assert "X-Tenant" not in latest
    assert latest["X-Region"] == "eu" and latest["Authorization"] == "Bearer on-the-wire"


def test_a_stored_refused_name_never_overrides_the_contracts_headers(api, receiver, settings):
    # Rows written before a rule existed, or by hand: sending leaves such names out.
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True
    endpoint = api.create_endpoint(f"{receiver.url}/forced", headers={"X-Fine": "yes"})
    WebhookEndpoint.objects.filter(public_id=endpoint["webhook_endpoint_id"]).update(
        headers={
            "X-Fine": "yes",
            "content-type": "text/plain",
            "user-agent": "evil",
            "md-event-type": "forged",
            "Webhook-Signature": "v1,forged",
        }
    )
    event = factories.deliver_here(api.environment, "packet.created")
    [request] = receiver.received("/forced")
    got = request.headers
    assert got["X-Fine"] == "yes"
    assert got["Content-Type"] == "application/json"
    assert "Kinetic-Webhooks" in got["User-Agent"]
    assert got["MD-Event-Type"] == event.type
    assert got["webhook-signature"].startswith("v1,") and "forged" not in got["webhook-signature"]


# --- delivery_order's signal ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # so that "inside a transaction" means the update's
def test_a_change_of_delivery_order_is_told_inside_the_update(api):
    told: list[tuple[int, bool, bool]] = []

    def listen(sender: Any, *, endpoint_id: int, ordered: bool, **_: Any) -> None:
        told.append((endpoint_id, ordered, transaction.get_connection().in_atomic_block))

    delivery_order_changed.connect(listen, dispatch_uid="test-order-changed")
    try:
        endpoint = api.create_endpoint()
        pk = stored(endpoint).pk
        path = item(endpoint)
        api.patch(path, {"delivery_order": "unordered"})  # no change: nothing told
        api.patch(path, {"rate_limit": 3})
        assert told == []
        api.patch(path, {"delivery_order": "ordered"})
        api.patch(path, {"delivery_order": "ordered", "description": "again"})
        api.patch(path, {"delivery_order": "unordered"})
        assert_error(
            api.patch(path, {"delivery_order": "ordered", "headers": {"Host": "x"}}),
            400,
            "parameter_invalid",
            "headers",
        )
    finally:
        delivery_order_changed.disconnect(dispatch_uid="test-order-changed")
    assert [(e, o) for e, o, _ in told] == [(pk, True), (pk, False)]
    assert all(in_transaction for _, _, in_transaction in told)
    assert stored(endpoint).delivery_order == "unordered"


# --- The operators' console -------------------------------------------------------------------


@pytest.fixture
def console_endpoint(api) -> dict[str, Any]:
    return api.create_endpoint(
        "https://example.com/console",
        description="Billing",
        metadata={"team": "billing", "tier": "gold"},
        headers={"X-Tenant": "acme", "X-Api-Key": "console-s3cret"},
        rate_limit=7,
        delivery_order="ordered",
    )


def edit_page(endpoint: dict[str, Any]) -> str:
    return reverse("admin:webhooks_webhookendpoint_delivery_control", args=[stored(endpoint).pk])


def object_page(endpoint: dict[str, Any]) -> str:
    return reverse("admin:webhooks_webhookendpoint_change", args=[stored(endpoint).pk])


def test_console_shows_the_fields_masked(admin_client, console_endpoint):
    html = admin_client.get(object_page(console_endpoint)).content.decode()
    for text in (
        "Billing",
        "team: billing",
        "X-Tenant: acme",
        f"X-Api-Key: {MASK}",
        "7 per second",
    ):
        assert text in html, text
    assert "Ordered" in html
    assert "console-s3cret" not in html
    assert edit_page(console_endpoint) in html
    form = admin_client.get(edit_page(console_endpoint)).content.decode()
    assert "console-s3cret" not in form and MASK in form


def test_console_edits_through_the_services_rules(admin_client, api, console_endpoint):
    page = edit_page(console_endpoint)
    refused = admin_client.post(
        page,
        {
            "description": "x",
            "metadata": "{}",
            "headers": '{"Host": "evil.example"}',
            "rate_limit": "",
            "delivery_order": "ordered",
        },
    )
    assert refused.status_code == 200
    assert "Invalid headers" in refused.content.decode()
    assert api.get(item(console_endpoint)).json()["description"] == "Billing"
    for bad, field in (("0", "rate_limit"), ("10001", "rate_limit")):
        response = admin_client.post(
            page,
            {"metadata": "{}", "headers": "{}", "rate_limit": bad, "delivery_order": "ordered"},
        )
        assert "rate_limit is deliveries per second" in response.content.decode(), field

    saved = admin_client.post(
        page,
        {
            "description": "",
            "metadata": '{"team": "payments"}',  # "tier" is no longer shown: removed
            "headers": f'{{"X-Api-Key": "{MASK}", "X-Region": "eu"}}',
            "rate_limit": "",
            "delivery_order": "unordered",
        },
    )
    assert saved.status_code == 302 and saved["Location"] == object_page(console_endpoint)
    shown = api.get(item(console_endpoint)).json()
    assert {name: shown[name] for name in DEFAULTS} == {
        "description": None,
        "metadata": {"team": "payments"},
        "headers": {"X-Api-Key": MASK, "X-Region": "eu"},
        "rate_limit": None,
        "delivery_order": "unordered",
    }
    row = stored(console_endpoint).headers
    assert encryption.decrypt(row["X-Api-Key"]["encrypted"]) == "console-s3cret"
    history = admin_client.get(
        reverse("admin:webhooks_webhookendpoint_history", args=[stored(console_endpoint).pk])
    ).content.decode()
    assert "Changed delivery control" in history and "console-s3cret" not in history


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", "[" * 50_000 + "]" * 50_000),  # nesting past Python's recursion limit
        ("headers", "[" * 50_000 + "]" * 50_000),
        ("metadata", "1" * 5000),  # an integer past int()'s 4,300-digit limit
        ("headers", '{"X-Big": ' + "9" * 5000 + "}"),
    ],
    ids=["metadata-deep", "headers-deep", "metadata-long-int", "headers-long-int"],
)
def test_console_refuses_json_python_cannot_read_on_the_form(
    admin_client, api, console_endpoint, field, value
):
    form = {"description": "x", "metadata": "{}", "headers": "{}", "rate_limit": "",
            "delivery_order": "unordered", field: value}  # fmt: skip
    response = admin_client.post(edit_page(console_endpoint), form)
    assert response.status_code == 200  # the form again, with the field's error; was a 500
    assert "Enter a valid JSON." in response.content.decode()
    assert api.get(item(console_endpoint)).json()["description"] == "Billing"


def test_console_filters_by_order_and_rate_limit(admin_client, api, console_endpoint):
    plain = api.create_endpoint("https://example.com/plain")
    changelist = reverse("admin:webhooks_webhookendpoint_changelist")

    def listed(**params: str) -> set[str]:
        html = admin_client.get(changelist, params).content.decode()
        return {
            e["webhook_endpoint_id"]
            for e in (console_endpoint, plain)
            if e["webhook_endpoint_id"] in html
        }

    both = {console_endpoint["webhook_endpoint_id"], plain["webhook_endpoint_id"]}
    assert listed() == both
    assert listed(delivery_order__exact="ordered") == {console_endpoint["webhook_endpoint_id"]}
    assert listed(delivery_order__exact="unordered") == {plain["webhook_endpoint_id"]}
    assert listed(rate_limited="yes") == {console_endpoint["webhook_endpoint_id"]}
    assert listed(rate_limited="no") == {plain["webhook_endpoint_id"]}


def test_read_only_operators_cannot_edit(console_endpoint):
    user = User.objects.create_user("viewer", password="not-used", is_staff=True)
    user.groups.add(Group.objects.get(name="Operators (read-only)"))
    operator = Client()
    operator.force_login(user)
    html = operator.get(object_page(console_endpoint)).content.decode()
    assert "Billing" in html and edit_page(console_endpoint) not in html
    assert operator.get(edit_page(console_endpoint)).status_code == 403
    response = operator.post(
        edit_page(console_endpoint),
        {"metadata": "{}", "headers": "{}", "rate_limit": "", "delivery_order": "unordered"},
    )
    assert response.status_code == 403
    assert stored(console_endpoint).delivery_order == "ordered"


def test_console_edit_page_refuses_a_deleted_endpoint(admin_client, api, console_endpoint):
    page = edit_page(console_endpoint)
    api.delete(item(console_endpoint))
    assert admin_client.get(page).status_code == 404


def test_other_tenants_see_none_of_it(api, console_endpoint):
    stranger = factories.api_client()
    response = stranger.get(item(console_endpoint))
    assert_error(response, 404, "not_found", "webhook_endpoint_id")
    assert "console-s3cret" not in response.content.decode()
    assert stranger.get(COLLECTION).json()["data"] == []
