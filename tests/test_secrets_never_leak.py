"""Raw API keys and signing secrets are shown once, to the one who asked, and nowhere else.

One scenario goes through everything that makes, uses or shows a credential: API keys from the
`create_api_key` command, endpoints (their signing secret in the create response), rotations
over the API and with the command, idempotent replays, events published and delivered (signed
with the secrets) to a receiver on 127.0.0.1, error responses (bad, revoked and foreign keys,
bad input, an idempotency conflict, an unhandled error). Every log record of every logger is
captured at DEBUG, with SQL statements logged too (`DEBUG=True`). Then no raw key and no signing
secret (nor its hex form, as a bytea literal in SQL would show it) may appear:

- in any log record: message, any attribute, or the line either formatter (plain, JSON) writes;
- in any error response body;
- in the database, except the stored response of the idempotent request that returned it
  (the replay store), and nowhere else: API keys are stored as a hash and a short prefix,
  signing secrets encrypted.
"""

import binascii
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.core.management import call_command

from accounts.keys import key_hash
from accounts.models import ApiKey
from api.models import IdempotencyRecord
from core import encryption
from core.logging import JsonFormatter, RequestIdFilter
from tests import factories
from tests.factories import ApiClient
from webhooks.models import EndpointSecret, WebhookEndpoint

LOGGING: dict[str, Any] = django_settings.LOGGING
PLAIN_FORMAT = LOGGING["formatters"]["plain"]["format"]
# Loggers that may not exist yet when the test starts; Django's own stop at INFO by default.
NAMED_LOGGERS = [
    "django",
    "django.db.backends",
    "django.request",
    "django.server",
    "django.security",
    "celery",
    "kombu",
    "urllib3",
    "requests",
    "api",
    "accounts",
    "webhooks",
    "deliveries",
]


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def forms(value: str) -> list[str]:
    """The value, and its hex form (a bytea literal or a bytes dump would show it so)."""
    return [value, binascii.hexlify(value.encode()).decode()]


@dataclass
class Credentials:
    keys: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    # Sensitive endpoint header values (webhooks.headers): shown as a mask, sent decrypted.
    header_values: list[str] = field(default_factory=list)
    # Idempotency records (id) that legitimately hold a secret: the response that returned it.
    replay_store: dict[str, int] = field(default_factory=dict)
    error_bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def leaked_in(self, text: str) -> list[str]:
        return [
            value[:16] + "…"
            for value in self.keys + self.secrets + self.header_values
            if any(form in text for form in forms(value))
        ]


@pytest.fixture
def all_logs(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, settings: Any
) -> Iterator[Any]:
    """Every record of every logger, at DEBUG; SQL included unless the test asks for DEBUG off."""
    # With DEBUG on, the database wrapper logs each statement and its parameters
    # (django.db.backends), as in local development; production runs with DEBUG off.
    settings.DEBUG = getattr(request, "param", "debug on") == "debug on"
    caplog.set_level(logging.DEBUG)
    names = set(NAMED_LOGGERS) | set(logging.root.manager.loggerDict)
    for name in sorted(names):
        caplog.set_level(logging.DEBUG, logger=name)
    # A logger that does not propagate would not reach caplog's handler on the root logger.
    lonely = [
        logger
        for logger in (logging.getLogger(name) for name in names)
        if not logger.propagate and caplog.handler not in logger.handlers
    ]
    for logger in lonely:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in lonely:
        logger.removeHandler(caplog.handler)


