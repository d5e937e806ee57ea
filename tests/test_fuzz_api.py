"""Schemathesis against the API's own OpenAPI document (`/v1/openapi.json`).

Every operation of the document is fuzzed through the WSGI application, in positive mode (data
the schema allows) and negative mode (data it forbids), with real keys of two organizations in
both environments. For every request:

- no `5xx`, ever;
- the response conforms to the document: status code documented, content type, headers, body;
- negative data is refused with a `4xx`;
- tenant isolation: a path id of another tenant is `404` (never a success), a cursor of another
  tenant is refused, every id a list or an event returns belongs to the caller's environment,
  nothing another tenant owns changes, and whatever the caller creates is `404` for the others.

Each example runs in a savepoint rolled back afterwards, so every example starts from the same
seed data and the run is reproducible (`derandomize=True`). The number of requests sent is
counted (`REQUESTS`) and printed at the end of the module.
"""

import datetime as dt
import os
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client as WsgiClient

from accounts.models import Environment
from deliveries import transport
from deliveries.models import Delivery, Event
from deliveries.services import event_fan_out, event_publish
from tests import factories
from tests.test_auth import assert_error
from webhooks import url_policy
from webhooks.catalog import EVENT_TYPE_NAMES
from webhooks.models import EndpointSecret, WebhookEndpoint
from webhooks.services import endpoint_create, endpoint_update

SCHEMA_PATH = "/v1/openapi.json"
# Per operation and generation mode; FUZZ_MAX_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Statuses a request with another tenant's id may get before the lookup (bad version, unknown
# query parameter, bad key, body refused, rate limit) or from it (404). Never a success.
FOREIGN_ID_STATUSES = {400, 401, 404, 413, 415, 429}

# operation id -> requests sent, whatever sent them (the fuzzer, its checks, our own probes).
REQUESTS: Counter[str] = Counter()
# (operation id, mode, status) -> examples, to see what the fuzzer reached.
STATUSES: Counter[tuple[str, str, int]] = Counter()


class CountingApp:
    """The project's WSGI application, counting requests per operation under test."""

    def __init__(self) -> None:
        self.app = WSGIHandler()
        self.operation = "schema"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        REQUESTS[self.operation] += 1
        return self.app(environ, start_response)


APP = CountingApp()


@contextmanager
def requests_keep_the_connection() -> Iterator[None]:
    """Like Django's test client: requests must not close the test's connection, whose
    transaction holds the seed data (and rolls everything back at the end)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


# The document is public and built without the database, so it is read once, at collection.
with requests_keep_the_connection():
    SCHEMA = schemathesis.openapi.from_wsgi(SCHEMA_PATH, APP)


def operation_ids(schema: schemathesis.BaseSchema) -> list[str]:
    """Every operation's id; one the document describes wrongly fails the collection."""
    ids = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        ids.append(result.ok().definition.raw["operationId"])
    return sorted(ids)


OPERATION_IDS = operation_ids(SCHEMA)


@pytest.fixture(scope="module", autouse=True)
def report_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    total = sum(n for op, n in REQUESTS.items() if op != "schema")
    if not total:
        return
    lines = [
        f"test_fuzz_api: {total} requests sent to {len(OPERATION_IDS)} operations "
        f"({MAX_EXAMPLES} examples per operation and mode)",
        "  requests: " + ", ".join(f"{op}={n}" for op, n in sorted(REQUESTS.items())),
        "  statuses: " + ", ".join(f"{o}/{m}/{s}={n}" for (o, m, s), n in sorted(STATUSES.items())),
    ]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


@pytest.fixture
def wsgi_requests_in_test_transaction() -> Iterator[None]:
    with requests_keep_the_connection():
        yield


class _ResolvesNothing:
    """The `socket` module as deliveries.transport sees it, with a resolver that finds nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    @staticmethod
    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: not resolved while fuzzing")


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated URLs name random hosts, and a test ping is sent at once: resolve nothing, so
    nothing leaves the machine and every run sees the same answer. A name that does not resolve
    is accepted at registration; a ping to it fails with a recorded connection error."""
    monkeypatch.setattr(url_policy, "resolve", lambda host, port, timeout=0: [])
    monkeypatch.setattr(transport, "socket", _ResolvesNothing())


@dataclass
class Tenant:
    name: str
    environment: Environment
    key: str
    endpoint_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    delivery_ids: list[str] = field(default_factory=list)

    def ids(self, kind: str) -> list[str]:
        return {
            "webhook_endpoint_id": self.endpoint_ids,
            "event_id": self.event_ids,
            "delivery_id": self.delivery_ids,
        }[kind]