def _scenario(credentials: Credentials, receiver: Any, sandbox: Any) -> None:
    org = sandbox.organization
    # Keys from the operator's command, and one from the service directly.
    key = run(
        "create_api_key",
        f"--organization={org.slug}",
        "--environment=sandbox",
        "--scopes=webhook_endpoints:read,webhook_endpoints:write,events:read,events:write",
        "--name=leak-test",
    )[-1]
    doomed = run(
        "create_api_key",
        f"--organization={org.slug}",
        "--environment=sandbox",
        "--scopes=webhook_endpoints:read",
    )[-1]
    _, other_org_key = factories.api_key(factories.environment())
    credentials.keys += [key, doomed, other_org_key]
    api = ApiClient(key, sandbox)

    def error(response: Any, status: int) -> None:
        assert response.status_code == status, response.content
        credentials.error_bodies.append((response.request["PATH_INFO"], response.content))

    def idempotent(path: str, body: Any, idem: str) -> dict[str, Any]:
        response = api.post(path, body, headers={"Idempotency-Key": idem})
        assert response.status_code in (200, 201), response.content
        secret = response.json()["signing_secret"]
        credentials.secrets.append(secret)
        credentials.replay_store[secret] = IdempotencyRecord.objects.get(key=idem).pk
        # The replay returns it again, from the store.
        again = api.post(path, body, headers={"Idempotency-Key": idem})
        assert again["Idempotent-Replayed"] == "true"
        assert again.content == response.content
        return response.json()

    # Endpoints: one created idempotently, one not.
    first = idempotent(
        "/v1/webhook_endpoints", {"url": f"{receiver.url}/first"}, "leak-create-first"
    )
    second = api.create_endpoint(f"{receiver.url}/second")
    credentials.secrets.append(second["signing_secret"])
    first_path = f"/v1/webhook_endpoints/{first['webhook_endpoint_id']}"
    second_path = f"/v1/webhook_endpoints/{second['webhook_endpoint_id']}"

    # Sensitive headers: set on create (idempotently) and update, merged, sent below.
    def header_value() -> str:
        value = f"hv_{uuid.uuid4().hex}"
        credentials.header_values.append(value)
        return value

    headed = api.post(
        "/v1/webhook_endpoints",
        {
            "url": f"{receiver.url}/headed",
            "headers": {"Authorization": f"Bearer {header_value()}", "X-Tenant": "acme"},
        },
        headers={"Idempotency-Key": "leak-create-headed"},
    )
    assert headed.status_code == 201, headed.content
    credentials.secrets.append(headed.json()["signing_secret"])
    credentials.replay_store[headed.json()["signing_secret"]] = IdempotencyRecord.objects.get(
        key="leak-create-headed"
    ).pk
    headed_path = f"/v1/webhook_endpoints/{headed.json()['webhook_endpoint_id']}"
    for body in (
        {"headers": {"X-Api-Key": header_value(), "Cookie": f"session={header_value()}"}},
        {"headers": {"authorization": f"Bearer {header_value()}"}, "description": "rotated"},
    ):
        assert api.patch(headed_path, body).status_code == 200
    assert (
        api.patch(first_path, {"headers": {"X-Upstream-Token": header_value()}}).status_code == 200
    )

    # Rotations: over the API (idempotent, and not) and with the command; overlaps keep the
    # previous secrets signing, so deliveries below carry several v1 values.
    idempotent(f"{first_path}/rotate_secret", {"overlap_seconds": 3600}, "leak-rotate-first")
    rotated = api.post(f"{second_path}/rotate_secret")
    assert rotated.status_code == 200, rotated.content
    credentials.secrets.append(rotated.json()["signing_secret"])
    lines = run("rotate_webhook_secret", second["webhook_endpoint_id"], "--overlap", "600")
    credentials.secrets.append(lines[-1])
    lines = run("rotate_webhook_secret", "--organization", org.slug, "--environment", "sandbox")
    credentials.secrets += [line.split()[1] for line in lines]
    assert all(s.startswith("whsec_") for s in credentials.secrets)

    # Events: over the API (idempotent), with the command, and delivered, signed, in-process.
    published = api.post(
        "/v1/events",
        {"type": "judgment.created", "data": {"judgment": {"id": "jdg_1"}}},
        headers={"Idempotency-Key": "leak-event"},
    )
    assert published.status_code == 201, published.content
    run(
        "publish_event",
        f"--organization={org.slug}",
        "--environment=sandbox",
        "--type=packet.created",
    )
    factories.deliver_here(sandbox, "judgment.created")
    signed = receiver.received("/first")
    assert signed and signed[-1].headers["MD-Signature"].count("v1=") >= 2
    # The sensitive headers went out decrypted, to the receiver only.
    sent = {name.lower(): value for name, value in receiver.received("/headed")[-1].headers.items()}
    assert sent["authorization"] == f"Bearer {credentials.header_values[3]}"
    assert sent["cookie"] == f"session={credentials.header_values[2]}"
    assert sent["x-api-key"] == credentials.header_values[1]
    assert signed[-1].headers["X-Upstream-Token"] == credentials.header_values[4]
    assert api.get(f"{first_path}/deliveries").status_code == 200
    assert api.get(f"/v1/events/{published.json()['event_id']}").status_code == 200

    # Errors: keys that are wrong, revoked or of someone else; bad input; conflicts; a bug.
    for authorization in (
        f"Bearer {key}x",
        f"Bearer {key[:-1]}",
        f"Token {key}",
        f"Basic {key}",
        f"Bearer {key.upper()}",
        f"Bearer {key.replace('md_test_', 'md_live_')}",
    ):
        error(api.get("/v1/webhook_endpoints", headers={"Authorization": authorization}), 401)
    run("revoke_api_key", ApiKey.objects.get(key_hash=key_hash(doomed)).prefix)
    error(ApiClient(doomed).get("/v1/webhook_endpoints"), 401)
    error(ApiClient(doomed).post("/v1/webhook_endpoints", {"url": "https://example.com"}), 401)
    scoped = factories.api_client(sandbox, scopes=["webhook_endpoints:read"])
    assert scoped.raw_key is not None
    credentials.keys.append(scoped.raw_key)
    error(scoped.post(f"{first_path}/rotate_secret"), 403)
    error(ApiClient(other_org_key).get(first_path), 404)
    error(ApiClient(other_org_key).post(f"{first_path}/rotate_secret"), 404)
    error(api.post(f"{first_path}/rotate_secret", {"overlap_seconds": -1}), 400)
    error(api.post(f"{first_path}/rotate_secret", {"overlap_seconds": "soon"}), 400)
    error(api.post("/v1/webhook_endpoints", {"url": "ftp://example.com"}), 400)
    error(api.post("/v1/webhook_endpoints", {"url": "https://example.com", "secret": 1}), 400)
    error(api.patch(first_path, {"status": "paused"}), 400)
    # A sensitive header refused: its value is not repeated.
    error(api.patch(headed_path, {"headers": {"X-Secret": f"{header_value()}\r\nX: 1"}}), 400)
    error(api.patch(headed_path, {"headers": {"X-Secret": header_value() * 40}}), 400)
    error(api.patch(headed_path, {"headers": {"Host": header_value()}}), 400)
    error(api.post("/v1/webhook_endpoints", raw="{not json"), 400)
    error(api.post("/v1/webhook_endpoints", raw="url=x", content_type="text/plain"), 415)
    error(api.get("/v1/webhook_endpoints?limit=0"), 400)
    error(api.get("/v1/webhook_endpoints", headers={"MD-Version": "1999-01-01"}), 400)
    # The same Idempotency-Key with another request: a conflict, never the stored secret.
    error(
        api.post(
            "/v1/webhook_endpoints",
            {"url": f"{receiver.url}/other"},
            headers={"Idempotency-Key": "leak-create-first"},
        ),
        409,
    )
    error(
        api.post(
            f"{second_path}/rotate_secret",
            {"overlap_seconds": 1},
            headers={"Idempotency-Key": "leak-rotate-first"},
        ),
        409,
    )
    # An unhandled error in a view: a logged traceback, an envelope without it.
    failing = ApiClient(key)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(django_settings, "ROOT_URLCONF", "tests.urls_failing")
        error(failing.get("/v1/failing_drf_view"), 500)