def _seed(name: str, environment: Environment) -> Tenant:
    _, key = factories.api_key(environment)
    tenant = Tenant(name, environment, key)
    scheme = "http" if name.endswith("sandbox") else "https"
    for index in range(2):
        created = endpoint_create(
            environment=environment, url=f"{scheme}://{name}-{index}.example.com/hook"
        )
        tenant.endpoint_ids.append(created.endpoint.public_id)
    event = event_publish(environment=environment, type="judgment.created", data={"of": name})
    event_fan_out(event_id=event.pk)
    tenant.event_ids.append(event.public_id)
    tenant.delivery_ids += Delivery.objects.filter(event=event).values_list("public_id", flat=True)
    # The second endpoint is disabled (its deliveries cannot be retried): both states exist.
    endpoint_update(
        endpoint=WebhookEndpoint.objects.get(public_id=tenant.endpoint_ids[1]), status="disabled"
    )
    assert tenant.delivery_ids
    return tenant


@pytest.fixture
def tenants(db, wsgi_requests_in_test_transaction, no_dns) -> list[Tenant]:
    first, second = factories.organization(), factories.organization()
    return [
        _seed(f"{org_name}-{env}", org.environments.get(name=env))
        for org_name, org in (("a", first), ("b", second))
        for env in ("sandbox", "production")
    ]


def _snapshot(environments: list[Environment]) -> dict[str, Any]:
    """Everything of these environments a request of another tenant could change."""
    return {
        "endpoints": sorted(
            WebhookEndpoint.objects.filter(environment__in=environments).values_list(
                "public_id", "url", "status", "enabled_events", "deleted_at"
            )
        ),
        "secrets": sorted(
            EndpointSecret.objects.filter(endpoint__environment__in=environments).values_list(
                "id", "ciphertext", "expires_at"
            )
        ),
        "events": sorted(
            Event.objects.filter(environment__in=environments).values_list("public_id", "body")
        ),
        "deliveries": sorted(
            Delivery.objects.filter(endpoint__environment__in=environments).values_list(
                "public_id", "status", "next_attempt_at"
            ),
            key=repr,
        ),
    }


# Models whose public ids a response lists, by the id field naming them.
ID_FIELDS: dict[str, Callable[[Environment, set[str]], int]] = {
    "webhook_endpoint_id": lambda env, ids: WebhookEndpoint.objects.filter(
        environment=env, public_id__in=ids
    ).count(),
    "event_id": lambda env, ids: Event.objects.filter(environment=env, public_id__in=ids).count(),
    "delivery_id": lambda env, ids: Delivery.objects.filter(
        endpoint__environment=env, public_id__in=ids
    ).count(),
}


def _returned_ids(body: Any) -> dict[str, set[str]]:
    """Every object id anywhere in a response body, by id field."""
    found: dict[str, set[str]] = {name: set() for name in ID_FIELDS}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in found and isinstance(item, str):
                    found[key].add(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body)
    return found


CURSOR_KIND = {
    "webhook_endpoints_list": "webhook_endpoint_id",
    "events_list": "event_id",
    "webhook_endpoint_deliveries_list": "delivery_id",
}


def _seconds_ago(seconds: int, zone_hours: int) -> str:
    zone = dt.timezone(dt.timedelta(hours=zone_hours))
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).astimezone(zone).isoformat()


VALID_BODIES: dict[str, Any] = {
    "webhook_endpoints_create": st.fixed_dictionaries(
        {
            "url": st.from_regex(
                r"\Ahttps://[a-z][a-z0-9-]{0,20}\.example\.(com|org)/[a-z/]{0,20}\Z"
            ),
        },
        optional={"enabled_events": st.lists(st.sampled_from([*EVENT_TYPE_NAMES]), min_size=1)},
    ),
    "webhook_endpoints_update": st.fixed_dictionaries(
        {},
        optional={
            "url": st.from_regex(r"\Ahttps://[a-z][a-z0-9-]{0,20}\.example\.com/[a-z]{0,10}\Z"),
            "enabled_events": st.just(["*"])
            | st.lists(st.sampled_from(EVENT_TYPE_NAMES), min_size=1),
            "status": st.sampled_from(["enabled", "disabled"]),
        },
    ),
    "events_create": st.fixed_dictionaries(
        {"type": st.sampled_from(EVENT_TYPE_NAMES)},
        optional={
            "data": st.dictionaries(
                st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
            )
        },
    ),
    "webhook_endpoints_rotate_secret": st.fixed_dictionaries(
        {}, optional={"overlap_seconds": st.integers(0, 604800)}
    ),
    # A window within the retention period, in any zone.
    "webhook_endpoints_recover": st.fixed_dictionaries(
        {"since": st.builds(_seconds_ago, st.integers(3600, 29 * 86400), st.integers(-12, 14))},
        optional={"until": st.builds(_seconds_ago, st.integers(0, 3000), st.integers(-12, 14))},
    ),
}


SOURCES = ["own", "own", "foreign", "generated"]  # where a path id or cursor comes from