def _database_rows() -> Iterator[tuple[str, Any, str]]:
    """(table, primary key, column=value text) for every column of every row of every model."""
    for model in apps.get_models():
        for row in model._default_manager.all().values():
            for column, value in row.items():
                if isinstance(value, memoryview | bytes):
                    value = bytes(value).decode("utf-8", "replace")
                yield model._meta.db_table, row.get("id"), f"{column}={value}"


@pytest.fixture
def scenario(db, all_logs, receiver, sandbox, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = True  # the receiver is on 127.0.0.1
    credentials = Credentials()
    _scenario(credentials, receiver, sandbox)
    assert len(credentials.keys) == 4
    assert len(credentials.secrets) >= 6
    assert len(credentials.header_values) == 8
    return credentials, all_logs


def _leaks(credentials: Credentials, records: list[logging.LogRecord]) -> list[tuple[str, str]]:
    """(logger, text) of each record that holds a key or secret, in any form it is written."""
    plain = logging.Formatter(PLAIN_FORMAT)
    as_json = JsonFormatter()
    request_ids = RequestIdFilter()
    leaks = []
    for record in records:
        request_ids.filter(record)
        for text in (
            record.getMessage(),
            repr(vars(record)),
            plain.format(record),
            as_json.format(record),
        ):
            if credentials.leaked_in(text):
                leaks.append((record.name, text))
                break
    return leaks


@pytest.mark.parametrize("all_logs", ["debug off"], indirect=True)
def test_no_secret_in_any_log_record(scenario):
    credentials, caplog = scenario
    records = caplog.get_records("setup")  # the scenario runs in the fixture
    # The capture works: requests, the unhandled error and the deliveries were logged.
    loggers = {r.name for r in records}
    assert {"django.request", "api.errors", "urllib3.connectionpool"} <= loggers, loggers
    leaks = _leaks(credentials, records)
    assert not leaks, f"{len(leaks)} records hold a key or secret; first: {leaks[:3]}"


@pytest.mark.parametrize("all_logs", ["debug on"], indirect=True)
def test_no_secret_in_any_log_record_with_sql_logged(scenario):
    credentials, caplog = scenario
    records = caplog.get_records("setup")
    assert any(r.name == "django.db.backends" and "INSERT INTO" in r.getMessage() for r in records)
    # Every statement, the one storing an idempotent create's response included (it is
    # encrypted), and every other record is clean.
    leaks = _leaks(credentials, records)
    assert not leaks, f"{len(leaks)} records hold a key or secret; first: {leaks[:3]}"


def test_no_secret_in_any_error_response(scenario):
    credentials, _ = scenario
    assert len(credentials.error_bodies) >= 20
    for path, body in credentials.error_bodies:
        error = json.loads(body)["error"]
        assert set(error) == {"type", "code", "message", "param", "request_id"}
        assert credentials.leaked_in(body.decode()) == [], (path, body)


def test_secrets_are_stored_only_where_they_belong(scenario):
    credentials, _ = scenario
    found: dict[str, list[tuple[str, Any, str]]] = {}
    for table, pk, text in _database_rows():
        for value in credentials.keys + credentials.secrets + credentials.header_values:
            if any(form in text for form in forms(value)):
                found.setdefault(value, []).append((table, pk, text.split("=", 1)[0]))
    # A raw key is stored nowhere.
    assert not [found[k] for k in credentials.keys if k in found]
    # Nor any secret: where one is kept (signing secrets, the replay store of an idempotent
    # create or rotation), it is encrypted.
    assert not found, {secret[:12]: where for secret, where in found.items()}
    record_table = IdempotencyRecord._meta.db_table
    for secret, record_pk in credentials.replay_store.items():
        body = IdempotencyRecord.objects.get(pk=record_pk).response_body
        assert body is not None
        stored = bytes(body).decode()
        assert secret in encryption.decrypt(stored), record_table


def test_api_keys_are_stored_as_hash_and_short_prefix(scenario):
    credentials, _ = scenario
    for raw in credentials.keys:
        stored = ApiKey.objects.get(key_hash=key_hash(raw))
        assert raw.startswith(stored.prefix)
        assert len(stored.prefix) <= 16 < len(raw)
        assert len(stored.key_hash) == 64 and stored.key_hash != raw
        for column, value in ApiKey.objects.filter(pk=stored.pk).values().get().items():
            assert raw not in str(value), column


def test_signing_secrets_are_encrypted_at_rest(scenario):
    credentials, _ = scenario
    stored = {encryption.decrypt(s.ciphertext): s.ciphertext for s in EndpointSecret.objects.all()}
    assert set(credentials.secrets) <= set(stored)
    for secret in credentials.secrets:
        ciphertext = stored[secret]
        assert not any(form in ciphertext for form in forms(secret))
        assert secret.removeprefix("whsec_") not in ciphertext


def test_sensitive_header_values_are_encrypted_at_rest(scenario):
    credentials, _ = scenario
    stored = [
        encryption.decrypt(value["encrypted"])
        for endpoint in WebhookEndpoint.objects.all()
        for value in endpoint.headers.values()
        if isinstance(value, dict)
    ]
    kept = credentials.header_values[1:5]  # set and not replaced or refused
    assert all(any(value in plain for plain in stored) for value in kept), stored