def _choose_ids(case: Any, operation_id: str, caller: Tenant, others: list[Tenant], data: Any):
    """Puts the caller's ids, other tenants' ids or generated ones into the path and cursors.

    Returns the foreign path parameters and whether the cursor is foreign.
    """
    foreign: list[str] = []
    for name in re.findall(r"\{(\w+)\}", case.operation.path):
        if name not in ID_FIELDS:  # an id kind the seed data has none of: as generated
            continue
        source = data.draw(st.sampled_from(SOURCES), label=f"{name} source")
        if source != "generated":
            owner = caller if source == "own" else data.draw(st.sampled_from(others))
            case.path_parameters[name] = data.draw(st.sampled_from(owner.ids(name)), label=name)
            if owner is not caller:
                foreign.append(name)
    foreign_cursor = False
    if operation_id in CURSOR_KIND:
        source = data.draw(st.sampled_from(SOURCES), label="cursor source")
        if source != "generated":
            owner = caller if source == "own" else data.draw(st.sampled_from(others))
            cursor = data.draw(st.sampled_from(owner.ids(CURSOR_KIND[operation_id])))
            direction = data.draw(st.sampled_from(["starting_after", "ending_before"]))
            query = {
                k: v
                for k, v in (case.query or {}).items()
                if k not in ("starting_after", "ending_before")
            }
            case.query = {**query, direction: cursor}
            foreign_cursor = owner is not caller
    return foreign, foreign_cursor


def _check_isolation(
    response: Any,
    caller: Tenant,
    others: list[Tenant],
    foreign: list[str],
    foreign_cursor: bool,
) -> None:
    status = response.status_code
    body = response.json() if response.content else None
    if foreign:
        # Another tenant's object does not exist for the caller: never a success, never an
        # error that could only come from looking at it.
        assert status in FOREIGN_ID_STATUSES, (foreign, status, response.text)
        if status in (400, 404):
            assert body is not None, response.text
            param = body["error"]["param"]
            assert status == 404 or param not in foreign, response.text
    if foreign_cursor:
        assert status >= 400, ("a foreign cursor was accepted", status, response.text)
    if 200 <= status < 300 and isinstance(body, dict):
        for kind, ids in _returned_ids(body).items():
            if ids:
                mine = ID_FIELDS[kind](caller.environment, ids)
                assert mine == len(ids), (f"{kind}s of another tenant returned", ids)
        if status == 201:  # a new endpoint or event: nobody else sees it
            if "webhook_endpoint_id" in body:
                path = f"/v1/webhook_endpoints/{body['webhook_endpoint_id']}"
            else:
                path = f"/v1/events/{body['event_id']}"
            for other in others:
                seen = WsgiClient(APP).get(path, headers={"Authorization": f"Bearer {other.key}"})
                assert seen.status_code == 404, (other.name, path, seen.get_data())


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_fuzz_operation(tenants, operation_id, mode):
    operation = SCHEMA.find_operation_by_id(operation_id)
    APP.operation = operation_id
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS
    examples = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        generated=st.sampled_from(tenants).flatmap(
            # The key is a fixed header, so negative mode never takes it for generated data
            # (a 401 for a key it "broke" would not exercise anything).
            lambda tenant: operation.as_strategy(
                generation_mode=mode, headers={"Authorization": f"Bearer {tenant.key}"}
            ).map(lambda case: (tenant, case))
        ),
        data=st.data(),
    )
    def run(generated: tuple[Tenant, Any], data: Any) -> None:
        nonlocal examples
        examples += 1
        caller, case = generated
        others = [t for t in tenants if t is not caller]
        foreign, foreign_cursor = _choose_ids(case, operation_id, caller, others, data)
        # Generated bodies are mostly refused (random URLs and event types): half the time,
        # send one the service accepts, so the success paths are fuzzed too.
        if (
            mode.is_positive
            and operation_id in VALID_BODIES
            and data.draw(st.booleans(), label="valid body")
        ):
            case.body = data.draw(VALID_BODIES[operation_id], label="body")

        with transaction.atomic():  # a savepoint: every example starts from the seed data
            others_before = _snapshot([t.environment for t in others])
            response = case.call()
            STATUSES[operation_id, str(mode), response.status_code] += 1
            assert response.status_code < 500, response.text
            case.validate_response(response, checks=checks)
            _check_isolation(response, caller, others, foreign, foreign_cursor)
            assert _snapshot([t.environment for t in others]) == others_before, (
                "a request changed another tenant's objects"
            )
            transaction.set_rollback(True)

    run()
    assert examples >= MAX_EXAMPLES


def test_empty_md_version_is_an_unknown_version(tenants):
    response = WsgiClient(APP).get(
        "/v1/webhook_endpoints",
        headers={"Authorization": f"Bearer {tenants[0].key}", "MD-Version": ""},
    )
    assert response.status_code == 400, response.get_data()
    body = response.json
    assert body is not None, response.get_data()
    assert body["error"]["code"] == "invalid_version"
    assert body["error"]["param"] == "MD-Version"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/webhook_endpoints",
        "/v1/events",
        "/v1/webhook_endpoints/{endpoint}/deliveries",
    ],
)
@pytest.mark.parametrize("value", ["\x00", "we_\x00bc", "evt_\x00"], ids=["nul", "we", "evt"])
def test_a_nul_byte_in_a_cursor_is_a_400(api, path, cursor, value):
    endpoint = api.create_endpoint()["webhook_endpoint_id"]
    response = api.get(f"{path.format(endpoint=endpoint)}?{urlencode({cursor: value})}")
    assert_error(response, 400, "parameter_invalid", param=cursor)
